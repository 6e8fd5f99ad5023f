"""Both drivers behind one blocking facade, clocks that never wait, a recording observer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.api import AgentObserver
from agent.drivers.backends import make_async_port, make_sync_port
from agent.drivers.sync import SyncDevice


class NoWaitClock:
    """Real time (or real time sped up `scale` times, as the simulator's clock), but retry
    back-offs do not wait (keeps the suite fast)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._t0 = time.time()

    def now(self) -> float:
        return self._t0 + (time.time() - self._t0) * self.scale

    def sleep(self, seconds: float) -> None:
        pass


class NoWaitAsyncClock(NoWaitClock):
    async def sleep(self, seconds: float) -> None:  # type: ignore[override]
        await asyncio.sleep(0)


class Recorder(AgentObserver):
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int | None, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.stats: list[tuple[str, str]] = []

    def on_request(
        self,
        name: str,
        method: str,
        url: str,
        status: int | None,
        elapsed_s: float,
        response_bytes: int,
        error: Any,
    ) -> None:
        self.requests.append((name, method, status, error))

    def on_event(self, name: str, payload: Any) -> None:
        self.events.append((name, dict(payload)))

    def on_stat(self, action: str, version_name: str) -> None:
        self.stats.append((action, version_name))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


class Driven:
    """A device behind a blocking facade, whichever driver runs it."""

    def __init__(
        self,
        kind: str,
        folder: Path,
        config: AgentConfig,
        identity: DeviceIdentity,
        observer: Recorder,
        time_scale: float = 1.0,
    ) -> None:
        self.kind = kind
        self.time_scale = time_scale
        self.folder, self.config, self.identity, self.observer = folder, config, identity, observer
        self.loop = asyncio.new_event_loop() if kind == "async" else None
        self.port: Any = (
            self._call(self._make_async_port()) if kind == "async" else make_sync_port()
        )
        self.device: Any = None
        self.reopen()

    async def _make_async_port(self) -> Any:
        return make_async_port()

    def _call(self, value: Any) -> Any:
        if self.loop is not None and asyncio.iscoroutine(value):
            return self.loop.run_until_complete(value)
        return value

    def reopen(self) -> None:
        if self.kind == "async":
            self.device = self._call(
                AsyncDevice.open(
                    self.folder,
                    self.config,
                    self.identity,
                    self.port,
                    clock=NoWaitAsyncClock(self.time_scale),
                    observer=self.observer,
                )
            )
        else:
            self.device = SyncDevice.open(
                self.folder,
                self.config,
                self.identity,
                self.port,
                clock=NoWaitClock(self.time_scale),
                observer=self.observer,
            )

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.device, name)
        return lambda *a, **k: self._call(method(*a, **k))

    def close(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.port.aclose())
            self.loop.close()
        else:
            self.port.close()
