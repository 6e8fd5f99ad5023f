"""A virtual device: a real `AsyncDevice` in its own folder, driven by a simulated app user.

The agent does all the real work (check, download, verify, decrypt, unzip, swap, roll back).
This module only models *behaviour*: when the user opens, leaves or kills the app, when the
phone reboots, and how a bundle behaves when the web view boots it. That outcome comes from
the unpacked bundle itself, as a real app's would:

- no `index.html` -> the page never loads, `notifyAppReady()` never comes;
- `otasim-behaviour.json` (written by `make_dist`) -> `crash_on_boot` probability per platform;
- otherwise the app starts and calls `notifyAppReady()` for the boot it was started as.

After each boot the files of the booted bundle are compared with what was published for that
version (when the fleet published it): a mismatch counts as a tampered activation. Identical
files are then hard-linked from a content-addressed pool (`BundlePool`) so that disk use does
not grow as devices x bundle size. This is done here, after the agent has verified and
committed the bundle, because the agent's store has no such hook.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.api import AgentObserver, BundleView
from agent.drivers.http import AsyncHttpPort, HttpRequest, HttpResponse, TransportTimeout
from agent.errors import AgentError
from agent.protocol.profiles import PluginProfile
from agent.store import disk_free

from simulator.clock import DeviceClock, VirtualTime
from simulator.metrics import BUILTIN, DeviceOutcome, Metrics
from simulator.scenario import Behaviour, DiskFull, Release
from simulator.streams import DeviceRandom

BEHAVIOUR_FILE = "otasim-behaviour.json"
DAY_S = 86_400.0
RELAUNCH_AFTER_CRASH_S = (60.0, 900.0)  # the user tries again a little later


def make_dist(release: Release, out: Path, seed: int) -> Path:
    """Write the web assets of `release` into `out` (a dist folder ready to publish).

    The bundle holds `size_kb` of incompressible bytes (so downloads weigh what they say),
    and its behaviour file; without `boots` it has no index.html.

    Raises:
        OSError: `out` cannot be written.
    """
    out.mkdir(parents=True, exist_ok=True)
    if release.boots:
        (out / "index.html").write_text(
            f'<!doctype html><title>{release.version}</title><script src="app.js"></script>\n'
        )
    payload = random.Random(f"{seed}:{release.version}").randbytes(release.size_kb * 1024)
    (out / "app.js").write_bytes(payload)
    behaviour = {
        "version": release.version,
        "crash_on_boot": dict(release.crash_on_boot),
        "start_s": release.start_s,
    }
    (out / BEHAVIOUR_FILE).write_text(json.dumps(behaviour, sort_keys=True))
    return out


def file_digests(folder: Path) -> dict[str, str]:
    """{relative path: sha256 hex} of every file under `folder`."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digests[path.relative_to(folder).as_posix()] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return digests


class BundlePool:
    """Content-addressed files shared by hard links between devices' verified bundles."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.linked = 0

    def share(self, bundle: Path, digests: Mapping[str, str]) -> None:
        """Replace each file of `bundle` by a hard link to the pooled copy of its content."""
        for rel, digest in digests.items():
            path, pooled = bundle / rel, self.folder / digest
            try:
                if not pooled.exists():
                    with contextlib.suppress(FileExistsError):  # another process won the race
                        os.link(path, pooled)
                        continue
                if os.stat(path).st_ino == os.stat(pooled).st_ino:
                    continue
                tmp = path.with_name(f".{path.name}.pool")
                os.link(pooled, tmp)
                os.replace(tmp, path)
                self.linked += 1
            except FileNotFoundError:
                return  # the agent deleted the bundle meanwhile: nothing to share


@dataclass(frozen=True, slots=True)
class BundleTraits:
    loads: bool  # has an index.html
    crash_p: float  # chance the app crashes when it boots this bundle
    start_s: float = 0.0  # time from boot to notifyAppReady()


def read_traits(bundle: Path, platform: str) -> BundleTraits:
    """What the simulated app finds in an unpacked bundle (no behaviour file: boots fine)."""
    try:
        spec = json.loads((bundle / BEHAVIOUR_FILE).read_text())
        crash_p = float(spec.get("crash_on_boot", {}).get(platform, 0.0))
        start_s = float(spec.get("start_s", 0.0))
    except (OSError, ValueError, AttributeError, TypeError):
        crash_p = start_s = 0.0
    return BundleTraits((bundle / "index.html").is_file(), crash_p, start_s)


ConfigKey = tuple[str, str]
"""(channel, dialect): the devices sharing one app config."""


@dataclass(frozen=True)
class DeviceContext:
    """What every device of a fleet shares."""

    configs: Mapping[ConfigKey, AgentConfig]  # per channel and dialect
    # a shaped port per device, on its own random stream and clock
    http: Callable[[DeviceOutcome, DeviceRandom, DeviceClock], AsyncHttpPort]
    time: VirtualTime  # the run's
    metrics: Metrics
    pool: BundlePool
    published: Mapping[str, Mapping[str, str]]  # version -> file digests, when we published it
    profile: PluginProfile  # the plugin generation the devices reproduce


class StatsWatch:
    """The device's HTTP port, watching one thing the agent cannot judge: whether the server
    took a stats *batch* as a batch. Capgo answers an array with per-event `results`; a
    server that reads one object answers `{"status":"ok"}` and stores nothing useful (the
    device, faithful to its plugin, counts the batch as sent). Those events are counted in
    `Metrics.stats_unconfirmed`."""

    def __init__(self, inner: AsyncHttpPort, stats_url: str, metrics: Metrics) -> None:
        self._inner, self._stats_url, self._metrics = inner, stats_url, metrics
        self.stream = inner.stream
        self.aclose = inner.aclose

    async def send(self, request: HttpRequest) -> HttpResponse:
        response = await self._inner.send(request)
        if request.url == self._stats_url and response.status == 200 and request.body:
            self._metrics.stats_answer(request.body, response.body)
        return response


class VirtualDevice(AgentObserver):
    """One phone: identity, behaviour, an agent in `folder` while the app process lives."""

    def __init__(
        self,
        ctx: DeviceContext,
        identity: DeviceIdentity,
        behaviour: Behaviour,
        outcome: DeviceOutcome,
        folder: Path,
        seed: int,
        *,
        disk_full: DiskFull | None = None,
    ) -> None:
        self.ctx, self.identity, self.behaviour, self.outcome = ctx, identity, behaviour, outcome
        self.folder = folder
        self.disk_full = disk_full  # this phone's disk is full for that period
        self.clock = ctx.time.clock()  # this device's simulated time, exact
        self.rng = DeviceRandom(seed, 0)  # the user's and the app's decisions
        self.agent_rng = DeviceRandom(seed, 1)  # the agent's jitter
        self.config_key = (outcome.channel, outcome.dialect)
        stats_url = ctx.configs[self.config_key].stats_url if ctx.configs else ""
        shaped = ctx.http(outcome, DeviceRandom(seed, 2), self.clock)
        self.http = StatsWatch(shaped, stats_url, ctx.metrics)
        self.device: AsyncDevice | None = None
        self.foreground = False
        self.boots: list[tuple[int, str, float]] = []  # (boot id, bundle id, when) to evaluate
        # (boot id, version, when the app is up, when it booted) for a slow-starting app
        self.ready: tuple[int, str, float, float] | None = None
        self.traits: dict[str, BundleTraits] = {}  # bundle id -> how it boots (read once)
        self.next_open = 0.0

    # -- observer: the agent reports; metrics record ---------------------------------------

    def on_request(
        self,
        name: str,
        method: str,
        url: str,
        status: int | None,
        elapsed_s: float,
        response_bytes: int,
        error: AgentError | None,
    ) -> None:
        self.ctx.metrics.request(name, status, elapsed_s, response_bytes, error is not None)
        if isinstance(error, TransportTimeout):
            self.ctx.metrics.timeouts += 1

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        if name == "appReloaded":
            self.boots.append((payload["boot_id"], payload["bundle"], self.sim_now()))
        elif name == "updateCheckResult":
            self.ctx.metrics.check_result(self.outcome, self.ctx.profile, dict(payload))

    def on_stat(self, action: str, version_name: str) -> None:
        self.ctx.metrics.stat(self.outcome, action, version_name, self.sim_now())

    def sim_now(self) -> float:
        return self.clock.t

    # -- the user ----------------------------------------------------------------------------

    async def live(self, end_s: float) -> None:
        """Use the app until simulated time `end_s` (seconds since the fleet's start).

        Every deadline (the user's, the agent's timers, the app's notifyAppReady) is met at
        its exact simulated time, in order; nothing happens before the run's time zero."""
        await self.clock.sleep(0)  # time zero: after the timeline's first steps
        b, rng = self.behaviour, self.rng
        self.next_open = self.sim_now() + rng.random() * self._gap()
        next_reboot = self.sim_now() + self._exp(
            DAY_S / b.reboots_per_day if b.reboots_per_day else 0
        )
        session_end = (
            self.sim_now() + self._exp(b.session_min * 60) if self.foreground else float("inf")
        )
        while True:
            now = self.sim_now()
            timers = self._timer_due()
            ready_at = self.ready[2] if self.ready else float("inf")
            wake = min(self.next_open, next_reboot, session_end, timers, ready_at, end_s)
            if wake > now:
                await self.clock.sleep_until(wake)
                now = wake
            if now >= end_s:
                return
            pending = self.ready
            if self.device is not None and timers <= now:
                await self._call(self.device.run_timers)  # a timeout due now comes first
            if pending is not None and self.ready == pending and ready_at <= now:
                await self._app_ready(*pending[:3])
            if now >= next_reboot:
                self._die()
                next_reboot = now + self._exp(DAY_S / b.reboots_per_day)
            if now >= session_end:
                await self._leave()
                session_end = float("inf")
            if now >= self.next_open:
                await self.open_app()
                session_end = self.sim_now() + self._exp(b.session_min * 60)
                self.next_open = session_end + self._gap()

    def _gap(self) -> float:
        """Time between two sessions: sessions_per_day on average, minus the session itself."""
        b = self.behaviour
        mean = max(DAY_S / b.sessions_per_day - b.session_min * 60, 60.0)
        return self._exp(mean)

    def _exp(self, mean_s: float) -> float:
        return self.rng.expovariate(1 / mean_s) if mean_s > 0 else float("inf")

    def _timer_due(self) -> float:
        deadline = self.device.next_deadline() if self.device is not None else None
        return float("inf") if deadline is None else deadline - self.ctx.time.epoch

    async def open_app(self) -> None:
        """The user brings the app to the foreground (a cold start when it is not running)."""
        if self.device is None:
            self.device = await self._start_process()
            await self._call(self.device.launch)
        elif not self.foreground:
            await self._call(self.device.foreground)
        self.foreground = self.device is not None

    async def _start_process(self) -> AsyncDevice:
        """The app process starts: the agent opens (and repairs) the device's folder."""
        return await AsyncDevice.open(
            self.folder,
            self.ctx.configs[self.config_key],
            self.identity,
            self.http,
            clock=self.clock,
            rng=self.agent_rng,
            observer=self,
            durable=False,  # kills are simulated, power loss is not: atomic renames, no fsync
            free_space=self._free_space if self.disk_full else disk_free,
        )

    def _free_space(self, folder: Path) -> int:
        """The store's free-space answer: none while the scenario's disk-full period lasts on
        this device's clock (counted as a `disk_full` fault), the real disk's otherwise."""
        full = self.disk_full
        if full is not None and full.from_s <= self.clock.t < full.until_s:
            self.ctx.metrics.faults["disk_full"] += 1
            return 0
        return disk_free(folder)

    async def _leave(self) -> None:
        if self.device is None:
            return
        self.foreground = False
        if self.rng.random() < self.behaviour.kill_share:
            self._die()
        else:
            await self._call(self.device.background)

    def _die(self) -> None:
        """The app process ends (killed, crashed, phone rebooted)."""
        if self.device is not None:
            self.device.kill()
        self.device, self.foreground, self.ready = None, False, None
        self.boots.clear()

    async def _call(self, action: Callable[[], Any]) -> None:
        try:
            await action()
        except AgentError as exc:  # a local failure the agent could not absorb
            self.outcome.failures[getattr(exc, "action", type(exc).__name__)] += 1
        await self._settle_boots()

    # -- the app: what a boot of a bundle does ------------------------------------------------

    async def _settle_boots(self) -> None:
        if not self.boots or self.device is None:
            return
        boot_id, bundle_id, booted_at = self.boots[-1]
        self.boots.clear()
        status = self.device.status()
        if status.boot_id != boot_id or status.current.id != bundle_id:
            return
        version = BUILTIN if bundle_id == BUILTIN else status.current.version
        traits = self._traits(bundle_id, version, status.current.path)
        metrics, now = self.ctx.metrics, self.sim_now()
        if traits.crash_p and self.rng.random() < traits.crash_p:
            metrics.ran(self.outcome, version, now, confirmed=False)
            self.outcome.crashes += 1
            self._die()
            self.next_open = now + self.rng.uniform(*RELAUNCH_AFTER_CRASH_S)
        elif not traits.loads:
            metrics.ran(self.outcome, version, now, confirmed=False)  # blank page, no ready
        elif traits.start_s > 0:
            metrics.ran(self.outcome, version, now, confirmed=False)
            self.ready = (boot_id, version, booted_at + traits.start_s, booted_at)
        else:
            await self._app_ready(boot_id, version, now)

    async def _app_ready(self, boot_id: int, version: str, at: float) -> None:
        """The web app calls notifyAppReady() for the boot it was started as."""
        self.ready = None
        if self.device is None:
            return
        await self.device.notify_app_ready(boot_id)
        status = self.device.status()
        if status.boot_id == boot_id and status.boot_confirmed:
            self.ctx.metrics.ran(self.outcome, version, at, confirmed=True)

    def _traits(self, bundle_id: str, version: str, path: Path | None) -> BundleTraits:
        """How this bundle behaves (read once per bundle); checks it and shares its files."""
        traits = self.traits.get(bundle_id)
        if traits is not None:
            return traits
        if path is None:
            traits = BundleTraits(loads=True, crash_p=0.0)
        else:
            digests = file_digests(path)
            expected = self.ctx.published.get(version)
            if expected is None:
                self.outcome.unchecked.add(version)
            elif digests != expected:  # a file changed, added or missing: not what was published
                self.outcome.tampered += 1
            traits = read_traits(path, self.identity.platform)
            self.ctx.pool.share(path, digests)
        self.traits[bundle_id] = traits
        return traits

    # -- the end of the run -----------------------------------------------------------------

    async def finish(self, flush_wait_s: float) -> None:
        """Record the final state: deliver queued stats (bounded), check the device can boot."""
        try:
            if self.device is None:
                self.device = await self._start_process()
            await self.device.flush_stats(flush_wait_s)
            status = self.device.status()
        except AgentError as exc:
            self.outcome.failures[getattr(exc, "action", type(exc).__name__)] += 1
            self.outcome.unbootable = True
            return
        finally:
            if self.device is not None:
                await self.device.aclose()
                self.device = None
        self.outcome.stats_pending = status.pending_stats
        # Unbootable: neither the bundle the next cold start boots nor its fallback can load.
        self.outcome.unbootable = not (
            _loads(status.next or status.current) or _loads(status.fallback)
        )


def _loads(bundle: BundleView) -> bool:
    return bundle.path is None or (bundle.path / "index.html").is_file()
