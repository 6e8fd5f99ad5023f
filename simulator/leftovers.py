"""Folders named after the process that made them (`PREFIX-PID-*`), and the sweep of those
whose process no longer runs: a process killed outright (SIGKILL, OOM) cannot remove its own.
Used by `otasim run` (`otasim-run-PID-*`) and the Locust processes (`otasim-locust-PID-*`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
