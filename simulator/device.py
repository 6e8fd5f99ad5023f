"""A virtual device: a real `AsyncDevice` in its own folder, driven by a simulated app user.

The agent does all the real work (check, download, verify, decrypt, unzip, swap, roll back).
This module drives the app model of `simulator.app` (the user's sessions, the boot of each
bundle, slow starts: the decisions the Locust users share) on the run's virtual time.

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
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.aio import AsyncDevice
from agent.drivers.api import AgentObserver, BundleView
from agent.drivers.http import (
    AsyncHttpPort,
    AsyncStreamedResponse,
    HttpRequest,
    HttpResponse,
    TransportTimeout,
)
from agent.errors import AgentError
from agent.protocol.profiles import PluginProfile
from agent.security import codepush
from agent.store import disk_free

from simulator.app import BUILTIN_TRAITS, AppUser, BundleTraits, read_traits
from simulator.clock import DeviceClock, VirtualTime
from simulator.metrics import BUILTIN, DeviceOutcome, Metrics
from simulator.scenario import Behaviour, DiskFull
from simulator.streams import DeviceRandom


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


LOG_LINES = 20_000  # per device: a device in a retry loop does not fill the disk
LOG_BUFFER = 64  # lines a device holds before appending them to its log


class EventLog:
    """One device's event log (`otasim run --workdir`): what its agent reported (requests,
    plugin events, stats, retries) and what happened to the app, each at its simulated time.
    Appended a few lines at a time; at most `LOG_LINES` lines, then how many were left out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.count = 0

    def add(self, t: float, text: str) -> None:
        self.count += 1
        if self.count <= LOG_LINES:
            self.lines.append(f"{t:12.3f} s  {text}\n")
            if len(self.lines) >= LOG_BUFFER:
                self.flush()

    def flush(self) -> None:
        if self.lines:
            with self.path.open("a", encoding="utf-8") as f:
                f.writelines(self.lines)
            self.lines.clear()

    def close(self) -> None:
        if self.count > LOG_LINES:
            self.lines.append(f"... and {self.count - LOG_LINES:,} more, not logged\n")
        self.flush()


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
    devices: Path  # the device folders' folder: device i's is `folder_name(i)` in it


def folder_name(index: int) -> str:
    """The name of device `index`'s folder."""
    return f"{index:06d}"


class StatsWatch:
    """The device's HTTP port, watching one thing the agent cannot judge: whether the server
    took a stats *batch* as a batch. Capgo answers an array with per-event `results`; a
    server that reads one object answers `{"status":"ok"}` and stores nothing useful (the
    device, faithful to its plugin, counts the batch as sent). Those events are counted in
    `Metrics.stats_unconfirmed`."""

    __slots__ = ("_inner", "_metrics", "_stats_url")  # one per device

    def __init__(self, inner: AsyncHttpPort, stats_url: str, metrics: Metrics) -> None:
        self._inner, self._stats_url, self._metrics = inner, stats_url, metrics

    def stream(self, request: HttpRequest) -> AbstractAsyncContextManager[AsyncStreamedResponse]:
        return self._inner.stream(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def send(self, request: HttpRequest) -> HttpResponse:
        response = await self._inner.send(request)
        if request.url == self._stats_url and response.status == 200 and request.body:
            self._metrics.stats_answer(request.body, response.body)
        return response


class VirtualDevice(AgentObserver):
    """One phone: identity, behaviour, an agent in `folder` while the app process lives.

    Between sessions most app processes sit in the background with nothing to do until the
    user comes back. Such a device lets its agent go while it sleeps (`asleep`: the process
    lives, its agent is not in memory) and opens its folder again when it wakes, when the
    agent says one rebuilt from disk then behaves as the live one (`AsyncDevice.resumable`):
    a fleet's idle devices then hold no agent, no store, no caches, and each holds only its
    own attributes (slots: no instance dict), its folder named from its index when needed."""

    __slots__ = (
        "agent_rng",
        "app",
        "asleep",
        "clock",
        "config_key",
        "ctx",
        "device",
        "disk_full",
        "foreground",
        "http",
        "identity",
        "log",
        "next_open",
        "outcome",
        "traits",
    )

    sleep_drops_agent = True  # False: keep every live agent (tests compare both fleet lives)
    # Only a sleep this long (simulated seconds) drops the agent: reopening the folder costs
    # CPU (about 0.1 ms, tests/benchmarks/test_bench_agent.py -k reopen), which an app opened
    # every few minutes would pay at every wake.
    drop_agent_after_s = 3600.0

    def __init__(
        self,
        ctx: DeviceContext,
        identity: DeviceIdentity,
        behaviour: Behaviour,
        outcome: DeviceOutcome,
        seed: int,
        *,
        disk_full: DiskFull | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.ctx, self.identity, self.outcome = ctx, identity, outcome
        self.log = log  # None: no event log kept (the run has no --workdir)
        self.disk_full = disk_full  # this phone's disk is full for that period
        self.clock = ctx.time.clock()  # this device's simulated time, exact
        self.app = AppUser(behaviour, DeviceRandom(seed, 0))  # the user's and the app's decisions
        self.agent_rng = DeviceRandom(seed, 1)  # the agent's jitter
        self.config_key = (outcome.channel, outcome.dialect)
        stats_url = ctx.configs[self.config_key].stats_url if ctx.configs else ""
        shaped = ctx.http(outcome, DeviceRandom(seed, 2), self.clock)
        self.http = StatsWatch(shaped, stats_url, ctx.metrics)
        self.device: AsyncDevice | None = None
        self.asleep = False  # the app process lives, its agent dropped until the next wake
        self.foreground = False
        self.traits: dict[str, BundleTraits] = {}  # bundle id -> how it boots (read once)
        self.next_open = 0.0

    @property
    def folder(self) -> Path:
        """The device's folder, where its agent keeps its state and bundles (made when asked:
        a `Path` per device would cost a few hundred bytes in every idle device)."""
        return self.ctx.devices / folder_name(self.outcome.index)

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
        self.ctx.metrics.request(
            self.outcome, name, status, elapsed_s, response_bytes, error is not None
        )
        if isinstance(error, TransportTimeout):
            self.ctx.metrics.timeouts += 1
        if self.log is not None:
            answer = f"HTTP {status}" if status is not None else "no answer"
            self.log.add(
                self.sim_now(),
                f"request {name} {method} {url}: {answer}, {response_bytes:,} bytes"
                + (f", {type(error).__name__}: {error}" if error is not None else ""),
            )

    def on_retry(self, error: AgentError, delay_s: float) -> None:
        if self.log is not None:
            self.log.add(self.sim_now(), f"retry in {delay_s:.1f} s after {type(error).__name__}")

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        if self.log is not None:
            self.log.add(self.sim_now(), f"event {name} {json.dumps(payload, default=str)}")
        if name == "appReloaded":
            self.app.reloaded(payload["boot_id"], payload["bundle"], self.sim_now())
        elif name == "updateCheckResult":
            self.ctx.metrics.check_result(self.outcome, self.ctx.profile, dict(payload))

    def on_stat(self, action: str, version_name: str) -> None:
        self.ctx.metrics.stat(self.outcome, action, version_name, self.sim_now())
        self._note(f"stat {action} {version_name}")

    def _note(self, text: str) -> None:
        if self.log is not None:
            self.log.add(self.sim_now(), text)

    def sim_now(self) -> float:
        return self.clock.t

    # -- the user ----------------------------------------------------------------------------

    async def live(self, end_s: float) -> None:
        """Use the app until simulated time `end_s` (seconds since the fleet's start).

        Every deadline (the user's, the agent's timers, the app's notifyAppReady) is met at
        its exact simulated time, in order; nothing happens before the run's time zero."""
        await self.clock.sleep(0)  # time zero: after the timeline's first steps
        app = self.app
        self.next_open = app.first_open(self.sim_now())
        next_reboot = app.next_reboot(self.sim_now())
        session_end = app.session_end(self.sim_now()) if self.foreground else float("inf")
        while True:
            now = self.sim_now()
            timers = self._timer_due()
            wake = min(self.next_open, next_reboot, session_end, timers, app.ready_at(), end_s)
            if wake > now:
                await self._fall_asleep(wake)
                await self.clock.sleep_until(wake)
                now = wake
            if now >= end_s:
                return
            await self._wake()
            pending = app.ready
            if self.device is not None and timers <= now:
                await self._call(self.device.run_timers)  # a timeout due now comes first
            if pending is not None and app.take_ready(pending, now):
                await self._app_ready(pending.boot_id, pending.version, pending.at)
            if now >= next_reboot:
                self._die()
                next_reboot = app.next_reboot(now)
            if now >= session_end:
                await self._leave()
                session_end = float("inf")
            if now >= self.next_open:
                await self.open_app()
                session_end = app.session_end(self.sim_now())
                self.next_open = session_end + app.gap()

    async def _fall_asleep(self, wake: float) -> None:
        """Drop the agent of an app in the background that needs nothing before `wake`, at
        least `drop_agent_after_s` away."""
        device = self.device
        if (
            self.sleep_drops_agent
            and wake - self.sim_now() >= self.drop_agent_after_s
            and device is not None
            and not self.foreground
            and device.resumable(wake + self.ctx.time.epoch)
        ):
            await device.aclose()
            self.device, self.asleep = None, True

    async def _wake(self) -> None:
        """The sleeping app's agent again, opened from its folder as it left it."""
        if self.asleep:
            self.device, self.asleep = await self._start_process(), False

    def _timer_due(self) -> float:
        deadline = self.device.next_deadline() if self.device is not None else None
        return float("inf") if deadline is None else deadline - self.ctx.time.epoch

    async def open_app(self) -> None:
        """The user brings the app to the foreground (a cold start when it is not running)."""
        if self.device is None:
            self._note("the user opens the app (cold start)")
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
        if self.app.leave_kills():
            self._die()
        else:
            await self._call(self.device.background)

    def _die(self) -> None:
        """The app process ends (killed, crashed, phone rebooted)."""
        if self.device is not None:
            self._note("the app process ends")
            self.device.kill()
        self.device, self.foreground = None, False
        self.app.died()

    async def _call(self, action: Callable[[], Any]) -> None:
        try:
            await action()
        except AgentError as exc:  # a local failure the agent could not absorb
            self.ctx.metrics.local_failure(self.outcome, _action(exc), self.sim_now())
            self._note(f"failure {_action(exc)}: {exc}")
        await self._settle_boots()

    # -- the app: what a boot of a bundle does ------------------------------------------------

    async def _settle_boots(self) -> None:
        if not self.app.reloads or self.device is None:
            return
        status = self.device.status()
        bundle_id = status.current.id
        settle = self.app.boot_to_settle(status.boot_id, bundle_id)
        if settle is None:
            return
        boot_id, booted_at = settle
        version = BUILTIN if bundle_id == BUILTIN else status.current.version
        traits = self._traits(bundle_id, version, status.current.path)
        now = self.sim_now()
        boot = self.app.boot(traits, boot_id, version, booted_at, now)
        if boot.kind == "ready":
            await self._app_ready(boot_id, version, now)
            return
        self.ctx.metrics.ran(self.outcome, version, now, confirmed=False)
        self._note(f"boot of {version}: {boot.kind}")
        if boot.kind == "crashed":
            self.ctx.metrics.crashed(self.outcome, now)
            self._die()
            self.next_open = boot.at

    async def _app_ready(self, boot_id: int, version: str, at: float) -> None:
        """The web app calls notifyAppReady() for the boot it was started as."""
        if self.device is None:
            return
        await self.device.notify_app_ready(boot_id)
        status = self.device.status()
        if status.boot_id == boot_id and status.boot_confirmed:
            self.ctx.metrics.ran(self.outcome, version, at, confirmed=True)
            self._note(f"notifyAppReady: {version} confirmed")

    def _traits(self, bundle_id: str, version: str, path: Path | None) -> BundleTraits:
        """How this bundle behaves (read once per bundle); checks it and shares its files."""
        traits = self.traits.get(bundle_id)
        if traits is not None:
            return traits
        if path is None:
            traits = BUILTIN_TRAITS
        else:
            digests = file_digests(path)
            expected = self.ctx.published.get(version)
            # the app's files: a CodePush package also holds its verified signature file
            app_files = {
                name: digest
                for name, digest in digests.items()
                if self.outcome.dialect != "codepush" or not codepush.ignored(name)
            }
            # a file changed, added or missing: not what was published
            matched = None if expected is None else app_files == expected
            self.ctx.metrics.files_checked(self.outcome, version, matched)
            traits = read_traits(path, self.identity.platform)
            self.ctx.pool.share(path, digests)
        self.traits[bundle_id] = traits
        return traits

    # -- the end of the run -----------------------------------------------------------------

    async def finish(self, flush_wait_s: float) -> None:
        """Record the final state: deliver queued stats (bounded), check the device can boot."""
        try:
            await self._finish(flush_wait_s)
        finally:
            if self.log is not None:
                self.log.close()

    async def _finish(self, flush_wait_s: float) -> None:
        try:
            if self.device is None:  # a process that ended, or one asleep
                self.device, self.asleep = await self._start_process(), False
            await self.device.flush_stats(flush_wait_s)
            status = self.device.status()
        except AgentError as exc:
            self.ctx.metrics.local_failure(self.outcome, _action(exc), self.sim_now())
            self.ctx.metrics.finished(self.outcome, unbootable=True, stats_pending=0)
            self._note(f"end of the run: cannot open the device ({exc})")
            return
        finally:
            if self.device is not None:
                await self.device.aclose()
                self.device = None
        # Unbootable: neither the bundle the next cold start boots nor its fallback can load.
        unbootable = not (_loads(status.next or status.current) or _loads(status.fallback))
        self.ctx.metrics.finished(
            self.outcome, unbootable=unbootable, stats_pending=status.pending_stats
        )
        self._note(
            f"end of the run: current {status.current.version}, "
            + ("unbootable" if unbootable else "bootable")
            + f", {status.pending_stats} stats pending"
        )


def _loads(bundle: BundleView) -> bool:
    return bundle.path is None or (bundle.path / "index.html").is_file()


def _action(error: AgentError) -> str:
    """The Capgo action a local failure reports (its class name when it has none)."""
    return str(getattr(error, "action", type(error).__name__))
