"""`simulator.leftovers.stop`: a child a command started is stopped and reaped, whatever lands
in the wait."""

from __future__ import annotations

import _thread
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.leftovers import stop

# A child that ignores SIGTERM, as a busy or stuck server may; it prints once it is set up.
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(1, flush=True); time.sleep(60)"
)


def _stubborn() -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "1\n"
    child.stdout.close()
    return child


def test_a_child_that_ignores_sigterm_is_killed_and_reaped() -> None:
    child = _stubborn()
    stop(child, 0.2)
    assert child.returncode == -9 and not Path(f"/proc/{child.pid}").exists()


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal: pytest started in the background by a
    shell inherits SIGINT ignored, and `interrupt_main` then does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_raises")
def test_an_interruption_in_the_wait_still_kills_and_reaps_the_child() -> None:
    child = _stubborn()
    threading.Timer(0.2, _thread.interrupt_main).start()  # Ctrl-C while stop() waits
    with pytest.raises(KeyboardInterrupt):
        stop(child, 30)
    assert child.returncode == -9 and not Path(f"/proc/{child.pid}").exists()
