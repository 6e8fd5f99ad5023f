"""A run's fleet in shards: this process runs the first, worker processes the others.

`run_fleet` is what `simulator.runner` calls. With one shard everything runs here. With more
(`otasim run --processes N`) the other shards run in spawned worker processes, one event loop
each, all started on a shared monotonic t0; while they run each sends its progress tally twice
a second for the progress line, and when they end their metrics are merged into the first
shard's.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.drivers.backends import make_async_port
from agent.drivers.http import AsyncHttpPort

from simulator.errors import RunError
from simulator.fleet import DeviceSpec, Fleet, ScaledClock, Timeline
from simulator.metrics import Metrics
from simulator.scenario import Scenario


async def run_fleet(
    shards: list[Shard], timeline: Timeline | None, records: list[dict[str, object]], progress: bool
) -> Fleet:
    """Run the fleet: shard 0 here (with the timeline and the progress display), the other
    shards in worker processes started together on a shared monotonic t0. `records` are the
    timeline steps already performed; returns shard 0's fleet with every shard's metrics."""
    scenario = shards[0].scenario
    with contextlib.ExitStack() as stack:
        workers = _Workers(shards[1:], stack, progress) if len(shards) > 1 else None
        fleet, http = _shard_fleet(shards[0])
        try:
            fleet.metrics.steps.extend(records)
            later = [s for s in scenario.timeline if s.at_s > 0]
            tasks = [asyncio.create_task(timeline.run(fleet, later))] if timeline else []
            if progress:
                tasks.append(asyncio.create_task(_progress(fleet, workers)))
            t0 = await workers.start() if workers else None
            await fleet.run(shards[0].flush_wait_s, t0=t0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for metrics in await workers.results() if workers else []:
                fleet.metrics.merge(metrics)
        finally:
            await http.aclose()
    return fleet


@dataclass(frozen=True)
class Shard:
    """One process's share of the fleet (picklable)."""

    scenario: Scenario
    specs: list[DeviceSpec]
    configs: Mapping[str, AgentConfig]
    scale: float
    workdir: Path
    published: Mapping[str, Mapping[str, str]]
    http_backend: str
    flush_wait_s: float


def _shard_fleet(shard: Shard) -> tuple[Fleet, AsyncHttpPort]:
    http = make_async_port(shard.http_backend, max_connections=256)  # type: ignore[arg-type]
    fleet = Fleet(
        shard.scenario, shard.specs, configs=shard.configs, http=http,
        clock=ScaledClock(shard.scale), workdir=shard.workdir, published=shard.published,
    )  # fmt: skip
    return fleet, http


def _worker(shard: Shard, ready: Any, go: Any, live: Any) -> Metrics:
    """A worker process: build its devices, report ready, run from the t0 it is given; with
    a `live` queue, send its progress tally there twice a second."""

    async def main() -> Metrics:
        fleet, http = _shard_fleet(shard)
        tally = asyncio.create_task(_send_tallies(fleet.metrics, live)) if live else None
        try:
            ready.put(len(shard.specs))
            t0 = await asyncio.to_thread(go.get)
            return await fleet.run(shard.flush_wait_s, t0=t0)
        finally:
            if tally:
                tally.cancel()
            await http.aclose()

    return asyncio.run(main())


async def _send_tallies(metrics: Metrics, live: Any) -> None:
    while True:
        await asyncio.to_thread(live.put, (os.getpid(), _Tally.of(metrics)))
        await asyncio.sleep(0.5)


class _Workers:
    """The worker processes of a sharded run."""

    START_TIMEOUT_S = 600.0

    def __init__(self, shards: list[Shard], stack: contextlib.ExitStack, live: bool) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process with a running loop
        manager = stack.enter_context(ctx.Manager())
        self._ready, self._go = manager.Queue(), manager.Queue()
        self._live = manager.Queue() if live else None
        self.tallies: dict[int, _Tally] = {}  # worker pid -> its latest progress tally
        pool = stack.enter_context(ProcessPoolExecutor(len(shards), mp_context=ctx))
        self._futures = [pool.submit(_worker, s, self._ready, self._go, self._live) for s in shards]

    async def start(self) -> float:
        """Wait until every worker has built its devices; return the shared t0."""
        for _ in self._futures:
            try:
                await asyncio.to_thread(self._ready.get, True, self.START_TIMEOUT_S)
            except queue.Empty:
                raise RunError("a fleet worker process did not start") from None
        t0 = time.monotonic() + 0.2
        for _ in self._futures:
            self._go.put(t0)
        return t0

    async def results(self) -> list[Metrics]:
        return [await asyncio.wrap_future(f) for f in self._futures]

    def receive_tallies(self) -> None:
        """Keep the latest progress tally each worker sent (blocking IPC: call in a thread)."""
        while self._live is not None:
            try:
                pid, tally = self._live.get_nowait()
            except queue.Empty:
                return
            self.tallies[pid] = tally


async def _progress(fleet: Fleet, workers: _Workers | None) -> None:
    """A live progress bar for the whole fleet (this process's shard plus the workers' latest
    tallies): simulated time, what the fleet runs, requests and failures."""
    from rich.progress import BarColumn, Progress, TextColumn

    total_h = fleet.scenario.duration_s / 3600
    columns = (TextColumn("{task.description}"), BarColumn(bar_width=10),
               TextColumn("{task.fields[info]}"))  # fmt: skip
    with Progress(*columns) as bar:
        task = bar.add_task("", total=total_h, info="")
        while True:
            now_h = min(fleet.now_s() / 3600, total_h)
            if workers:
                await asyncio.to_thread(workers.receive_tallies)
            others = list(workers.tallies.values()) if workers else []
            info = _Tally.total([_Tally.of(fleet.metrics), *others]).line()
            bar.update(task, completed=now_h, description=f"{now_h:5.1f}/{total_h:g} h",
                       info=info)  # fmt: skip
            await asyncio.sleep(0.25)


@dataclass(frozen=True)
class _Tally:
    """What the progress line shows of one shard, small enough to send between processes."""

    running: dict[str, int]  # version -> devices running it
    requests: int
    failed: int
    rolled_back: int
    lag_ms: float  # the latest event-loop lag (the worst shard's in a total)

    @classmethod
    def of(cls, metrics: Metrics) -> _Tally:
        running: dict[str, int] = {}
        for d in metrics.devices:
            running[d.version] = running.get(d.version, 0) + 1
        requests = sum(sum(c.values()) for c in metrics.statuses.values())
        lag = metrics.loop_lag[-1] * 1000 if metrics.loop_lag else 0.0
        return cls(running, requests, len(metrics.failure_times), len(metrics.rollback_times), lag)

    @classmethod
    def total(cls, tallies: list[_Tally]) -> _Tally:
        running: dict[str, int] = {}
        for t in tallies:
            for version, n in t.running.items():
                running[version] = running.get(version, 0) + n
        return cls(running, sum(t.requests for t in tallies), sum(t.failed for t in tallies),
                   sum(t.rolled_back for t in tallies), max(t.lag_ms for t in tallies))  # fmt: skip

    def line(self) -> str:
        n = max(sum(self.running.values()), 1)
        shares = " ".join(f"{v} {c / n:.0%}" for v, c in sorted(self.running.items()))
        return (f"{shares} · {self.requests:,} req · {self.failed:,} failed · "
                f"{self.rolled_back:,} rolled back · lag {self.lag_ms:.0f} ms")  # fmt: skip
