"""One app install speaking a non-Capgo dialect against the reference server, run by hand."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from device_harness import NoWaitAsyncClock, Recorder

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.backends import make_async_port
from agent.protocol.registry import dialect_spec
from simulator.publish import publish
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer

RUNTIME = "1.0.0"


def dist(tmp: Path, version: str) -> Path:
    """A release's dist folder: index.html naming the version and a nested script."""
    folder = tmp / f"dist-{version}"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text(f"<html>{version}</html>")
    (folder / "assets" / "app.js").write_text(f"console.log('{version}')" * 50)
    return folder


def new_app(server: RunningServer) -> str:
    """A fresh app on the server (each test its own: channels and rollbacks do not leak)."""
    app_id = f"com.dialect.t{uuid.uuid4().hex[:10]}"
    with AdminClient(server.url, server.admin_key) as admin:
        admin.create_app(app_id)
    return app_id


def publish_as(
    server: RunningServer, dialect: str, app: str, version: str, folder: Path, key: bytes | None
) -> dict[str, Any]:
    """Publish `folder` as `version` on production, with `dialect`'s artefacts."""
    with AdminClient(server.url, server.admin_key) as admin:
        return publish(
            admin,
            app_id=app,
            version=version,
            channel="production",
            source=folder,
            private_pem=key,
            dialects=[dialect],
        )


class Phone:
    """One app install, opened again for each app run (as a process restart)."""

    def __init__(
        self, dialect: str, server: RunningServer, app: str, folder: Path, signing: bytes | None
    ) -> None:
        updates, stats, channel = dialect_spec(dialect).urls(server.url)
        self.config = AgentConfig(
            update_url=updates,
            stats_url=stats,
            channel_url=channel,
            code_signing_pem=signing.decode() if signing else None,
            dialect=dialect,
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
