"""What keeps the reference server up under hostile clients: slow requests, too many sockets,
log floods.

uvicorn times out idle keep-alive connections only after a first response, and any byte of a
request cancels that timer, so a client trickling a request head (slowloris) holds its socket
forever, and enough of them exhaust the process's file descriptors. `guarded_protocol` wraps
uvicorn's httptools protocol with:

- a **head deadline**: a request head must be complete within `head_timeout_s` of the
  connection or of its first byte, and its body within `body_timeout_s` of the head; else
  the connection is closed;
- a **connection limit** checked as each connection is accepted: over `max_connections`, the
  client gets an immediate `503` and the socket is closed (uvicorn's own `limit_concurrency`
  answers only once a request head has arrived). asyncio accepts up to its `backlog` sockets
  in one go before any of them is closed, so the server runs with `ACCEPT_BURST` as backlog
  and keeps `RESERVED_FDS` > `ACCEPT_BURST` descriptors out of the budget: descriptors never
  run out. (When they do, Python 3.11's accept loop logs and reschedules itself once per
  remaining backlog slot: the audit's flood of "Too many open files" tracebacks.)

`RateLimitedLog` keeps one repeated log message (a traceback per refused socket, say) from
flooding stderr: a few per minute, then one line counting what was dropped.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ACCEPT_BURST: Final = 128
"""asyncio's `backlog`: sockets accepted per loop iteration (and the listen queue)."""
RESERVED_FDS: Final = 2 * ACCEPT_BURST
"""Descriptors kept out of the connection budget: one accept burst not yet closed, the
database, bundle files, the listening socket."""
BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"content-length: 29\r\nconnection: close\r\n\r\n"
    b'{"error":"too_many_requests"}'
)


def connection_budget() -> int:
    """How many connections this process can hold: its descriptor limit (the soft limit is
    first raised to the hard one, as servers do) minus `RESERVED_FDS`, at least 16."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(16, soft - RESERVED_FDS)


@dataclass(frozen=True)
class ConnectionLimits:
    head_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    max_connections: int = 1000


class _GuardedProtocol(HttpToolsProtocol):
    """One timer per connection, not one per request phase: `_arm` moves the deadline and
    starts a timer only when none is due by then; the timer, when it fires, closes the
    connection past the deadline, waits for a later one, or ends when there is none (idle
    keep-alive connections are uvicorn's to time out)."""

    limits: ConnectionLimits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        if self._timer is None or self._timer.when() > self._deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(self._deadline, self._expire)

    def _disarm(self) -> None:
        self._deadline = None

    def _expire(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._expire)
            return
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            transport.write(BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm(self.limits.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:  # None: refused in connection_made
            super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.limits.head_timeout_s)

    def on_headers_complete(self) -> None:
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with `limits` (pass it as `uvicorn.Config(http=...)`)."""
    return type("GuardedHttpToolsProtocol", (_GuardedProtocol,), {"limits": limits})


class RateLimitedLog(logging.Filter):
    """Lets through at most `burst` records of one message (logger and format string) per
    `window_s`; the first record after a window that dropped some says how many. Messages
    are told apart by logger and the first `KEY_CHARS` of their text (asyncio formats each
    callback's repr into the message)."""

    MAX_KEYS: Final = 1024
    KEY_CHARS: Final = 48

    def __init__(
        self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._burst, self._window, self._clock = burst, window_s, clock
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}  # start, passed, dropped

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[: self.KEY_CHARS])
        now = self._clock()
        start, passed, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self._window:
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar messages suppressed]"
            start, passed, dropped = now, 0, 0
        if passed >= self._burst:
            self._seen[key] = (start, passed, dropped + 1)
            return False
        if len(self._seen) >= self.MAX_KEYS and key not in self._seen:
            self._seen.clear()
        self._seen[key] = (start, passed + 1, dropped)
        return True


LIMITED_LOGGERS: Final = ("asyncio", "uvicorn", "uvicorn.error", "simulator.server.app")


def limit_logs(log_filter: logging.Filter | None = None) -> logging.Filter:
    """Install one `RateLimitedLog` on the loggers a hostile client can make speak."""
    log_filter = log_filter or RateLimitedLog()
    for name in LIMITED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitedLog) for f in logger.filters):
            logger.addFilter(log_filter)
    return log_filter
