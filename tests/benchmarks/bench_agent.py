"""Agent benchmark (issue 3): what the agent itself costs beside the network.

    .venv/bin/python tests/benchmarks/bench_agent.py [--rounds 5]

Prints, as medians of the rounds:
- core: update-check cycles per second through `Agent.handle` alone (foreground, answer,
  background: the decisions, no I/O);
- driver: update checks per second through `AsyncDevice` / `SyncDevice` over an in-memory
  port (the agent's whole per-check cost: core, dialect, runtime, tenacity; no network);
- commit: `atomic_write` per second with fsync (durable) and without, on the real disk;
- stats commit: `DeviceStore.commit_stats` per second for a full queue (200 events, one
  event queued and the oldest dropped per commit) and a short one (20), without fsync;
- download memory: the Python heap peak (tracemalloc) while a `SyncDevice` downloads, verifies
  and unpacks bundles of growing size from a loopback peer: it must not grow with the size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "agent"))

from capgo_peer import make_zip, serve_peer

from agent.config import AgentConfig, DeviceIdentity
from agent.core.agent import Agent
from agent.core.events import MovedToBackground, MovedToForeground, ResponseReceived
from agent.core.lifecycle import DeviceState
from agent.drivers.aio import AsyncDevice
from agent.drivers.backends import make_sync_port
from agent.drivers.http import HttpRequest, HttpResponse
from agent.drivers.sync import SyncDevice
from agent.protocol.base import StatEvent
from agent.protocol.capgo import CapgoDialect
from agent.store import DeviceStore, atomic_write

IDENTITY = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "ios", "1.0.0")
UP_TO_DATE = json.dumps({"error": "no_new_version_available", "kind": "up_to_date"}).encode()


def core_cycles(n: int) -> float:
    agent = Agent(
        AgentConfig(update_url="https://x.test/updates", stats_url=""),
        IDENTITY,
        DeviceState(),
        [],
        rng=random.Random(1),
        dialect=CapgoDialect(),
    )
    start = time.perf_counter()
    for i in range(n):
        agent.handle(MovedToForeground(), float(i))
        agent.handle(ResponseReceived("/updates", 200, {}, UP_TO_DATE), float(i))
        agent.handle(MovedToBackground(), float(i))
    return n / (time.perf_counter() - start)


class MemoryPort:
    """An HTTP port answering every request "up to date" from memory."""

    response = HttpResponse(200, {"content-type": "application/json"}, UP_TO_DATE)

    async def send(self, request: HttpRequest) -> HttpResponse:
        return self.response

    def send_sync(self, request: HttpRequest) -> HttpResponse:
        return self.response


def driver_checks(n: int, kind: str) -> float:
    config = AgentConfig(update_url="https://x.test/updates", stats_url="")
    port = MemoryPort()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sync":
            port.send = port.send_sync  # type: ignore[method-assign, assignment]
            device = SyncDevice.open(Path(tmp), config, IDENTITY, port)  # type: ignore[arg-type]
            device.launch()
            start = time.perf_counter()
            for _ in range(n):
                device.check_for_update()
            return n / (time.perf_counter() - start)

        async def run() -> float:
            adevice = await AsyncDevice.open(Path(tmp), config, IDENTITY, port)  # type: ignore[arg-type]
            await adevice.launch()
            start = time.perf_counter()
            for _ in range(n):
                await adevice.check_for_update()
            return n / (time.perf_counter() - start)

        return asyncio.run(run())


def commits(n: int, durable: bool) -> float:
    folder = Path(tempfile.mkdtemp(dir=Path.cwd()))
    target = folder / "state.json"
    start = time.perf_counter()
    for _ in range(n):
        atomic_write(target, b'{"format": 1}' * 40, durable=durable)
    rate = n / (time.perf_counter() - start)
    target.unlink()
    folder.rmdir()
    return rate


def stats_commits(n: int, queue_len: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store, _, _ = DeviceStore.open(Path(tmp), durable=False)
        events = [StatEvent(i, "app_moved_to_foreground", "1.0.1", i) for i in range(queue_len)]
        start = time.perf_counter()
        for i in range(queue_len, queue_len + n):
            events = [*events[1:], StatEvent(i, "download_10", "1.0.2", i, "1.0.1")]
            store.commit_stats(events)
        return n / (time.perf_counter() - start)


def download_peak(size_mb: int) -> int:
    with serve_peer() as peer:
        peer.publish("1.0.1", make_zip("1.0.1", {"blob.bin": os.urandom(size_mb << 20)}))
        config = AgentConfig(update_url=f"{peer.url}/updates", stats_url="")
        port = make_sync_port()
        with tempfile.TemporaryDirectory() as tmp:
            device = SyncDevice.open(Path(tmp), config, IDENTITY, port)
            tracemalloc.start()
            device.launch()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert device.status().next is not None
        port.close()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rounds = range(args.rounds)
    print(f"core: {statistics.median(core_cycles(5000) for _ in rounds):,.0f} check cycles/s")
    for kind in ("async", "sync"):
        rate = statistics.median(driver_checks(5000, kind) for _ in rounds)
        print(f"driver {kind}: {rate:,.0f} checks/s over an in-memory port")
    durable = statistics.median(commits(200, True) for _ in rounds)
    fast = statistics.median(commits(200, False) for _ in rounds)
    print(f"commit: {durable:,.0f}/s durable, {fast:,.0f}/s without fsync ({fast / durable:.0f}x)")
    for queue_len in (20, 200):
        rate = statistics.median(stats_commits(500, queue_len) for _ in rounds)
        print(f"stats commit, queue of {queue_len}: {rate:,.0f}/s without fsync")
    for size in (4, 32, 128):
        peak = statistics.median(download_peak(size) for _ in range(min(args.rounds, 3)))
        print(f"download {size:>3} MiB bundle: heap peak {peak / 1024:,.0f} KiB")


if __name__ == "__main__":
    main()
