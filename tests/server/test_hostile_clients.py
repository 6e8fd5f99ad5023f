"""The reference server under hostile clients (issue 16, item 8): slow requests, more sockets
than descriptors, log floods, a forged Host header, its database's file modes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.server.client import AdminClient
from simulator.server.db import DB_NAME
from simulator.server.embedded import RunningServer, _in_thread
from simulator.server.guard import BUSY, ConnectionLimits, RateLimitedLog, guarded_protocol
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


class _Clock:
    """Enough of an event loop for the guard's timers: time, call_at, call_later."""

    def __init__(self) -> None:
        self.now = 0.0
        self.scheduled: list[asyncio.TimerHandle] = []

    def time(self) -> float:
        return self.now

    def get_debug(self) -> bool:
        return False

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        self.scheduled.remove(handle)

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), self)  # type: ignore[arg-type]
        self.scheduled.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return self.call_at(self.now + delay, callback)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while due := sorted(
            (h for h in self.scheduled if not h.cancelled() and h.when() <= end),
            key=lambda h: h.when(),
        ):
            self.scheduled.remove(due[0])
            self.now = due[0].when()
            due[0]._run()
        self.now = end


class _Transport:
    closed = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _guarded(clock: _Clock) -> Any:
    limits = ConnectionLimits(head_timeout_s=10.0, body_timeout_s=120.0)
    protocol = object.__new__(guarded_protocol(limits))
    protocol.loop, protocol.transport = clock, _Transport()
    protocol._deadline, protocol._timer = None, None
    return protocol


def test_the_slow_client_guard_keeps_one_timer_per_connection() -> None:
    clock = _Clock()
    protocol = _guarded(clock)
    protocol._arm(10.0)  # connection made
    for _ in range(200):  # keep-alive requests: head begun, head complete, answered
        protocol._arm(10.0)
        protocol._arm(120.0)
        protocol._disarm()
        clock.advance(0.01)
    assert len(clock.scheduled) == 1
    clock.advance(60)  # idle: uvicorn's keep-alive timeout, not the guard
    assert not protocol.transport.closed and not clock.scheduled


def test_the_slow_client_guard_closes_at_each_phases_deadline() -> None:
    clock = _Clock()
    protocol = _guarded(clock)
    protocol._arm(10.0)
    protocol._arm(120.0)  # head complete: the timer due at 10 s waits on for the body
    clock.advance(100)
    assert not protocol.transport.closed
    protocol._disarm()
    protocol._arm(10.0)  # a second request's head, due before the body timer: its own timer
    clock.advance(9.9)
    assert not protocol.transport.closed
    clock.advance(0.2)
    assert protocol.transport.closed
