"""What the agent itself costs beside the network, and what its disk commits cost.

- group `agent check`: one update check (foreground, "up to date" answer, background)
  through `Agent.handle` alone (the decisions), and through `SyncDevice` / `AsyncDevice`
  over an in-memory port (the whole per-check cost: core, dialect, runtime, tenacity);
- group `store commit`: `atomic_write` with and without fsync on the real disk, and
  `DeviceStore.commit_stats` of a full stats queue (200 events, one in, the oldest out);
- group `device reopen`: `AsyncDevice.open` of a fleet device's folder (a state naming one
  installed bundle, no stats pending), as a sleeping simulated app does at every wake;
- group `download`: a `SyncDevice` downloading, verifying and installing a 32 MiB bundle
  from a loopback peer; its Python heap peak (tracemalloc, one extra run) is saved as
  `extra_info.heap_peak_kib` in the benchmark JSON: it must not grow with the bundle.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from capgo_peer import make_zip, serve_peer

from agent.config import AgentConfig, DeviceIdentity
from agent.core.agent import Agent
from agent.core.events import MovedToBackground, MovedToForeground, ResponseReceived
from agent.core.lifecycle import BundleInfo, DeviceState
from agent.drivers.aio import AsyncDevice
from agent.drivers.backends import make_sync_port
from agent.drivers.http import HttpRequest, HttpResponse
from agent.drivers.sync import SyncDevice
from agent.protocol.base import StatEvent
from agent.protocol.capgo import CapgoDialect
from agent.store import DeviceStore, atomic_write

IDENTITY = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "ios", "1.0.0")
CONFIG = AgentConfig(update_url="https://x.test/updates", stats_url="")
UP_TO_DATE = json.dumps({"error": "no_new_version_available", "kind": "up_to_date"}).encode()
ANSWER = HttpResponse(200, {"content-type": "application/json"}, UP_TO_DATE)


class SyncMemoryPort:
    def send(self, request: HttpRequest) -> HttpResponse:
        return ANSWER


class AsyncMemoryPort:
    async def send(self, request: HttpRequest) -> HttpResponse:
        return ANSWER


@pytest.mark.benchmark(group="agent check")
def test_core_check_cycle(benchmark) -> None:
    agent = Agent(CONFIG, IDENTITY, DeviceState(), [], rng=random.Random(1), dialect=CapgoDialect())
    clock = itertools.count()

    def cycle() -> list[object]:
        now = float(next(clock))
        effects = agent.handle(MovedToForeground(), now)
        agent.handle(ResponseReceived("/updates", 200, {}, UP_TO_DATE), now)
        agent.handle(MovedToBackground(), now)
        return list(effects)

    assert cycle(), "a foreground sends a check"
    benchmark(cycle)


@pytest.mark.benchmark(group="agent check")
def test_sync_device_check(benchmark, folder: Path) -> None:
    device = SyncDevice.open(folder, CONFIG, IDENTITY, SyncMemoryPort())  # type: ignore[arg-type]
    device.launch()
    benchmark(device.check_for_update)
    assert device.status().next is None


@pytest.mark.benchmark(group="agent check")
def test_async_device_check(benchmark, folder: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        device = loop.run_until_complete(
            AsyncDevice.open(folder, CONFIG, IDENTITY, AsyncMemoryPort())  # type: ignore[arg-type]
        )
        loop.run_until_complete(device.launch())
        benchmark(lambda: loop.run_until_complete(device.check_for_update()))
    finally:
        loop.close()


@pytest.mark.benchmark(group="store commit")
@pytest.mark.parametrize("durable", [True, False], ids=["fsync", "no-fsync"])
def test_atomic_write(benchmark, folder: Path, durable: bool) -> None:
    target = folder / "state.json"
    payload = b'{"format": 1}' * 40
    benchmark(atomic_write, target, payload, durable=durable)
    assert target.read_bytes() == payload


@pytest.mark.benchmark(group="store commit")
def test_stats_commit_full_queue(benchmark, folder: Path) -> None:
    store, _, _ = DeviceStore.open(folder, durable=False)
    queue = [StatEvent(i, "app_moved_to_foreground", "1.0.1", i) for i in range(200)]
    counter = itertools.count(200)

    def commit() -> None:
        nonlocal queue
        i = next(counter)
        queue = [*queue[1:], StatEvent(i, "download_10", "1.0.2", i, "1.0.1")]
        store.commit_stats(queue)
        store.flush()  # a store that is not durable writes when its lifecycle call ends

    benchmark(commit)
    assert DeviceStore.open(folder, durable=False)[2][-1] == queue[-1]


@pytest.mark.benchmark(group="device reopen")
def test_async_device_reopen(benchmark, folder: Path) -> None:
    store, state, _ = DeviceStore.open(folder, durable=False)
    (store.bundle_dir("b1") / "index.html").parent.mkdir()
    (store.bundle_dir("b1") / "index.html").write_text("<html></html>")
    installed = BundleInfo("b1", "1.0.1", "success")
    store.commit_state(replace(state, bundles={"b1": installed}, current="b1"))
    store.flush()
    loop = asyncio.new_event_loop()
    port = AsyncMemoryPort()

    def reopen() -> AsyncDevice:
        return loop.run_until_complete(
            AsyncDevice.open(folder, CONFIG, IDENTITY, port, durable=False)  # type: ignore[arg-type]
        )

    try:
        benchmark(reopen)
        assert reopen().status().current.id == "b1"
    finally:
        loop.close()


@pytest.fixture(scope="module")
def peer() -> Iterator[object]:
    with serve_peer() as peer:
        peer.publish("1.0.1", make_zip("1.0.1", {"blob.bin": os.urandom(32 << 20)}))
        yield peer


@pytest.mark.benchmark(group="download")
def test_sync_download_32mib(benchmark, folder: Path, peer) -> None:
    config = AgentConfig(update_url=f"{peer.url}/updates", stats_url="")
    port = make_sync_port()
    folders = (folder / str(i) for i in itertools.count())

    def update() -> str | None:
        device = SyncDevice.open(next(folders), config, IDENTITY, port)
        device.launch()
        queued = device.status().next
        return queued.version if queued else None

    try:
        tracemalloc.start()
        assert update() == "1.0.1"
        benchmark.extra_info["heap_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()
        assert benchmark.pedantic(update, rounds=3, warmup_rounds=0) == "1.0.1"
    finally:
        port.close()
