"""Every dialect against the real reference server over loopback: publish with the dialect's
artefacts, then update, crash on boot and roll back, never take the failed version again,
refuse an older (replayed) release, and hear "no update" when there is none."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from device_harness import NoWaitAsyncClock, Recorder

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.backends import make_async_port
from simulator.preflight import endpoints
from simulator.publish import publish
from simulator.release import create_keys
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer

DIALECTS = ["capgo", "capawesome", "appflow"]


class World:
    """One app on the server and one device folder, speaking `dialect`."""

    def __init__(
        self, server: RunningServer, keys: tuple[bytes, bytes], tmp: Path, dialect: str
    ) -> None:
        self.server, self.keys, self.tmp, self.dialect = server, keys, tmp, dialect
        self.app = f"com.example.{dialect}{uuid.uuid4().hex[:8]}"
        self.folder = tmp / "device"
        self.identity = DeviceIdentity(str(uuid.uuid4()), self.app, "android", "1.0.0")
        self.observer = Recorder()
        with self.admin() as admin:
            admin.create_app(self.app)
            admin.set_channel(self.app, "production", public=True)

    def admin(self) -> AdminClient:
        return AdminClient(self.server.url, self.server.admin_key)

    def release(self, version: str) -> None:
        dist = self.tmp / f"dist-{version}"
        dist.mkdir()
        # content unique to this app: the server stores files by content, shared across apps
        (dist / "index.html").write_text(f"<html>{self.app} {version}</html>")
        (dist / "app.js").write_text(f"console.log('{self.app} {version}');" * 200)
        with self.admin() as admin:
            publish(
                admin, app_id=self.app, version=version, channel="production", source=dist,
                private_pem=self.keys[0], delta=True, dialects=[self.dialect],
            )  # fmt: skip

    def config(self) -> AgentConfig:
        urls = endpoints(self.server.url, dialect=self.dialect)
        return AgentConfig(  # the key is the app's; a dialect without keys ignores it
            update_url=urls.updates, stats_url=urls.stats, channel_url=urls.channel,
            public_key=self.keys[1].decode(), dialect=self.dialect,
        )  # fmt: skip

    def run(self, *lives: bool) -> list[Any]:
        """App runs, one per item: launch (check, download, apply a queued bundle), then
        notifyAppReady when the item is True (else the app dies before it). Returns the
        status after each run."""

        async def go() -> list[Any]:
            port = make_async_port()
            statuses = []
            try:
                for ready in lives:
                    device = await AsyncDevice.open(
                        self.folder, self.config(), self.identity, port,
                        clock=NoWaitAsyncClock(), observer=self.observer,
                    )  # fmt: skip
                    await device.launch()
                    if ready:
                        await device.notify_app_ready()
                    statuses.append(device.status())
                    device.kill()
            finally:
                await port.aclose()
            return statuses

        return asyncio.run(go())

    def downloads(self) -> int:
        return sum(1 for name, *_ in self.observer.requests if name in ("bundle", "delta file"))

    def checks(self) -> list[tuple[str | None, str | None]]:
        return [
            (p.get("kind"), p.get("error"))
            for n, p in self.observer.events
            if n == "updateCheckResult"
        ]


@pytest.fixture(params=DIALECTS)
def world(
    request: pytest.FixtureRequest, server: RunningServer, keys: tuple[bytes, bytes], tmp_path: Path
) -> World:
    return World(server, keys, tmp_path, request.param)


def test_no_bundle_means_no_update(world: World) -> None:
    (status,) = world.run(True)
    assert status.current.id == "builtin" and status.next is None and world.downloads() == 0
    assert world.checks() and all(kind != "failed" for kind, _ in world.checks())


def test_update_then_up_to_date(world: World) -> None:
    world.release("1.0.1")
    queued, booted, again = world.run(True, True, True)
    assert queued.next is not None and queued.next.version == "1.0.1"
    assert booted.current.version == "1.0.1" and booted.boot_confirmed
    assert again.current.version == "1.0.1" and world.downloads() >= 1
    assert world.checks()[-1][0] == "up_to_date"


def test_crash_on_boot_rolls_back_and_the_failed_version_is_never_taken_again(
    world: World,
) -> None:
    world.release("1.0.1")
    _, crashed, rolled_back, later = world.run(True, False, True, True)
    assert crashed.current.version == "1.0.1" and not crashed.boot_confirmed
    assert rolled_back.current.id == "builtin" and rolled_back.failed_versions == ("1.0.1",)
    fetched = world.downloads()
    assert later.current.id == "builtin" and later.next is None
    assert world.downloads() == fetched  # offered again, refused without a byte fetched
    assert ("update_fail", "1.0.1") in world.observer.stats


def test_a_confirmed_release_offered_again_after_a_newer_one_is_refused(world: World) -> None:
    """Offering again (replaying) a signed release confirmed here, once a newer one is
    confirmed, never takes the device back: refused before any byte is fetched."""
    world.release("1.0.1")
    world.run(True, True)  # 1.0.1 confirmed
    world.release("1.0.2")
    world.run(True, True)  # 1.0.2 confirmed
    with world.admin() as admin:
        admin.rollback(world.app, "production", "1.0.1")
    fetched = world.downloads()
    (status,) = world.run(True)
    assert status.current.version == "1.0.2" and world.downloads() == fetched
    assert ("failed", "downgrade_refused") in world.checks()


def test_an_artefact_tampered_on_the_server_is_never_activated(world: World) -> None:
    """Every stored file of the release has one byte flipped after publishing (same size):
    the device downloads, refuses, keeps booting builtin, and never marks the version good."""
    before = set((world.server.data_dir / "files").iterdir())
    world.release("1.0.1")
    for blob in set((world.server.data_dir / "files").iterdir()) - before:
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
    first, second = world.run(True, True)
    for status in (first, second):
        assert status.current.id == "builtin" and status.next is None
        assert all(b.version != "1.0.1" or b.status != "success" for b in status.bundles)
    failures = {a for a, v in world.observer.stats if v == "1.0.1" and a.endswith("_fail")}
    assert failures & {"checksum_fail", "decrypt_fail", "download_manifest_checksum_fail",
                       "download_manifest_brotli_fail", "unzip_fail"}  # fmt: skip


def test_a_device_with_another_key_refuses_the_signed_release(
    server: RunningServer, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    """Capawesome: a release signed with the publisher's key does not verify with the key a
    device was built with when the two differ."""
    world = World(server, keys, tmp_path, "capawesome")
    world.release("1.0.1")
    world.keys = (keys[0], create_keys()[1])  # the device's key is another one
    (status,) = world.run(True)
    assert status.current.id == "builtin" and status.next is None
    assert ("checksum_fail", "1.0.1") in world.observer.stats


def test_a_boot_not_ready_within_the_timeout_rolls_back_while_the_app_runs(world: World) -> None:
    """The ready timeout (appReadyTimeout 1 s, on a clock 20x real time): the app boots the
    update and never calls notifyAppReady; when the timer fires the device goes back to
    builtin at once and the version is marked failed."""
    world.release("1.0.1")
    world.run(True)  # downloaded and queued

    async def boot_and_wait() -> tuple[Any, Any]:
        port = make_async_port()
        config = replace(world.config(), app_ready_timeout_ms=1000)
        try:
            device = await AsyncDevice.open(
                world.folder, config, world.identity, port,
                clock=NoWaitAsyncClock(20.0), observer=world.observer,
            )  # fmt: skip
            await device.launch()  # applies 1.0.1; the app never says it is ready
            booted = device.status()
            await asyncio.sleep(0.2)  # 4 simulated seconds
            await device.run_timers()
            return booted, device.status()
        finally:
            await port.aclose()

    booted, after = asyncio.run(boot_and_wait())
    assert booted.current.version == "1.0.1" and not booted.boot_confirmed
    assert after.current.id == "builtin" and "1.0.1" in after.failed_versions
    assert ("app_launch_timeout", "1.0.1") in world.observer.stats
