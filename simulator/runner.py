"""One simulation run end to end: server, releases, fleet, timeline, progress, report.

`simulate(RunOptions(...))` is what `otasim run` does; tests call it directly. With no
`server_url` it starts the embedded reference server in its own process (so the fleet and
the server do not share a GIL), builds and signs the scenario's releases, and performs the
timeline through the admin API. Against an external server the timeline is the user's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import queue
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.config import AgentConfig
from agent.drivers.http import AsyncHttpPort, make_async_port

from simulator.device import file_digests, make_dist
from simulator.fleet import DeviceSpec, Fleet, Publication, ScaledClock, Timeline, plan_fleet
from simulator.metrics import Metrics
from simulator.release import create_keys
from simulator.report import RunInfo, build_report, write_report
from simulator.scenario import Scenario, load_scenario
from simulator.server.client import AdminClient, AdminError
from simulator.server.embedded import RunningServer, run_server

PRODUCTION = "production"


class RunError(Exception):
    """The run cannot start as asked (workdir in use, unreadable key file...)."""


@dataclass(frozen=True)
class RunOptions:
    scenario: str = "steady-rollout"
    devices: int | None = None  # None: the scenario's
    time_scale: float | None = None  # None: the scenario's
    seed: int = 1
    report_dir: Path = Path("otasim-report")
    workdir: Path | None = None  # None: a temporary folder, removed afterwards
    server_url: str | None = None  # None: the embedded server
    public_key_file: Path | None = None
    app_id: str | None = None
    http_backend: str = "aiohttp"
    progress: bool = True
    processes: int = 1  # fleet shards, one event loop each
    flush_wait_s: float = 600.0  # simulated seconds each device may spend delivering stats


class EmbeddedServer:
    """The reference server in a subprocess; `down()`/`up()` stop and restart it on one port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self._stack: ExitStack | None = None
        self._client: AdminClient | None = None
        self.running: RunningServer | None = None

    def up(self) -> None:
        stack = ExitStack()
        running = stack.enter_context(run_server(self.data_dir, in_process=False, port=self.port))
        self.port = urlsplit(running.url).port or 0
        self._client = stack.enter_context(AdminClient(running.url, running.admin_key))
        self._stack, self.running = stack, running

    def down(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._client = None

    def client(self) -> AdminClient:
        if self._client is None:
            raise AdminError(503, "server_down", "the embedded server is down")
        return self._client

    @property
    def url(self) -> str:
        assert self.running is not None, "up() first"
        return self.running.url


def simulate(options: RunOptions) -> tuple[dict[str, Any], Path]:
    """Run the scenario; write the report. Returns (report.json document, report.html path).

    Raises:
        ScenarioError: the scenario is invalid. RunError: bad options.
        RuntimeError / OSError: the embedded server could not start.
    """
    scenario = load_scenario(options.scenario)
    if options.app_id:
        scenario = dataclasses.replace(scenario, app_id=options.app_id)
    devices = options.devices or scenario.devices
    scale = options.time_scale or scenario.time_scale
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with ExitStack() as stack:
        workdir = stack.enter_context(_workdir(options.workdir))
        specs = plan_fleet(scenario, devices, options.seed)
        channels = sorted({s.channel for s in specs})
        server, setup = None, _Setup({}, {}, b"", "")
        if options.server_url is None:
            server = EmbeddedServer(workdir / "server")
            stack.callback(server.down)
            server.up()
            setup = _prepare(scenario, server.client(), channels, workdir, options.seed)
            url = server.url
        else:
            url = options.server_url.rstrip("/")
            setup = dataclasses.replace(setup, public_pem=_read_key(options.public_key_file))
        configs = {ch: _config(url, setup.public_pem, ch) for ch in channels}
        began = time.monotonic()
        fleet, published_s = asyncio.run(
            _run(scenario, specs, configs, options, scale, workdir, server, setup)
        )
        wall_s = time.monotonic() - began
        info = RunInfo(
            scenario=scenario,
            devices=devices,
            seed=options.seed,
            time_scale=scale,
            server_url=url,
            embedded=server is not None,
            started_at=started_at,
            wall_s=wall_s,
            published_s=published_s,
            server_received=_server_received(server, scenario.app_id, fleet.metrics),
            notes=_notes(scenario, server),
        )
        report = build_report(fleet.metrics, info)
        page = write_report(report, fleet.metrics, options.report_dir)
    return report, page


@dataclass(frozen=True)
class _Setup:
    releases: Mapping[str, Publication]
    published: Mapping[str, Mapping[str, str]]  # version -> file digests
    private_pem: bytes
    public_pem: str


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is None:
        # Memory-backed when the host has it: thousands of devices each fsync every commit,
        # and the host's disk is not the phone's; the atomic renames are the same.
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix="otasim-run-", dir=where) as tmp:
            yield Path(tmp)
        return
    if (given / "devices").exists() and any((given / "devices").iterdir()):
        raise RunError(f"{given}: holds the devices of an earlier run; choose an empty --workdir")
    given.mkdir(parents=True, exist_ok=True)
    yield given


def _prepare(
    scenario: Scenario, client: AdminClient, channels: list[str], workdir: Path, seed: int
) -> _Setup:
    """Keys, the releases' dist folders, the app and its channels on the embedded server."""
    private_pem, public_pem = create_keys()
    releases, published = {}, {}
    for release in scenario.releases:
        dist = make_dist(release, workdir / "releases" / release.version, seed)
        releases[release.version] = Publication(dist, release.delta)
        published[release.version] = file_digests(dist)
    client.create_app(scenario.app_id)
    for channel in {PRODUCTION, *channels}:
        public = channel == PRODUCTION
        client.set_channel(scenario.app_id, channel, public=public, allow_device_self_set=True)
    return _Setup(releases, published, private_pem, public_pem.decode())


def _read_key(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunError(f"{path}: cannot read the public key: {exc.strerror}") from None


def _config(url: str, public_pem: str, channel: str) -> AgentConfig:
    """The app's updater options."""
    return AgentConfig(
        update_url=f"{url}/updates",
        stats_url=f"{url}/stats",
        channel_url=f"{url}/channel_self",
        public_key=public_pem or None,
        default_channel=None if channel == PRODUCTION else channel,
    )


async def _run(
    scenario: Scenario,
    specs: list[DeviceSpec],
    configs: Mapping[str, AgentConfig],
    options: RunOptions,
    scale: float,
    workdir: Path,
    server: EmbeddedServer | None,
    setup: _Setup,
) -> tuple[Fleet, dict[str, float]]:
    """Run the fleet: shard 0 here (with the timeline and the progress display), the other
    shards in worker processes started together on a shared monotonic t0."""
    n = options.processes
    shards = [
        _Shard(scenario, specs[i::n], configs, scale, workdir, setup.published,
               options.http_backend, options.flush_wait_s)
        for i in range(n)
    ]  # fmt: skip
    timeline = Timeline(scenario, server, setup.releases, setup.private_pem) if server else None
    first = [s for s in scenario.timeline if s.at_s <= 0]
    records = [timeline.perform(s, 0.0) for s in first] if timeline else []
    with contextlib.ExitStack() as stack:
        workers = _Workers(shards[1:], stack, options.progress) if n > 1 else None
        fleet, http = _shard_fleet(shards[0])
        try:
            fleet.metrics.steps.extend(records)
            later = [s for s in scenario.timeline if s.at_s > 0]
            tasks = [asyncio.create_task(timeline.run(fleet, later))] if timeline else []
            if options.progress:
                tasks.append(asyncio.create_task(_progress(fleet, workers)))
            t0 = await workers.start() if workers else None
            await fleet.run(options.flush_wait_s, t0=t0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for metrics in await workers.results() if workers else []:
                fleet.metrics.merge(metrics)
        finally:
            await http.aclose()
    return fleet, dict(timeline.published_s) if timeline else {}


@dataclass(frozen=True)
class _Shard:
    """One process's share of the fleet (picklable)."""

    scenario: Scenario
    specs: list[DeviceSpec]
    configs: Mapping[str, AgentConfig]
    scale: float
    workdir: Path
    published: Mapping[str, Mapping[str, str]]
    http_backend: str
    flush_wait_s: float


def _shard_fleet(shard: _Shard) -> tuple[Fleet, AsyncHttpPort]:
    http = make_async_port(shard.http_backend, max_connections=256)  # type: ignore[arg-type]
    fleet = Fleet(
        shard.scenario, shard.specs, configs=shard.configs, http=http,
        clock=ScaledClock(shard.scale), workdir=shard.workdir, published=shard.published,
    )  # fmt: skip
    return fleet, http


def _worker(shard: _Shard, ready: Any, go: Any, live: Any) -> Metrics:
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

    def __init__(self, shards: list[_Shard], stack: contextlib.ExitStack, live: bool) -> None:
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


def _server_received(server: EmbeddedServer | None, app_id: str, metrics: Metrics) -> int | None:
    """How many of the actions devices sent the embedded server recorded."""
    if server is None:
        return None
    stats: dict[str, Any] = server.client().stats(app_id)
    sent = set(metrics.actions)
    versions = stats["versions"].values()
    return sum(int(n) for v in versions for a, n in v["actions"].items() if a in sent)


def _notes(scenario: Scenario, server: EmbeddedServer | None) -> tuple[str, ...]:
    if server is not None or not scenario.timeline:
        return ()
    steps = ", ".join(
        f"{s.action} {s.version or ''} at {s.at_s / 3600:g} h" for s in scenario.timeline
    )
    return (f"external server: the scenario's timeline is yours to perform ({steps})",
            "external server: stats loss and tampering cannot be checked from here")  # fmt: skip
