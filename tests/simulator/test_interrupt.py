"""A run stopped by a real SIGTERM or SIGINT (the installed `otasim`, its own process) cleans
up what it started: its temporary folder (in /dev/shm), the embedded server's process and
the report folder it had made, still empty; one line says so, with no traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

OTASIM = str(Path(sys.executable).with_name("otasim"))


def run_folders(pid: int) -> list[Path]:
    """The temporary folders of the run in process `pid` (named after it)."""
    return [
        path
        for where in ("/dev/shm", tempfile.gettempdir())
        for path in Path(where).glob(f"otasim-run-{pid}-*")
    ]


def processes_naming(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_leaves_nothing_behind(tmp_path: Path, sig: int, code: int) -> None:
    report = tmp_path / "out" / "report"
    with subprocess.Popen(
        [OTASIM, "run", "--devices", "60", "--no-progress", "--report", str(report)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT: give the run Ctrl-C as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        deadline = time.monotonic() + 60
        while not any((f / "devices").is_dir() for f in run_folders(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, "the fleet never started"
            time.sleep(0.1)
        (folder,) = run_folders(proc.pid)
        assert processes_naming(folder.name), "the embedded server runs in the run's folder"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and out == ""
    assert err.splitlines()[-1].endswith("what it started is cleaned up"), err
    assert run_folders(proc.pid) == [] and not folder.exists()
    assert processes_naming(folder.name) == []
    assert not (tmp_path / "out").exists()  # the report folder and its parent, made by the run


SWALLOWED = """
import gc, os, signal, sys, time
from simulator import cli

def in_gc(phase, info):  # hypothesis keeps such a callback; Python prints what it raises
    if phase == "start" and not sent:
        sent.append(os.getpid())
        os.kill(os.getpid(), int(sys.argv[1]))
        sum(range(1000))  # the handler runs here, in the callback

sent = []
# as in a terminal: a job started in the background by a shell inherits SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
with cli._sigterm_unwinds():
    gc.callbacks.append(in_gc)
    try:
        gc.collect()
        for _ in range(200):
            time.sleep(0.05)
        print("carried on")
    except KeyboardInterrupt:
        print("stopped", cli._TERMINATED.is_set())
    gc.callbacks.remove(in_gc)
"""


@pytest.mark.parametrize(("sig", "sigterm"), [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_a_signal_that_lands_where_python_swallows_exceptions_still_stops(
    sig: int, sigterm: bool
) -> None:
    # The failure seen: SIGTERM landed in hypothesis's gc callback during `otasim prove`, the
    # KeyboardInterrupt was printed as "Exception ignored", and the proof ran on.
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWED, str(int(sig))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == f"stopped {sigterm}\n", done.stderr
    assert "Exception ignored" not in done.stderr
