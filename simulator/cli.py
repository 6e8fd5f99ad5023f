"""The `otasim` command.

Each subcommand group lives in `simulator.commands.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func` (args -> exit code).
Modules import their heavy dependencies inside the handlers so that `otasim --help`
stays fast, and works with no extra installed: a command that needs one of pyproject's extras
sets `extra` in its parser defaults, and runs only when that extra's modules are there.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from simulator.errors import CommandError

COMMAND_MODULES: tuple[str, ...] = (
    "serve",
    "publish",
    "admin",
    "device",
    "keys",
    "bundle",
    "run",
    "loadtest",
    "check",
)

# The modules each extra of pyproject.toml brings (tests/test_packaging.py keeps them in step).
_SERVER = ("starlette", "uvicorn", "httptools")
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": _SERVER,
    "sim": (*_SERVER, "aiohttp", "matplotlib", "rich"),
    "loadtest": (*_SERVER, "locust", "gevent", "geventhttpclient"),
    "check": (*_SERVER, "aiohttp", "matplotlib", "rich", "hypothesis"),
}


def check_extra(command: str, extra: str) -> None:
    """Raise a one-line `CommandError` naming the extra when its modules are not installed.

    Looks the modules up without importing them (importing locust would patch this process).
    """
    missing = [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]
    if missing:
        raise CommandError(
            f"otasim {command} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install 'otasim[{extra}]'"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otasim",
        description=(
            "Capacitor live-update (Capgo) device agent, fleet simulator, reference "
            "OTA server and Locust load tests."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"simulator.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "extra", None):
            check_extra(args.command, args.extra)
        code: int = args.func(args)
    except CommandError as exc:
        print(f"otasim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("otasim: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
