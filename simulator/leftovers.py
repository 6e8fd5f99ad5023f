"""What a command must not leave behind. Folders named after the process that made them
(`PREFIX-PID-*`), and the sweep of those whose process no longer runs: a process killed
outright (SIGKILL, OOM) cannot remove its own; used by `otasim run` (`otasim-run-PID-*`) and
the Locust processes (`otasim-locust-PID-*`). And `stop`, for the child processes a command
starts (the embedded server, mitmdump)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any


def stop(process: subprocess.Popen[Any], timeout_s: float) -> None:
    """Stop a child: SIGTERM, then SIGKILL after `timeout_s`; always reaped, also when an
    interruption (Ctrl-C, or a SIGTERM of our own unwinding the command) lands in the wait."""
    try:
        process.terminate()
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def remove_dead(where: Path, prefix: str) -> list[Path]:
    """Remove the `prefix-PID-*` folders under `where` whose PID no longer runs; return them.
    A live process's folder (or another user's) is kept, and so is any other name."""
    removed = []
    for old in where.glob(f"{prefix}-*-*"):
        pid = old.name[len(prefix) + 1 :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: alive
    return True
