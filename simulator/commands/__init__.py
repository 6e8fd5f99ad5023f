"""One module per `otasim` subcommand group; each exposes register(subparsers).

Also the argument types the commands share: each turns bad text into an
`argparse.ArgumentTypeError` whose message names the problem in plain words (argparse would
otherwise print the function's name, e.g. `invalid _positive_int value`).
"""

from __future__ import annotations

import argparse
import re
import textwrap


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an `exit codes:` block keeps its rows as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit codes:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


# The exit codes every command shares: 2 a usage error, 3 a server unreachable or refusing
# (1 is an expectation, check or target missed, where a command has one).
EXIT_USAGE, EXIT_SERVER = 2, 3
SERVER_ROW = (
    EXIT_SERVER,
    "the server unreachable, or refusing the call (e.g. 404, 409); the message says which",
)


def exit_codes(*rows: tuple[int, str]) -> str:
    """The `exit codes:` block every command's --help ends with (2 is always a usage error,
    3 a server unreachable or refusing, 1 an expectation, check or target missed): one row
    per code, its text wrapped under it."""
    lines = ["exit codes:"]
    for code, text in rows:
        first, *rest = textwrap.wrap(text, 80)
        lines += [f"  {code}  {first}", *(f"     {line}" for line in rest)]
    return "\n".join(lines)


def _number(text: str, kind: type[int] | type[float], what: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    value = int(_number(text, int, "a whole number"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = float(_number(text, float, "a number"))
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def percent(text: str) -> float:
    """A number from 0 to 100."""
    value = float(_number(text, float, "a number"))
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    value = int(_number(text, int, "a port number"))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {value}")
    return value


def version(text: str) -> str:
    """A version in otasim's one version order (`agent.core.versions`), kept as typed."""
    from agent.core.versions import parse

    if parse(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version (semver, e.g. 1.0.0)")
    return text


def app_id(text: str) -> str:
    """A Capgo app id (reverse-domain), as the reference server and Capgo servers key apps."""
    from agent.config import valid_app_id

    if not valid_app_id(text, "capgo"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an app id (e.g. com.example.app)")
    return text


_TIMESPAN = re.compile(r"\d+|(?=\d)(\d+h)?(\d+m)?(\d+s)?")


def timespan(text: str) -> str:
    """A Locust run time (`30`, `30s`, `5m`, `1h30m`), checked here so that a bad one fails
    before anything starts; kept as typed for Locust."""
    if not _TIMESPAN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 5m, 1h30m")
    return text
