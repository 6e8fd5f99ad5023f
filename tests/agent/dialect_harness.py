"""One app install speaking a non-Capgo dialect against the reference server, run by hand."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from device_harness import NoWaitAsyncClock, Recorder

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.backends import make_async_port
from agent.protocol.codepush import CodePushDialect
from agent.protocol.expo import ExpoDialect

RUNTIME = "1.0.0"
DIALECTS = {"expo": ExpoDialect, "codepush": CodePushDialect}


def dist(tmp: Path, version: str) -> Path:
    """A release's dist folder: index.html naming the version and a nested script."""
    folder = tmp / f"dist-{version}"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text(f"<html>{version}</html>")
    (folder / "assets" / "app.js").write_text(f"console.log('{version}')" * 50)
    return folder


class Phone:
    """One app install, opened again for each app run (as a process restart)."""

    def __init__(
        self, dialect: str, update_url: str, app: str, folder: Path, signing: bytes | None
    ) -> None:
        self.dialect = DIALECTS[dialect]
        self.config = AgentConfig(
            update_url=update_url,
            stats_url=update_url,  # a dialect that reports derives its URLs from the check's
            channel_url="",
            code_signing_pem=signing.decode() if signing else None,
        )
        self.identity = DeviceIdentity(str(uuid.uuid4()), app, "android", RUNTIME)
        self.folder = folder
        self.observer = Recorder()

    async def run(self, *, confirm: bool = True) -> Any:
        """One app run: launch (check), confirm, background (apply what came), flush the
        reports; the new boot confirms unless the app crashes (`confirm=False`)."""
        port = make_async_port()
        device = await AsyncDevice.open(
            self.folder,
            self.config,
            self.identity,
            port,
            clock=NoWaitAsyncClock(),
            observer=self.observer,
            dialect=self.dialect.from_config(self.config),
        )
        try:
            await device.launch()
            await device.notify_app_ready()
            await device.background()
            if confirm:
                await device.notify_app_ready()
            await device.flush_stats()
            status = device.status()
            device.kill()
            return status
        finally:
            await port.aclose()

    def downloads(self) -> int:
        return sum(1 for r in self.observer.requests if r[0] in ("delta file", "bundle"))

    def errors(self) -> list[str]:
        return [p.get("error", "") for n, p in self.observer.events if n == "updateCheckResult"]
