"""A run's fleet in shards: this process runs the first, worker processes the others.

`run_fleet` is what `simulator.runner` calls. With one shard everything runs here. With more
(`otasim run --processes N`) the other shards run in spawned worker processes, one event loop
and one virtual clock each, in lockstep at the run's synchronisation points (time zero, each
timeline step; see `Fleet.sync_points`): every shard stops there, this process waits for all
of them, performs the timeline's step and shares what the men in the middle learned, then lets
them all go on. Between two points the shards run freely: devices interact only through the
server, whose state changes only at those points and through each device's own requests.
While they run each worker sends its progress tally twice a second for the progress line;
when they end their metrics are merged into the first shard's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import queue
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.drivers.backends import make_async_port
from agent.drivers.http import AsyncHttpPort

from simulator.clock import WINDOW_S, VirtualTime
from simulator.device import ConfigKey
from simulator.errors import RunError
from simulator.fleet import DeviceSpec, Fleet
from simulator.metrics import Metrics
from simulator.network import Learned
from simulator.scenario import Scenario
from simulator.timeline import Timeline


@dataclass
class FleetRun:
    """What `run_fleet` returns: shard 0's fleet holding every shard's metrics, and the
    CPU seconds (user, system) the fleet's processes spent."""

    fleet: Fleet
    cpu_s: tuple[float, float]
    steps: int  # clock steps of shard 0


async def run_fleet(shards: list[Shard], timeline: Timeline | None, progress: bool) -> FleetRun:
    """Run the fleet: shard 0 here (with the timeline and the progress display), the other
    shards in worker processes, all stopping at each synchronisation point."""
    with contextlib.ExitStack() as stack:
        workers = _Workers(shards[1:], stack, progress) if len(shards) > 1 else None
        fleet, http = _shard_fleet(shards[0])
        cpu = os.times()
        try:

            async def sync(at_s: float) -> None:
                others = await workers.reached() if workers else []
                if timeline:
                    await timeline.perform_due(fleet.metrics, at_s)
                learned = [fleet.learned(), *others]
                fleet.commit(learned)
                if workers:
                    workers.go(learned)

            tasks = [asyncio.create_task(_progress(fleet, workers))] if progress else []
            await fleet.run(sync, shards[0].flush_wait_s)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            results = await workers.results() if workers else []
        except BaseException:
            if workers:
                workers.stop()  # never leave them waiting at a synchronisation point
            raise
        finally:
            await http.aclose()
        done = os.times()
        user, system = done.user - cpu.user, done.system - cpu.system
        for metrics, (w_user, w_system) in results:
            fleet.metrics.merge(metrics)
            user, system = user + w_user, system + w_system
    return FleetRun(fleet, (user, system), fleet.time.steps)


@dataclass(frozen=True)
class Shard:
    """One process's share of the fleet (picklable)."""

    scenario: Scenario
    specs: list[DeviceSpec]
    configs: Mapping[ConfigKey, AgentConfig]
    workdir: Path
    published: Mapping[str, Mapping[str, str]]
    http_backend: str
    flush_wait_s: float
    time_scale: float | None = None  # a cap on simulated seconds per real second
    window_s: float = WINDOW_S
    event_logs: bool = False  # each device's event log next to its folder (--workdir)


def release_free_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc's `malloc_trim`; elsewhere
    nothing). The busiest steps leave the heap fragmented: measured at the end of a day, a
    fleet process's resident memory held about 17 KB per device that `malloc_trim` released
    (docs/simulator.md). Some tens of ms per call on a large heap: once a simulated hour."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
CONNECTIONS = 256  # HTTP connections a fleet process keeps open at most (its devices share them)
# Devices a fleet process runs at once in real time. Each holds at most one connection while it
# runs and none while it waits on its clock (`simulator.network.ShapedPort`), so no device
# waits for a connection (the margin covers connections a backend closes lazily). 32 rather
# than 128: 10-14 % less fleet CPU per update check in three interleaved rounds (docs/simulator.md).
DEVICES_AT_ONCE = 32


def _shard_fleet(shard: Shard) -> tuple[Fleet, AsyncHttpPort]:
    http = make_async_port(shard.http_backend, max_connections=CONNECTIONS)  # type: ignore[arg-type]
    fleet = Fleet(
        shard.scenario, shard.specs, configs=shard.configs, http=http,
        time=VirtualTime(
            shard.window_s, cap=shard.time_scale, housekeeping=release_free_memory,
            concurrency=DEVICES_AT_ONCE,
        ),
        workdir=shard.workdir,
        published=shard.published, event_logs=shard.event_logs,
    )  # fmt: skip
    return fleet, http


def _worker(shard: Shard, reached: Any, go: Any, live: Any) -> tuple[Metrics, tuple[float, float]]:
    """A worker process: build its devices and run them, stopping at each synchronisation
    point until the first process says go; with a `live` queue, send its progress tally there
    twice a second. Returns its metrics and the CPU seconds (user, system) it spent."""

    async def main() -> Metrics:
        fleet, http = _shard_fleet(shard)

        async def sync(at_s: float) -> None:
            await asyncio.to_thread(reached.put, fleet.learned())
            learned = await asyncio.to_thread(go.get)
            if learned is None:
                raise RunError("the run was stopped by its first process")
            fleet.commit(learned)

        tally = asyncio.create_task(_send_tallies(fleet, live)) if live else None
        try:
            return await fleet.run(sync, shard.flush_wait_s)
        finally:
            if tally:
                tally.cancel()
            await http.aclose()

    metrics = asyncio.run(main())
    cpu = os.times()
    return metrics, (cpu.user, cpu.system)


async def _send_tallies(fleet: Fleet, live: Any) -> None:
    while True:
        await asyncio.to_thread(live.put, (os.getpid(), _Tally.of(fleet)))
        await asyncio.sleep(0.5)


class _Workers:
    """The worker processes of a sharded run."""

    POLL_S = 1.0

    def __init__(self, shards: list[Shard], stack: contextlib.ExitStack, live: bool) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process with a running loop
        manager = stack.enter_context(ctx.Manager())
        self._reached = manager.Queue()
        self._go = [manager.Queue() for _ in shards]
        self._live = manager.Queue() if live else None
        self.tallies: dict[int, _Tally] = {}  # worker pid -> its latest progress tally
        pool = stack.enter_context(ProcessPoolExecutor(len(shards), mp_context=ctx))
        self._futures: list[Future[tuple[Metrics, tuple[float, float]]]] = [
            pool.submit(_worker, s, self._reached, go, self._live)
            for s, go in zip(shards, self._go, strict=True)
        ]

    async def reached(self) -> list[dict[str, Learned]]:
        """Wait until every worker stands at the synchronisation point; what each learned."""
        learned: list[dict[str, Learned]] = []
        while len(learned) < len(self._futures):
            try:
                learned.append(await asyncio.to_thread(self._reached.get, True, self.POLL_S))
            except queue.Empty:
                for future in self._futures:
                    if future.done():
                        future.result()  # raises what ended the worker
                        ended = "a fleet worker process ended before the run's end"
                        raise RunError(ended) from None
        return learned

    def go(self, learned: list[dict[str, Learned]]) -> None:
        for go in self._go:
            go.put(learned)

    def stop(self) -> None:
        """Tell every worker waiting at (or reaching) a synchronisation point to end."""
        for go in self._go:
            go.put(None)

    async def results(self) -> list[tuple[Metrics, tuple[float, float]]]:
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
            tally = _Tally.total([_Tally.of(fleet), *others])
            info = tally.line() if now_h < total_h else tally.ending()
            bar.update(task, completed=now_h, description=f"{now_h:5.1f}/{total_h:g} h",
                       info=info)  # fmt: skip
            await asyncio.sleep(0.25)


@dataclass(frozen=True)
class _Tally:
    """What the progress line shows of one shard, small enough to send between processes."""

    running: dict[str, int]  # version -> devices running it
    requests: int
    failed: int  # devices that met a failure
    rolled_back: int  # devices rolled back
    finished: int = 0  # devices done with the run's end

    @classmethod
    def of(cls, fleet: Fleet) -> _Tally:
        metrics = fleet.metrics
        running: dict[str, int] = {}
        for d in metrics.devices:
            running[d.version] = running.get(d.version, 0) + 1
        requests = sum(sum(c.values()) for c in metrics.statuses.values())
        failed = sum(bool(d.failure_log) for d in metrics.devices)
        rolled_back = sum(bool(d.rollbacks) for d in metrics.devices)
        return cls(running, requests, failed, rolled_back, fleet.finished)

    @classmethod
    def total(cls, tallies: list[_Tally]) -> _Tally:
        running: dict[str, int] = {}
        for t in tallies:
            for version, n in t.running.items():
                running[version] = running.get(version, 0) + n
        return cls(running, sum(t.requests for t in tallies), sum(t.failed for t in tallies),
                   sum(t.rolled_back for t in tallies),
                   sum(t.finished for t in tallies))  # fmt: skip

    def ending(self) -> str:
        """The line while the run's end waits for in-flight work."""
        n = sum(self.running.values())
        return (f"end of the scenario: waiting for {n - self.finished:,} of {n:,} devices "
                "(downloads in flight, last stats being delivered)")  # fmt: skip

    def line(self) -> str:
        n = max(sum(self.running.values()), 1)
        shares = " ".join(f"{v} {c / n:.0%}" for v, c in sorted(self.running.items()))
        return (f"{shares} · {self.requests:,} req · devices: {self.failed:,} failed, "
                f"{self.rolled_back:,} rolled back")  # fmt: skip
