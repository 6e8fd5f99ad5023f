"""Start the reference server in the background for tests, the simulator and benchmarks.

`in_process=True` runs uvicorn in a thread of this process (cheap, shares the GIL);
`in_process=False` runs `otasim serve` in a subprocess so a load generator or a fleet in
this process does not compete with the server for the GIL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from simulator.leftovers import remove_dead, stop
from simulator.server.auth import bootstrap_admin_key
from simulator.server.db import connect
from simulator.server.runner import bind, make_server, url_of
from simulator.server.state import ServerConfig

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
URL_PREFIX = "otasim server: "


@dataclass
class RunningServer:
    """A server started by `run_server`: device endpoints at `{url}/updates`, `{url}/stats`,
    `{url}/channel_self`; the admin API at `{url}/api/` with `admin_key` (role `all`)."""

    url: str
    admin_key: str
    data_dir: Path
    pid: int = 0  # the serving process (this one when in_process)


@contextmanager
def run_server(
    data_dir: Path | None = None,
    *,
    in_process: bool = True,
    host: str = "127.0.0.1",
    port: int = 0,
    enumeration_limit: int = 0,
) -> Iterator[RunningServer]:
    """Run a server until the `with` block ends; a temporary data folder when none is given.

    A fresh admin key (role `all`) is created for each run. `enumeration_limit` turns on
    Capgo's unknown-app guard (see `ServerConfig.enumeration_misses`).

    Raises:
        RuntimeError: the server did not start within 30 s.
        OSError: the address is not available.
    """
    folder_of_run: AbstractContextManager[str] = nullcontext(str(data_dir))
    if data_dir is None:  # named after this process: a killed one's is swept by the next
        remove_dead(Path(tempfile.gettempdir()), "otasim-server")
        folder_of_run = tempfile.TemporaryDirectory(prefix=f"otasim-server-{os.getpid()}-")
    with folder_of_run as where:
        folder = Path(where)
        conn = connect(folder)
        try:
            admin_key = bootstrap_admin_key(conn, always=True)
        finally:
            conn.close()
        assert admin_key is not None
        config = ServerConfig(data_dir=folder, enumeration_misses=enumeration_limit)
        runner = _in_thread if in_process else _in_subprocess
        with runner(config, host, port) as (url, pid):
            yield RunningServer(url=url, admin_key=admin_key, data_dir=folder, pid=pid)


@contextmanager
def _in_thread(config: ServerConfig, host: str, port: int) -> Iterator[tuple[str, int]]:
    sock = bind(host, port)
    server = make_server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="otasim-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded server did not start")
            time.sleep(0.01)
        yield url_of(sock), os.getpid()
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        sock.close()


@contextmanager
def _in_subprocess(config: ServerConfig, host: str, port: int) -> Iterator[tuple[str, int]]:
    cmd = [sys.executable, "-m", "simulator.cli", "serve", "--host", host, "--port", str(port)]
    cmd += ["--data", str(config.data_dir), "--enumeration-limit", str(config.enumeration_misses)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        try:
            yield _read_url(proc, errors), proc.pid
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    try:
        stop(proc, STOP_TIMEOUT_S)
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def _read_url(proc: subprocess.Popen[str], errors: IO[str]) -> str:
    """The URL `otasim serve` prints first ("otasim server: <url>"), once it is listening."""
    result: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    line = result[0].strip() if result else ""
    if not line.startswith(URL_PREFIX):
        errors.seek(0)
        raise RuntimeError(f"the server subprocess did not start: {line or errors.read().strip()}")
    return line.removeprefix(URL_PREFIX).split()[0]
