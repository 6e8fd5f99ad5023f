"""The geventhttpclient backend: only in gevent-patched processes, tested in one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.drivers.backends import make_sync_port

HERE = Path(__file__).parent
RUN_PATCHED = """
from gevent import monkey
monkey.patch_all()
import sys, pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1]]))
"""


def test_refused_in_an_unpatched_process() -> None:
    with pytest.raises(RuntimeError, match="gevent-patched"):
        make_sync_port("geventhttpclient")


def test_sync_port_suite_passes_under_gevent() -> None:
    env = {**os.environ, "OTASIM_HTTP_UNDER_GEVENT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_PATCHED, str(HERE / "test_sync_port.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
