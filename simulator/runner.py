"""One simulation run end to end: server, releases, fleet, timeline, progress, report.

`simulate(RunOptions(...))` is what `otasim run` does; tests call it directly. With no
`server_url` it starts the embedded reference server in its own process (so the fleet and
the server do not share a GIL), builds and signs the scenario's releases, and performs the
timeline through the admin API. Against an external server the timeline is the user's.
Running the fleet itself, in one process or several (`--processes`), is `simulator.shards`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.bundles.unzip import safe_unzip
from agent.config import AgentConfig
from agent.errors import AgentError
from agent.protocol.profiles import DEFAULT_PROFILE
from agent.protocol.registry import DEFAULT_DIALECT

from simulator.app import make_dist
from simulator.clock import WINDOW_S
from simulator.compare import comparison
from simulator.device import ConfigKey, file_digests
from simulator.errors import RunError
from simulator.fleet import DeviceSpec, plan_fleet
from simulator.leftovers import remove_dead
from simulator.metrics import Metrics
from simulator.preflight import (
    Endpoints,
    check_writable,
    endpoints,
    probe_channel_flags,
    probe_updates,
)
from simulator.publish import DIALECT_TRUST
from simulator.release import create_keys
from simulator.report import RunInfo, build_report, write_report
from simulator.scenario import Scenario, load_scenario, with_dialect
from simulator.server.client import AdminClient, AdminError
from simulator.server.dialects import SERVER_DIALECTS
from simulator.server.embedded import RunningServer, run_server
from simulator.shards import FleetRun, Shard, run_fleet
from simulator.timeline import Publication, Timeline

PRODUCTION = "production"


@dataclass(frozen=True)
class RunOptions:
    scenario: str = "steady-rollout"
    devices: int | None = None  # None: the scenario's
    time_scale: float | None = None  # a cap on simulated s per real s; None: the scenario's
    seed: int = 1
    report_dir: Path = Path("otasim-report")
    workdir: Path | None = None  # None: a temporary folder, removed afterwards
    server_url: str | None = None  # None: the embedded server (unless the URLs below are given)
    updates_url: str | None = None  # each: the plugin's updateUrl/statsUrl/channelUrl, else
    stats_url: str | None = None  # derived from server_url
    channel_url: str | None = None
    plugin: str = DEFAULT_PROFILE  # the plugin generation the devices reproduce
    dialect: str | None = None  # every device speaks this dialect; None: the scenario's mix
    expect_releases: Mapping[str, Path] = dataclasses.field(default_factory=dict)  # version ->
    # the release as published (dist folder or zip): makes tamper/byte-exact checks measurable
    artefact_retries: int | None = None  # None: AgentConfig's default (agent/core/retry.py)
    artefact_retry_window_s: float | None = None
    public_key_file: Path | None = None
    app_id: str | None = None
    http_backend: str = "streams"
    progress: bool = True
    processes: int = 1  # fleet shards, one event loop each
    flush_wait_s: float = 600.0  # simulated seconds each device may spend delivering stats
    window_s: float = WINDOW_S  # a clock step's lookahead (concurrency, not resolution)
    baseline: Mapping[str, Any] | None = None  # an earlier run's report.json to compare with


class EmbeddedServer:
    """The reference server in a subprocess; `down()`/`up()` stop and restart it on one port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = 0
        self._stack: ExitStack | None = None
        self._client: AdminClient | None = None
        self.running: RunningServer | None = None
        self.cpu_s: tuple[float, float] | None = (0.0, 0.0)  # of the stopped processes

    def up(self) -> None:
        stack = ExitStack()
        running = stack.enter_context(run_server(self.data_dir, in_process=False, port=self.port))
        self.port = urlsplit(running.url).port or 0
        self._client = stack.enter_context(AdminClient(running.url, running.admin_key))
        self._stack, self.running = stack, running

    def down(self) -> None:
        if self._stack is not None:
            self.cpu_s = self.cpu()
            self._stack.close()
        self._stack = self._client = None

    def cpu(self) -> tuple[float, float] | None:
        """CPU seconds (user, system) the server's processes spent so far (None: unknown)."""
        if self.cpu_s is None or self._stack is None or self.running is None:
            return self.cpu_s
        now = _process_cpu(self.running.pid)
        return None if now is None else (self.cpu_s[0] + now[0], self.cpu_s[1] + now[1])

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
    with _removed_if_left_empty(options.report_dir):
        return _simulate(options)


def _simulate(options: RunOptions) -> tuple[dict[str, Any], Path]:
    scenario = load_scenario(options.scenario)
    if options.app_id:
        scenario = dataclasses.replace(scenario, app_id=options.app_id)
    if options.dialect:
        scenario = with_dialect(scenario, options.dialect)
    devices = options.devices or scenario.devices
    cap = options.time_scale or scenario.time_scale
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    specs = plan_fleet(scenario, devices, options.seed)
    dialects = sorted({s.dialect for s in specs})
    external = _external(options, dialects)
    check_writable([options.report_dir, *([options.workdir] if options.workdir else [])])
    public_pem = _read_key(options.public_key_file) if external else ""
    capgo = external.get(DEFAULT_DIALECT) if external else None  # the probes speak Capgo
    preflight = probe_updates(capgo, scenario.app_id, options.plugin, public_pem) if capgo else None
    flags = probe_channel_flags(capgo, scenario.app_id, options.plugin) if capgo else None
    with ExitStack() as stack:
        workdir = stack.enter_context(_workdir(options.workdir))
        keys = sorted({(s.channel, s.dialect) for s in specs})
        channels = sorted({channel for channel, _ in keys})
        server, setup = None, _Setup({}, {}, b"", "")
        if external is None:
            server = EmbeddedServer(workdir / "server")
            stack.callback(server.down)
            server.up()
            client = server.client()
            setup = _prepare(scenario, client, channels, workdir, options.seed)
            _register_signing_keys(client, scenario.app_id, dialects, setup.private_pem)
            urls = {d: endpoints(server.url, dialect=d) for d in dialects}
        else:
            urls = external
            expected = _expected(options.expect_releases, workdir / "expected")
            setup = dataclasses.replace(setup, published=expected, public_pem=public_pem)
        configs = {(ch, d): _config(urls[d], _trust(d, setup), ch, d, options) for ch, d in keys}
        server_cpu = server.cpu() if server else None
        began = time.monotonic()
        done, published_s = asyncio.run(
            _run(scenario, specs, configs, options, cap, workdir, server, setup)
        )
        wall_s = time.monotonic() - began
        server_end = server.cpu() if server else None
        info = RunInfo(
            scenario=scenario,
            devices=devices,
            seed=options.seed,
            time_scale=cap,
            server_url=urls[dialects[0]].describe(),
            embedded=server is not None,
            plugin=options.plugin,
            dialects=dict(Counter(s.dialect for s in specs)),
            expected_versions=tuple(sorted(options.expect_releases)),
            started_at=started_at,
            wall_s=wall_s,
            published_s=published_s,
            server_received=_server_received(server, scenario.app_id, done.fleet.metrics),
            notes=_notes(scenario, server, cap, done.fleet.metrics, preflight),
            wall={
                "fleet_cpu_s": round(sum(done.cpu_s), 1),
                "fleet_system_s": round(done.cpu_s[1], 1),
                "server_cpu_s": (
                    round(sum(server_end) - sum(server_cpu), 1)
                    if server_end and server_cpu
                    else None
                ),
                "processes": options.processes,
                "clock_steps": done.steps,
            },
            server_findings=(flags,) if flags else (),
            device_logs=(workdir / "devices").resolve() if options.workdir else None,
        )
        report = build_report(done.fleet.metrics, info)
        if options.baseline is not None:
            report["comparison"] = comparison(options.baseline, report)
        page = write_report(report, done.fleet.metrics, info, options.report_dir)
    return report, page


@dataclass(frozen=True)
class _Setup:
    releases: Mapping[str, Publication]
    published: Mapping[str, Mapping[str, str]]  # version -> file digests
    private_pem: bytes
    public_pem: str


@contextlib.contextmanager
def _removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Whatever ends the run (a failed pre-flight, an error, Ctrl-C, SIGTERM), the report
    folder and the parents this run created for it do not stay behind empty."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        yield
    except BaseException:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):  # not empty, or gone: left as it is
                path.rmdir()
        raise


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is None:
        # Memory-backed when the host has it: thousands of devices each fsync every commit,
        # and the host's disk is not the phone's; the atomic renames are the same. Named
        # after the process, so that a leftover says whose it was.
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        # a run killed outright (SIGKILL, OOM) left its folder: removed by the next run
        remove_dead(Path(where or tempfile.gettempdir()), "otasim-run")
        prefix = f"otasim-run-{os.getpid()}-"
        with tempfile.TemporaryDirectory(prefix=prefix, dir=where) as tmp:
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


def _register_signing_keys(
    client: AdminClient, app_id: str, dialects: Sequence[str], private_pem: bytes
) -> None:
    """Give the embedded server the run's key for the dialects whose server signs answers
    (Expo: its rollbacks and rollBackToEmbedded directives then reach signed devices)."""
    for name in dialects:
        if SERVER_DIALECTS[name].signing_key is not None:
            client.set_signing_key(app_id, name, private_pem)


def _read_key(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunError(f"{path}: cannot read the public key: {exc.strerror}") from None


def _external(options: RunOptions, dialects: list[str]) -> dict[str, Endpoints] | None:
    """The external server's URLs for each dialect of the fleet, or None for the embedded
    server.

    Raises:
        RunError: URLs missing (a stats or channel URL alone) or not http(s), or explicit
            URLs for a fleet that mixes dialects (they would fit only one).
    """
    given = (options.server_url, options.updates_url, options.stats_url, options.channel_url)
    if not any(given):
        return None
    if len(dialects) > 1 and any(given[1:]):
        raise RunError("a fleet mixing dialects takes --server only, not explicit URLs")
    try:
        return {d: endpoints(*given, dialect=d) for d in dialects}
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _expected(releases: Mapping[str, Path], into: Path) -> dict[str, dict[str, str]]:
    """{version: file digests} of each release as published (a dist folder or a bundle zip).

    Raises:
        RunError: a path that is neither a folder nor a readable, safe zip.
    """
    digests = {}
    for version, path in sorted(releases.items()):
        if path.is_dir():
            digests[version] = file_digests(path)
            continue
        try:
            into.mkdir(parents=True, exist_ok=True)
            safe_unzip(path, into / version)
        except (OSError, ValueError, AgentError) as exc:
            raise RunError(f"--expect-release {version}={path}: {exc}") from None
        digests[version] = file_digests(into / version)
    return digests


def _trust(dialect: str, setup: _Setup) -> dict[str, str | None]:
    """What the app embeds to verify releases: Capgo's public key, or for another dialect its
    own form of the publisher's key (derived from the embedded run's key; for your own server,
    the --public-key file holds it: an Expo certificate, a CodePush public key). Capawesome
    reads Capgo's key (a dialect without keys, Appflow, ignores it)."""
    if dialect not in DIALECT_TRUST:
        return {"public_key": setup.public_pem or None}
    if setup.private_pem:
        return {"code_signing_pem": DIALECT_TRUST[dialect](setup.private_pem)}
    return {"code_signing_pem": setup.public_pem or None}


def _config(
    urls: Endpoints,
    trust: Mapping[str, str | None],
    channel: str,
    dialect: str,
    options: RunOptions,
) -> AgentConfig:
    """The app's updater options."""
    retry = {
        name: value
        for name in ("artefact_retries", "artefact_retry_window_s")
        if (value := getattr(options, name)) is not None
    }
    try:
        return AgentConfig(
            update_url=urls.updates,
            stats_url=urls.stats,
            channel_url=urls.channel,
            **trust,
            default_channel=None if channel == PRODUCTION else channel,
            plugin=options.plugin,
            dialect=dialect,
            # the rate check counts real time, which a device's virtual waits would fill
            # (a step or a barrier held up): modelled trickles are not cut, as the deadline
            stall_window_s=0,
            **retry,
        )
    except ValueError as exc:
        raise RunError(str(exc)) from None


async def _run(
    scenario: Scenario,
    specs: list[DeviceSpec],
    configs: Mapping[ConfigKey, AgentConfig],
    options: RunOptions,
    cap: float | None,
    workdir: Path,
    server: EmbeddedServer | None,
    setup: _Setup,
) -> tuple[FleetRun, dict[str, float]]:
    """Run the fleet in `options.processes` shards (see `simulator.shards`), performing the
    timeline at its synchronisation points."""
    n = options.processes
    shards = [
        Shard(scenario, specs[i::n], configs, workdir, setup.published,
              options.http_backend, options.flush_wait_s, cap, options.window_s,
              event_logs=options.workdir is not None)
        for i in range(n)
    ]  # fmt: skip
    dialects = tuple(sorted({d for _, d in configs}))
    timeline = (
        Timeline(scenario, server, setup.releases, setup.private_pem, dialects) if server else None
    )
    done = await run_fleet(shards, timeline, options.progress)
    return done, dict(timeline.published_s) if timeline else {}


def _server_received(server: EmbeddedServer | None, app_id: str, metrics: Metrics) -> int | None:
    """How many of the actions devices sent the embedded server recorded."""
    if server is None:
        return None
    stats: dict[str, Any] = server.client().stats(app_id)
    sent = set(metrics.actions)
    versions = stats["versions"].values()
    return sum(int(n) for v in versions for a, n in v["actions"].items() if a in sent)


def _notes(
    scenario: Scenario,
    server: EmbeddedServer | None,
    cap: float | None,
    metrics: Metrics,
    preflight: str | None,
) -> tuple[str, ...]:
    """What this run could not keep faithful to simulated time (the fidelity guard)."""
    notes = []
    timeouts = metrics.timeouts
    if timeouts:
        notes.append(
            f"{timeouts:,} requests got no answer within their timeout in real time (the "
            "server hung or the machine was overloaded): each counted as the modelled timeout, "
            "so those devices' results depend on the machine"
        )
    if cap:
        notes.append(f"time capped at {cap:g} simulated seconds per real second (--time-scale)")
    if server is None:
        notes.append(f"pre-flight: the server answered a new device: {preflight}")
        notes.append(
            "external server: its own clock is real time, so whatever it does by time (rate "
            "limits, expiries, timestamps, rollout schedules) sees the whole simulated run "
            "compressed into the wall-clock time the run took"
        )
        if scenario.timeline:
            steps = ", ".join(
                f"{s.action} {s.version or ''} at {s.at_s / 3600:g} h" for s in scenario.timeline
            )
            notes.append(f"external server: the scenario's timeline is yours to perform ({steps})")
    return tuple(notes)


def _process_cpu(pid: int) -> tuple[float, float] | None:
    """CPU seconds (user, system) of a live process, from /proc (None where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick
