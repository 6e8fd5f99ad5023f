"""How a check's helpers end it early: skipped (what it needs is missing) or failed."""

from __future__ import annotations


class Skip(Exception):
    """Raised by a check or a context helper: the check cannot run; the message says why."""


class CheckFailed(Exception):
    """Raised by a check's helper: the check fails; the message says what was found."""
