"""The driver loop written once: both drivers serialise a device's calls the same way.

In-memory ports isolate the locking (the loopback tests in test_drivers.py cover the rest):
an exchange outside a lifecycle call (channel_self) waits for the call in flight, whichever
driver runs the device.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from capgo_peer import CapgoPeer, canned_json, make_zip
from device_harness import Driven
from test_drivers import delta_offer

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.delta import ManifestFetch
from agent.drivers.fetch import BundleFetch
from agent.drivers.http import HttpRequest, HttpResponse
from agent.drivers.sync import SyncDevice

IDENTITY = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "ios", "1.0.0")
CONFIG = AgentConfig(
    update_url="http://127.0.0.1:9/updates",
    channel_url="http://127.0.0.1:9/channel_self",
    stats_url="",
    auto_update="off",
)
UP_TO_DATE = {"error": "no_new_version_available", "kind": "up_to_date"}
CHANNEL = {"channel": "beta", "status": "default", "allowSet": True}


def _answer(request: HttpRequest) -> HttpResponse:
    body = UP_TO_DATE if request.url.endswith("/updates") else CHANNEL
    return HttpResponse(200, {"content-type": "application/json"}, json.dumps(body).encode())


class GatedSyncPort:
    """Holds the first /updates request until `gate` opens; logs when each send runs."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def send(self, request: HttpRequest) -> HttpResponse:
        name = request.url.rsplit("/", 1)[-1]
        self.log.append(f"start {name}")
        if name == "updates":
            self.entered.set()
            assert self.gate.wait(10)
        self.log.append(f"end {name}")
        return _answer(request)


class GatedAsyncPort:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def send(self, request: HttpRequest) -> HttpResponse:
        name = request.url.rsplit("/", 1)[-1]
        self.log.append(f"start {name}")
        if name == "updates":
            self.entered.set()
            await self.gate.wait()
        self.log.append(f"end {name}")
        return _answer(request)


SERIALISED = ["start updates", "end updates", "start channel_self", "end channel_self"]


def test_the_blocking_driver_serialises_a_channel_exchange_behind_a_check(
    tmp_path: Path,
) -> None:
    port = GatedSyncPort()
    device = SyncDevice.open(tmp_path, CONFIG, IDENTITY, port)  # type: ignore[arg-type]
    checking = threading.Thread(target=device.check_for_update)
    checking.start()
    assert port.entered.wait(10)
    asking = threading.Thread(target=device.get_channel)
    asking.start()
    time.sleep(0.2)  # without the lock, the channel request would run now
    port.gate.set()
    checking.join(10)
    asking.join(10)
    assert port.log == SERIALISED


def test_the_asyncio_driver_serialises_a_channel_exchange_behind_a_check(
    tmp_path: Path,
) -> None:
    async def scenario() -> list[str]:
        port = GatedAsyncPort()
        device = await AsyncDevice.open(tmp_path, CONFIG, IDENTITY, port)  # type: ignore[arg-type]
        checking = asyncio.create_task(device.check_for_update())
        await port.entered.wait()
        asking = asyncio.create_task(device.get_channel())
        await asyncio.sleep(0.2)
        port.gate.set()
        await asyncio.gather(checking, asking)
        return port.log

    assert asyncio.run(scenario()) == SERIALISED


def test_the_asyncio_driver_hashes_and_replays_off_its_event_loop(
    peer: CapgoPeer, make_device: Callable[..., Driven], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying a partial through AES/SHA (`BundleFetch.start`), indexing the current bundles
    (`ManifestFetch.prepare`) and unpacking run in a worker thread under asyncio; the blocking
    driver runs them in its own thread."""
    ran_in: dict[str, set[str]] = {}

    def record(cls: type, name: str) -> None:
        original = getattr(cls, name)

        def wrapper(self: object) -> object:
            ran_in.setdefault(name, set()).add(threading.current_thread().name)
            return original(self)

        monkeypatch.setattr(cls, name, wrapper)

    for cls, name in ((BundleFetch, "start"), (BundleFetch, "install"), (ManifestFetch, "prepare")):
        record(cls, name)
    peer.publish("1.0.1", make_zip("1.0.1"))
    device = make_device(auto_update="always")
    device.launch()
    assert device.status().current.version == "1.0.1"
    peer.canned.append(canned_json(delta_offer(peer, Path(device.folder).parent, None, "3.0.0")))
    device.foreground()
    assert device.status().current.version == "3.0.0"
    threads = set().union(*ran_in.values())
    assert set(ran_in) == {"start", "install", "prepare"}
    if device.kind == "async":
        assert threading.main_thread().name not in threads
    else:
        assert threads == {threading.main_thread().name}
