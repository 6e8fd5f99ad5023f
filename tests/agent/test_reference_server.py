"""Full flows against the reference server (part D): publish signed bundles, update, roll back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from device_harness import NoWaitAsyncClock, Recorder

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.http import make_async_port
from simulator.publish import publish
from simulator.release import create_keys
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server

APP = "com.example.app"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server() as running:
        yield running


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return create_keys()


def release(server: RunningServer, private_pem: bytes, version: str, tmp: Path, app: str) -> None:
    dist = tmp / f"dist-{version}"
    dist.mkdir()
    (dist / "index.html").write_text(f"<html>{version}</html>")
    (dist / "app.js").write_text("console.log(1)" * 100)
    with AdminClient(server.url, server.admin_key) as admin:
        publish(
            admin,
            app_id=app,
            version=version,
            channel="production",
            source=dist,
            private_pem=private_pem,
        )


async def device_life(server: RunningServer, public_pem: bytes, folder: Path, app: str) -> Any:
    port = make_async_port()
    config = AgentConfig(
        update_url=f"{server.url}/updates",
        stats_url=f"{server.url}/stats",
        channel_url=f"{server.url}/channel_self",
        public_key=public_pem.decode(),
    )
    identity = DeviceIdentity(str(uuid.uuid4()), app, "ios", "1.0.0")
    observer = Recorder()

    async def open_device() -> AsyncDevice:
        return await AsyncDevice.open(
            folder, config, identity, port, clock=NoWaitAsyncClock(), observer=observer
        )

    try:
        device = await open_device()
        await device.launch()
        await device.notify_app_ready()
        queued = device.status()
        device.kill()
        device = await open_device()
        await device.launch()  # cold start applies 1.0.1; the app crashes before ready
        booted = device.status()
        device.kill()
        device = await open_device()
        await device.launch()  # rollback
        await device.notify_app_ready()
        await device.flush_stats()
        return queued, booted, device.status(), observer
    finally:
        await port.aclose()


def test_signed_update_crash_and_rollback(
    server: RunningServer, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    private_pem, public_pem = keys
    with AdminClient(server.url, server.admin_key) as admin:
        admin.create_app(APP)
    release(server, private_pem, "1.0.1", tmp_path, APP)
    queued, booted, final, observer = asyncio.run(
        device_life(server, public_pem, tmp_path / "dev", APP)
    )
    assert queued.next is not None and queued.next.version == "1.0.1"
    assert booted.current.version == "1.0.1" and not booted.boot_confirmed
    assert final.current.id == "builtin" and final.failed_versions == ("1.0.1",)
    assert final.pending_stats == 0
    assert ("update_fail", "1.0.1") in observer.stats
    with AdminClient(server.url, server.admin_key) as admin:
        stats = admin.stats(APP, "1.0.1")
    counts = stats["versions"]["1.0.1"]
    assert (counts["downloads"], counts["installs"], counts["fails"]) == (1, 1, 1)
    for action in ("set_next", "set", "app_launch_timeout", "update_fail"):
        assert counts["actions"][action] == 1
    assert [r for r in observer.requests if r[0] == "bundle"] == [("bundle", "GET", 200, None)]
