"""Process-wide server state: configuration, the database, caches and buffers."""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from simulator.server.blobs import BlobStore
from simulator.server.catalog import Catalog
from simulator.server.db import connect
from simulator.server.recorder import Recorder


@dataclass(frozen=True)
class ServerConfig:
    """How one server instance runs.

    `public_url` fixes the base of download URLs (default: from each request's Host);
    `enumeration_misses` unknown-app checks per client IP within `enumeration_window_s`
    trip Capgo's enumeration guard (short 429 for every app until the window passes).
    Capgo uses 5; the default 0 turns the guard off, because a simulated fleet shares one
    loopback address and one misconfigured device would otherwise block the whole fleet.
    A request head must arrive within `head_timeout_s` and its body within `body_timeout_s`;
    idle keep-alive connections close after `keep_alive_s`; beyond `max_connections` (None:
    what the descriptor limit allows) a connection gets an immediate 503.
    """

    data_dir: Path
    public_url: str | None = None
    max_upload_bytes: int = 256 << 20
    enumeration_misses: int = 0
    enumeration_window_s: float = 900.0
    flush_interval_s: float = 0.5
    head_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    keep_alive_s: int = 20  # above clients' idle timeouts (aiohttp: 15 s): they close first
    max_connections: int | None = None


class EnumerationGuard:
    """Capgo's per-IP guard against probing for app ids (`updateOracleGuard.ts`)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self._limit, self._window = limit, window_s
        self._misses: defaultdict[str, deque[float]] = defaultdict(deque)

    def _recent(self, ip: str, now: float) -> deque[float]:
        misses = self._misses[ip]
        while misses and misses[0] <= now - self._window:
            misses.popleft()
        return misses

    def limited(self, ip: str) -> bool:
        return self._limit > 0 and len(self._recent(ip, time.monotonic())) >= self._limit

    def miss(self, ip: str) -> bool:
        """Record an unknown-app check; True when this IP is now limited."""
        now = time.monotonic()
        if self._limit <= 0:
            return False
        misses = self._recent(ip, now)
        misses.append(now)
        return len(misses) > self._limit


class ServerState:
    """Everything a request handler needs, on `request.app.state.server`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.conn: sqlite3.Connection = connect(config.data_dir)
        self.catalog = Catalog(self.conn)
        self.recorder = Recorder(self.conn)
        self.blobs = BlobStore(config.data_dir / "files")
        self.guard = EnumerationGuard(config.enumeration_misses, config.enumeration_window_s)

    def changed(self) -> None:
        """Call after any admin write: drop the cached read model."""
        self.catalog.invalidate()

    def close(self) -> None:
        self.recorder.flush()
        self.conn.close()
