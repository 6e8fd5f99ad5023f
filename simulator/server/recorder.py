"""Write-behind for the hot path: device rows and per-version action counters are buffered
in memory and written in one transaction per flush (every half second, before any read of
them: admin stats, an auto-pause check; and at shutdown)."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable

from simulator.server.db import transaction
from simulator.server.validation import DeviceInfo

_UPSERT_DEVICE = """
INSERT INTO devices (app_id, device_id, platform, version_name, version_build, plugin_version,
                     is_prod, is_emulator, custom_id, default_channel, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (app_id, device_id) DO UPDATE SET
    platform = excluded.platform, version_name = excluded.version_name,
    version_build = excluded.version_build, plugin_version = excluded.plugin_version,
    is_prod = excluded.is_prod, is_emulator = excluded.is_emulator,
    custom_id = COALESCE(excluded.custom_id, devices.custom_id),
    default_channel = excluded.default_channel, updated_at = excluded.updated_at
"""
_ADD_COUNT = """
INSERT INTO version_stats (app_id, version_name, bucket, action, count) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (app_id, version_name, bucket, action) DO UPDATE SET count = count + excluded.count
"""


class Recorder:
    """Buffers device sightings and stats counts; `flush()` writes them."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        self._devices: dict[tuple[str, str], tuple[object, ...]] = {}
        self._counts: Counter[tuple[str, str, int, str]] = Counter()

    def device_seen(self, info: DeviceInfo, version_name: str, keep_custom_id: bool) -> None:
        """Remember the device's latest state (the running `version_name`)."""
        self._devices[(info.app_id, info.device_id)] = (
            info.app_id,
            info.device_id,
            info.platform,
            version_name,
            info.version_build,
            info.plugin_version,
            int(info.is_prod),
            int(info.is_emulator),
            info.custom_id if keep_custom_id else None,
            info.default_channel,
            self._clock(),
        )

    def count(self, app_id: str, version: str, action: str, at_s: float | None = None) -> None:
        """Add one `action` for `version`, bucketed by minute (`at_s` or now)."""
        bucket = int((at_s if at_s is not None else self._clock()) // 60)
        self._counts[(app_id, version, bucket, action)] += 1

    def flush(self) -> None:
        """Write everything buffered in one transaction; on failure keep it for the next try.

        Raises:
            sqlite3.Error: the write failed (nothing is lost from the buffer).
        """
        if not self._devices and not self._counts:
            return
        devices, counts = self._devices, self._counts
        self._devices, self._counts = {}, Counter()
        try:
            with transaction(self._conn) as conn:
                conn.executemany(_UPSERT_DEVICE, list(devices.values()))
                conn.executemany(_ADD_COUNT, [(*key, n) for key, n in counts.items()])
        except sqlite3.Error:
            self._devices = devices | self._devices
            self._counts = counts + self._counts
            raise
