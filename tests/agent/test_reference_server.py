"""Full flows against the reference server (part D): publish signed bundles, update, roll back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from device_harness import NoWaitAsyncClock, Recorder

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.backends import make_async_port
from simulator.publish import publish
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer

APP = "com.example.app"


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


async def session(
    server: RunningServer,
    public_pem: bytes,
    folder: Path,
    device_id: str,
    *,
    allow_downgrade: bool = False,
    confirm: bool = True,
) -> tuple[Any, Recorder]:
    """One app run: launch, check, apply what came (background), confirm the boot unless the
    app crashes (`confirm=False`: the process dies before notifyAppReady)."""
    port = make_async_port()
    config = AgentConfig(
        update_url=f"{server.url}/updates",
        stats_url=f"{server.url}/stats",
        channel_url=f"{server.url}/channel_self",
        public_key=public_pem.decode(),
        allow_downgrade=allow_downgrade,
    )
    identity = DeviceIdentity(device_id, ROLLBACK_APP, "android", "1.0.0")
    observer = Recorder()
    device = await AsyncDevice.open(
        folder, config, identity, port, clock=NoWaitAsyncClock(), observer=observer
    )
    try:
        await device.launch()
        await device.notify_app_ready()
        await device.background()
        if confirm:
            await device.notify_app_ready()
            await device.flush_stats()
        return device.status(), observer
    finally:
        await device.aclose()
        await port.aclose()


ROLLBACK_APP = "com.example.rollback"


def test_channel_rollback_past_a_confirmed_version(
    server: RunningServer, keys: tuple[bytes, bytes], tmp_path: Path
) -> None:
    """The server's one-call rollback to 1.0.1 brings back the devices that never confirmed
    anything newer, and those that never ran 1.0.1 (its label alone is unauthenticated); a
    device that confirmed 1.0.1 and then 1.0.2 refuses it unless `allow_downgrade`."""
    private_pem, public_pem = keys
    with AdminClient(server.url, server.admin_key) as admin:
        admin.create_app(ROLLBACK_APP)
    names = ("guarded", "plugin_like", "behind", "crashed", "skipper")
    ids = {name: str(uuid.uuid4()) for name in names}

    def run(name: str, **options: Any) -> tuple[Any, Recorder]:
        folder = tmp_path / name
        return asyncio.run(session(server, public_pem, folder, ids[name], **options))

    release(server, private_pem, "1.0.1", tmp_path, ROLLBACK_APP)
    assert run("behind")[0].current.version == "1.0.1"
    assert run("crashed")[0].current.version == "1.0.1"
    assert run("guarded")[0].current.version == "1.0.1"
    release(server, private_pem, "1.0.2", tmp_path, ROLLBACK_APP)
    assert run("guarded")[0].current.version == "1.0.2"
    assert run("skipper")[0].current.version == "1.0.2"
    assert run("plugin_like", allow_downgrade=True)[0].current.version == "1.0.2"
    assert not run("crashed", confirm=False)[0].boot_confirmed  # 1.0.2 booted, never ready
    assert run("crashed")[0].current.version == "1.0.1"  # rolled back locally at launch

    with AdminClient(server.url, server.admin_key) as admin:
        admin.rollback(ROLLBACK_APP, "production", "1.0.1")
    status, guarded = run("guarded")
    assert status.current.version == "1.0.2" and status.next is None
    assert ("updateCheckResult", "downgrade_refused") in [
        (name, payload.get("error")) for name, payload in guarded.events
    ]
    assert ("download_fail", "1.0.1") in guarded.stats
    assert not [r for r in guarded.requests if r[0] == "bundle"]  # never fetched
    assert run("plugin_like", allow_downgrade=True)[0].current.version == "1.0.1"
    assert run("behind")[0].current.version == "1.0.1"
    assert run("crashed")[0].current.version == "1.0.1"
    assert run("skipper")[0].current.version == "1.0.1"

    with AdminClient(server.url, server.admin_key) as admin:
        fails = admin.stats(ROLLBACK_APP, "1.0.1")["versions"]["1.0.1"]["actions"]
    assert fails["download_fail"] == 1  # the guarded device's refusal reached the server


CHANNEL_APP = "com.example.channels"


@pytest.mark.parametrize("plugin", ["plugin-6", "plugin-8"])
def test_channel_self_as_each_plugin_does_it(
    server: RunningServer, keys: tuple[bytes, bytes], tmp_path: Path, plugin: str
) -> None:
    """plugin-6: the server keeps the override (nothing stored on the device) and unsetChannel
    sends DELETE; plugin-8: the device keeps the channel and sends it as defaultChannel; no
    listChannels before 7.5.0."""
    from agent.errors import ProtocolError
    from agent.protocol.profiles import get_profile

    private_pem, public_pem = keys
    app = f"{CHANNEL_APP}{plugin[-1]}"
    release(server, private_pem, "1.0.1", tmp_path, app)
    dist = tmp_path / "beta"
    dist.mkdir()
    (dist / "index.html").write_text("<html>beta</html>")
    with AdminClient(server.url, server.admin_key) as admin:
        publish(admin, app_id=app, version="1.0.2-beta.1", channel="beta", source=dist,
                private_pem=private_pem)  # fmt: skip
        admin.set_channel(app, "beta", public=False, allow_device_self_set=True)

    async def life() -> tuple[Any, Any, Any, list[Any]]:
        port = make_async_port()
        config = AgentConfig(
            update_url=f"{server.url}/updates", stats_url=f"{server.url}/stats",
            channel_url=f"{server.url}/channel_self", public_key=public_pem.decode(),
            plugin=plugin,
        )  # fmt: skip
        identity = DeviceIdentity(str(uuid.uuid4()), app, "android", "1.0.0",
                                  plugin_version=get_profile(plugin).plugin_version)  # fmt: skip
        observer = Recorder()
        device = await AsyncDevice.open(tmp_path / "dev", config, identity, port,
                                        clock=NoWaitAsyncClock(), observer=observer)  # fmt: skip
        try:
            answer = await device.set_channel("beta")
            await device.launch()
            on_beta = device.status()
            listed: Any = None
            try:
                listed = await device.list_channels()
            except ProtocolError as exc:
                listed = exc
            await device.unset_channel()
            await device.notify_app_ready()
            await device.foreground()
            return answer, on_beta, listed, list(observer.requests)
        finally:
            await device.aclose()
            await port.aclose()

    answer, on_beta, listed, requests = asyncio.run(life())
    assert answer.allowed
    assert on_beta.next is not None and on_beta.next.version == "1.0.2-beta.1"
    methods = [r[1] for r in requests if r[0] == "/channel_self"]
    if plugin == "plugin-6":
        assert on_beta.channel is None  # the server holds the override
        assert methods == ["POST", "DELETE"]
        assert isinstance(listed, ProtocolError) and "listChannels" in str(listed)
    else:
        assert on_beta.channel == "beta"
        assert methods == ["POST", "GET"] and any(c.name == "beta" for c in listed)
