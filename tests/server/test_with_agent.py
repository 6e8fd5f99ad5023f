"""The main /updates rules driven by the real agent (part B's asyncio driver) over loopback:
the server's answers are what a Capgo device acts on."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.api import AgentObserver, DeviceStatus
from agent.drivers.backends import make_async_port
from simulator.publish import publish
from simulator.release import create_keys
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer
from simulator.server.rollout import draw_bps


class FastClock:
    """Wall time; retry back-offs do not wait."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class Events(AgentObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, int | None]] = []

    def on_request(self, name: str, method: str, url: str, status: int | None, *rest: Any) -> None:
        self.requests.append((name, status))

    def on_event(self, name: str, payload: Any) -> None:
        self.events.append((name, dict(payload)))

    def check_results(self) -> list[tuple[str | None, str | None]]:
        return [(p.get("kind"), p.get("error")) for n, p in self.events if n == "updateCheckResult"]


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return create_keys()


def release(
    admin: AdminClient, app: str, version: str, folder: Path, pem: bytes | None, **kw: Any
) -> None:
    dist = folder / f"dist-{app}-{version}"
    (dist / "js").mkdir(parents=True)
    (dist / "index.html").write_text(f"<html>{version}</html>")
    (dist / "js" / "app.js").write_text("console.log('x');" * 1000)  # brotli-compressed in deltas
    publish(
        admin, app_id=app, version=version, channel="production", source=dist, private_pem=pem, **kw
    )


async def session(
    server: RunningServer,
    app: str,
    folder: Path,
    public_pem: bytes | None,
    *,
    device_id: str | None = None,
    build: str = "1.0.0",
    channel: str | None = None,
    apply: bool = False,
) -> tuple[DeviceStatus, Events]:
    """Launch a device (check + download), optionally join a channel and apply on background."""
    port = make_async_port()
    config = AgentConfig(
        update_url=f"{server.url}/updates",
        stats_url=f"{server.url}/stats",
        channel_url=f"{server.url}/channel_self",
        public_key=public_pem.decode() if public_pem else None,
        allow_downgrade=True,  # these tests roll channels back past confirmed versions
    )
    identity = DeviceIdentity(device_id or str(uuid.uuid4()), app, "android", build)
    events = Events()
    device = await AsyncDevice.open(
        folder, config, identity, port, clock=FastClock(), observer=events
    )
    try:
        if channel is not None:
            assert (await device.set_channel(channel)).allowed
        await device.launch()
        await device.notify_app_ready()
        if apply:
            await device.background()
            await device.foreground()
            await device.notify_app_ready()
        await device.flush_stats()
        return device.status(), events
    finally:
        await device.aclose()
        await port.aclose()


def test_encrypted_offer_update_then_up_to_date(
    server: RunningServer,
    admin: AdminClient,
    app_id: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    release(admin, app_id, "1.0.1", tmp_path, private_pem)
    status, events = asyncio.run(session(server, app_id, tmp_path / "d", public_pem, apply=True))
    assert status.current.version == "1.0.1" and status.boot_confirmed
    assert ("up_to_date", "no_new_version_available") in events.check_results()
    counts = admin.stats(app_id, "1.0.1")["versions"]["1.0.1"]
    assert counts["downloads"] == 1 and counts["installs"] == 1 and counts["gets"] == 1


def test_blocked_answers_leave_the_device_on_builtin(
    server: RunningServer,
    admin: AdminClient,
    app_id: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    release(admin, app_id, "2.0.0", tmp_path, private_pem)  # channel default: no major upgrades
    status, events = asyncio.run(session(server, app_id, tmp_path / "a", public_pem))
    assert events.check_results() == [("blocked", "disable_auto_update_to_major")]
    assert status.next is None and status.current.id == "builtin"
    assert "breakingAvailable" in [name for name, _ in events.events]
    other_public = create_keys()[1]
    admin.set_channel(app_id, "production", disable_auto_update="none")
    status, events = asyncio.run(session(server, app_id, tmp_path / "b", other_public))
    assert events.check_results() == [("blocked", "key_id_mismatch")]
    assert status.next is None


def test_no_channel_is_a_failed_check(
    server: RunningServer, app_id: str, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    status, events = asyncio.run(session(server, app_id, tmp_path / "d", keys[1]))
    assert events.check_results() == [("failed", "no_channel")]
    assert status.next is None
    assert "downloadFailed" in [name for name, _ in events.events]


def test_rollback_to_an_earlier_bundle_and_to_builtin(
    server: RunningServer,
    admin: AdminClient,
    app_id: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    release(admin, app_id, "1.0.1", tmp_path, private_pem)
    release(admin, app_id, "1.0.2", tmp_path, private_pem)
    folder = tmp_path / "d"
    assert (
        asyncio.run(session(server, app_id, folder, public_pem, apply=True))[0].current.version
        == "1.0.2"
    )
    admin.rollback(app_id, "production", "1.0.1")
    status, _ = asyncio.run(session(server, app_id, folder, public_pem, apply=True))
    assert status.current.version == "1.0.1"
    admin.rollback(app_id, "production", "builtin")
    status, events = asyncio.run(session(server, app_id, folder, public_pem))
    assert events.check_results() == [("up_to_date", "already_on_builtin")]
    assert status.current.version == "1.0.1"  # as Capgo 8.51.14 plugins do (reference §3.3 note)


def test_rollout_reaches_exactly_the_drawn_devices(
    server: RunningServer,
    admin: AdminClient,
    app_id: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    release(admin, app_id, "1.0.1", tmp_path, private_pem)
    release(admin, app_id, "1.0.2", tmp_path, private_pem, rollout_percent=50)
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(12)]

    async def fleet() -> list[DeviceStatus]:
        runs = [session(server, app_id, tmp_path / d, public_pem, device_id=d) for d in ids]
        return [status for status, _ in await asyncio.gather(*runs)]

    got = [s.next.version if s.next else None for s in asyncio.run(fleet())]
    expected = [
        "1.0.2" if draw_bps(app_id, "production", "1.0.2", d) < 5000 else "1.0.1" for d in ids
    ]
    assert got == expected
    assert set(got) == {"1.0.1", "1.0.2"}


def test_device_joins_a_self_assignable_channel(
    server: RunningServer,
    admin: AdminClient,
    app_id: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    release(admin, app_id, "1.0.1", tmp_path, private_pem)
    release(admin, app_id, "1.0.3", tmp_path, private_pem, rollout_percent=0)
    admin.set_channel(app_id, "beta", version="1.0.3", allow_device_self_set=True)
    status, _ = asyncio.run(session(server, app_id, tmp_path / "d", public_pem, channel="beta"))
    assert status.channel == "beta" and status.next is not None and status.next.version == "1.0.3"


def test_encrypted_delta_bundle_installs_file_by_file(
    server: RunningServer,
    admin: AdminClient,
    app_id: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    release(admin, app_id, "1.0.1", tmp_path, private_pem, delta=True)
    status, events = asyncio.run(session(server, app_id, tmp_path / "d", public_pem, apply=True))
    assert status.current.version == "1.0.1" and status.current.path is not None
    assert (status.current.path / "js" / "app.js").read_text().startswith("console.log")
    assert [r for r in events.requests if r[0] == "delta file"] == [("delta file", 200)] * 2
    assert not [r for r in events.requests if r[0] == "bundle"]


async def crash_after_update(
    server: RunningServer, app: str, folder: Path, public_pem: bytes
) -> None:
    """Take the offered update, boot it, never become ready (a crash), then roll back."""
    port = make_async_port()
    config = AgentConfig(
        update_url=f"{server.url}/updates",
        stats_url=f"{server.url}/stats",
        channel_url=f"{server.url}/channel_self",
        public_key=public_pem.decode(),
    )
    identity = DeviceIdentity(str(uuid.uuid4()), app, "android", "1.0.0")

    async def opened() -> AsyncDevice:
        return await AsyncDevice.open(folder, config, identity, port, clock=FastClock())

    try:
        device = await opened()
        await device.launch()
        await device.notify_app_ready()
        device.kill()
        device = await opened()
        await device.launch()  # boots the new bundle; the app dies before notifyAppReady
        device.kill()
        device = await opened()
        await device.launch()  # unconfirmed boot: roll back, report update_fail
        await device.notify_app_ready()
        await device.flush_stats()
        await device.aclose()
    finally:
        await port.aclose()


def test_a_crashing_release_pauses_its_own_rollout(
    server: RunningServer,
    admin: AdminClient,
    app_id: str,
    keys: tuple[bytes, bytes],
    tmp_path: Path,
) -> None:
    private_pem, public_pem = keys
    release(admin, app_id, "1.0.1", tmp_path, private_pem)
    release(admin, app_id, "1.0.2", tmp_path, private_pem)
    admin.set_channel(app_id, "production", version="1.0.1")
    admin.set_rollout(
        app_id, "production", "1.0.2", 100, auto_pause_fail_ratio=0.3, auto_pause_min_samples=4
    )

    async def crashing_fleet() -> None:
        await asyncio.gather(
            *(crash_after_update(server, app_id, tmp_path / f"c{i}", public_pem) for i in range(3))
        )

    asyncio.run(crashing_fleet())
    counts = admin.stats(app_id, "1.0.2")["versions"]["1.0.2"]
    assert counts["rollbacks"] == 3 and counts["installs"] == 3
    assert admin.app(app_id)["channels"][0]["rollout_paused"] is True
    status, _ = asyncio.run(session(server, app_id, tmp_path / "late", public_pem))
    assert status.next is not None and status.next.version == "1.0.1"
