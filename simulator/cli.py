"""The `otasim` command.

Each subcommand group lives in `simulator.commands.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func` (args -> exit code).
Modules import their heavy dependencies inside the handlers so that `otasim --help`
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
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
