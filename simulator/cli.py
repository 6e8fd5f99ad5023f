"""The `otasim` command.

Each subcommand group lives in `simulator.commands.<name>` and exposes
`register(subparsers)`, which adds its parser and sets `func` (args -> exit code).
Modules import their heavy dependencies inside the handlers so that `otasim --help`
stays fast, and works with no extra installed: a command that needs one of pyproject's extras
sets `extra` in its parser defaults, and runs only when that extra's modules are there.

Every error reaches the user as one last line `otasim: error: ...` (after argparse's usage
line for a usage error), never as a traceback.
"""

from __future__ import annotations

import _thread
import argparse
import asyncio
import importlib
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from types import FrameType
from typing import NoReturn

from simulator.commands import HelpFormatter, exit_codes
from simulator.errors import CommandError

COMMAND_MODULES: tuple[str, ...] = (
    "serve",
    "publish",
    "resign",
    "admin",
    "device",
    "keys",
    "bundle",
    "run",
    "compare",
    "loadtest",
    "check",
    "prove",
)

# The modules each extra of pyproject.toml brings (tests/test_packaging.py keeps them in step).
_SERVER = ("starlette", "uvicorn", "httptools")
EXTRAS: dict[str, tuple[str, ...]] = {
    "server": _SERVER,
    "sim": (*_SERVER, "aiohttp", "matplotlib", "rich"),
    "loadtest": (*_SERVER, "locust", "gevent", "geventhttpclient"),
    "check": (*_SERVER, "aiohttp", "matplotlib", "rich", "hypothesis"),
    "prove": (*_SERVER, "hypothesis"),
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


class Parser(argparse.ArgumentParser):
    """argparse's parser with the one error line of every otasim error: `otasim: error: `,
    then the subcommand (`run: argument --devices: ...`)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        command = self.prog.removeprefix("otasim").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"otasim: error: {where}{message}\n")


def _version() -> str:
    try:
        return package_version("otasim")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="otasim",
        description=(
            "Capacitor live-update (Capgo) device agent, fleet simulator, reference "
            "OTA server and Locust load tests."
        ),
        epilog=exit_codes(
            (2, "usage error, for every command (`otasim COMMAND --help` lists its other codes)"),
            (3, "the server unreachable or refusing the call, for every command that talks to one"),
            (130, "interrupted (Ctrl-C, SIGINT)"),
            (143, "terminated (SIGTERM)"),
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"simulator.commands.{name}").register(sub)
    return parser


_TERMINATED = threading.Event()


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds the command as Ctrl-C does, so that every `with` and `finally` on the
    way out runs (a run's temporary folder and embedded server go with them): outside an
    event loop it raises KeyboardInterrupt where the program is; inside one it cancels the
    loop's tasks, which unwind in turn (an exception raised in a task would escape it)."""
    _TERMINATED.set()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise KeyboardInterrupt from None
    for task in asyncio.all_tasks(loop):
        task.cancel()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds it like Ctrl-C, and neither is lost where
    Python can only print an exception (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _TERMINATED.clear()
    previous, previous_hook = signal.signal(signal.SIGTERM, _terminate), sys.unraisablehook

    def redeliver(unraisable: sys.UnraisableHookArgs) -> None:
        # Raised in a gc callback (hypothesis has one), a `__del__` or a weakref callback,
        # the interruption would be printed and forgotten: its signal trips anew a moment
        # later (from another thread: tripped here, it would raise here again), and the
        # handler raises at the next point where an exception can unwind the command.
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            sig = signal.SIGTERM if _TERMINATED.is_set() else signal.SIGINT
            again = threading.Timer(0.01, _thread.interrupt_main, (sig,))
            again.daemon = True
            again.start()
        else:
            previous_hook(unraisable)

    sys.unraisablehook = redeliver
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        with _sigterm_unwinds():
            code = _run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our output went away (`otasim admin ... | head`): as CPython's docs on
        # SIGPIPE advise, point stdout at devnull so that the flush at exit does not fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "extra", None):
            check_extra(args.command, args.extra)
        code: int = args.func(args)
    except CommandError as exc:
        print(f"otasim: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except asyncio.CancelledError:  # a run's event loop, cancelled by SIGTERM
        if not _TERMINATED.is_set():
            raise
        return _stopped()
    except KeyboardInterrupt:
        return _stopped()
    return code


def _stopped() -> int:
    """Exit code and line of a command stopped by SIGTERM (143) or Ctrl-C (130)."""
    if _TERMINATED.is_set():
        print("otasim: terminated (SIGTERM); what it started is cleaned up", file=sys.stderr)
        return 143
    print("otasim: interrupted; what it started is cleaned up", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
