"""Errors the `otasim` command reports as one line with a non-zero exit."""

from __future__ import annotations


class CommandError(Exception):
    """A user-facing failure: printed as `otasim: error: <message>`, exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunError(Exception):
    """The run cannot start as asked (workdir in use, unreadable key file...)."""
