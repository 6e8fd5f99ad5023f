"""What drivers expose besides the device itself: clocks, the observer hooks, the status view."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.errors import AgentError


class Clock(Protocol):
    """Time for the asyncio driver: `now()` in epoch seconds, `sleep(s)` awaitable.

    The simulator passes a time-scaled clock; network timeouts stay real.
    """

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SyncClock(Protocol):
    """Time for the blocking driver (under gevent, `time.sleep` is cooperative)."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SystemSyncClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AgentObserver:
    """Hooks a driver calls as things happen; every method is a no-op unless overridden.

    `on_request` is called once per HTTP attempt; `name` is stable: "/updates", "/stats",
    "/channel_self", "bundle" (a full-zip download), "delta file".
    """

    __slots__ = ()  # a subclass may keep its instances small (a fleet holds one per device)

    def on_request(
        self,
        name: str,
        method: str,
        url: str,
        status: int | None,
        elapsed_s: float,
        response_bytes: int,
        error: AgentError | None,
    ) -> None:
        """One HTTP attempt finished (status None when it failed without an answer)."""

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        """A Capgo plugin event: download, downloadComplete, updateAvailable, set, ..."""

    def on_stat(self, action: str, version_name: str) -> None:
        """A stats action was queued."""

    def on_retry(self, error: AgentError, delay_s: float) -> None:
        """The attempt just reported by `on_request` failed with `error` and will be tried
        again (the same exchange) after `delay_s` seconds."""


@dataclass(frozen=True)
class BundleView:
    id: str
    version: str
    status: str
    path: Path | None  # None for builtin


@dataclass(frozen=True)
class DeviceStatus:
    """What the device holds now, as `otasim device status` shows it."""

    current: BundleView
    next: BundleView | None
    fallback: BundleView
    bundles: tuple[BundleView, ...]
    failed_versions: tuple[str, ...]
    rejected_artefacts: tuple[str, ...]
    boot_id: int | None
    boot_confirmed: bool
    channel: str | None
    blocked_until: float | None
    pending_stats: int
    highest_confirmed: str | None  # the anti-rollback floor: no older offer is downloaded
