"""The reference server under hostile clients (issue 16, item 8): slow requests, more sockets
than descriptors, log floods, a forged Host header, its database's file modes."""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulator.server.client import AdminClient
from simulator.server.db import DB_NAME
from simulator.server.embedded import RunningServer, _in_thread
from simulator.server.guard import BUSY, RateLimitedLog
from simulator.server.state import ServerConfig

from .conftest import add_bundle, device


def _address(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    assert parsed.host and parsed.port
    return parsed.host, parsed.port


@contextlib.contextmanager
def _sockets(url: str, count: int, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    opened = []
    try:
        for _ in range(count):
            sock = socket.create_connection(_address(url), timeout=5)
            sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes or resets the connection (the socket
    timeout, 5 s, fails the test if it hangs)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            received += chunk
    return received


def _refused_or_busy(url: str) -> bool:
    """A request while the server is full: a 503 or a closed connection, never a wait."""
    try:
        return httpx.get(f"{url}/ok", timeout=5).status_code == 503
    except httpx.TimeoutException:
        return False
    except httpx.TransportError:
        return True


def test_slow_request_heads_and_bodies_are_timed_out_and_connections_capped(
    tmp_path: Path,
) -> None:
    config = ServerConfig(
        data_dir=tmp_path, head_timeout_s=2.0, body_timeout_s=2.0, max_connections=20
    )
    with _in_thread(config, "127.0.0.1", 0) as (url, _):
        with _sockets(url, 30, b"GET /ok HTTP/1.1\r\nHost: x\r\n") as slow:  # never finished
            assert _refused_or_busy(url)  # full: refused at once
            answers = [_until_closed(sock) for sock in slow]  # each ends: 503 or timed out
        assert all(answer in (b"", BUSY) for answer in answers)
        half_body = b"POST /updates HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        with _sockets(url, 1, half_body) as half:
            assert b"200 OK" not in _until_closed(half[0])  # half a body: closed
        assert httpx.get(f"{url}/ok", timeout=5).status_code == 200  # the server is still fine


def test_more_sockets_than_descriptors_keep_the_server_answering_and_stderr_quiet(
    tmp_path: Path,
) -> None:
    """The audit's case, scaled down: 700 stuck sockets against a 512-descriptor limit."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    cmd = [sys.executable, "-m", "simulator.cli", "serve", "--port", "0", "--data", str(tmp_path)]
    with open(tmp_path / "stderr", "wb") as errors:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=errors, text=True, preexec_fn=low_limit
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split()[-1]
            with _sockets(url, 700, b"GET /ok HTTP/1.1\r\nHost: x\r\n"):
                time.sleep(1.0)  # let the accept loop churn
                answer = httpx.get(f"{url}/ok", timeout=5)  # answered, never left hanging
                assert answer.status_code in (200, 503)
            assert httpx.get(f"{url}/ok", timeout=5).status_code == 200
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    assert (tmp_path / "stderr").stat().st_size < 20_000


def test_a_repeated_log_message_is_rate_limited() -> None:
    now = [0.0]
    limiter = RateLimitedLog(burst=5, window_s=60.0, clock=lambda: now[0])
    logger = logging.getLogger("test.flood")

    def record(msg: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.ERROR, __file__, 1, msg, None, None)

    passed = [limiter.filter(record("accept failed")) for _ in range(1000)]
    assert passed.count(True) == 5 and limiter.filter(record("another message"))
    now[0] = 61.0
    first = record("accept failed")
    assert limiter.filter(first) and "[995 similar messages suppressed]" in first.getMessage()


@pytest.mark.parametrize("host", ["a@evil.example/x?", "evil.example/files#", "x y", ""])
def test_a_forged_host_header_never_shapes_download_urls(
    server: RunningServer, admin: AdminClient, app_id: str, tmp_path: Path, host: str
) -> None:
    add_bundle(admin, app_id, "1.0.1", tmp_path)
    admin.set_channel(app_id, "production", version="1.0.1", public=True)
    answer = httpx.post(f"{server.url}/updates", json=device(app_id), headers={"Host": host})
    assert answer.json()["url"].startswith(f"{server.url}/files/")
    fine = httpx.post(
        f"{server.url}/updates", json=device(app_id), headers={"Host": "ota.test:8080"}
    )
    assert fine.json()["url"].startswith("http://ota.test:8080/files/")


def test_database_files_are_the_owners_only(server: RunningServer) -> None:
    files = [server.data_dir / (DB_NAME + suffix) for suffix in ("", "-wal", "-shm")]
    assert all(path.exists() for path in files)
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o600}
