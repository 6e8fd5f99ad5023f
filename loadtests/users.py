"""`DeviceUser`: a Locust user that is one real device running the agent (`DeviceUserBase`
holds the device; `DeviceUser` adds the shipped behaviour).

Each user owns a `SyncDevice` (the blocking driver; gevent makes it cooperative) in its own
folder, `<device root>/<worker>/<slot>/device`, with an identity drawn from the fleet mix and
written beside it (`identity.json`). The phone's user and app are the simulator's app model,
`simulator.app` (the same fleet draw, sessions, boot outcomes and slow starts; no asyncio
driver is imported here): the user opens the app (a cold start when its process is not
running: check, download, verify, install), uses it, leaves it (killing it with the group's
`kill_share`, else backgrounding it: the default apply mode installs then). A booted bundle
confirms `notifyAppReady` `start_s` after its boot, unless it has no `index.html` or its
behaviour file makes it crash on this platform (the process dies).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from locust import User, constant, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.backends import make_sync_port
from agent.drivers.http import SyncHttpPort
from agent.drivers.sync import SyncDevice
from agent.protocol.profiles import get_profile
from agent.protocol.registry import DEFAULT_DIALECT
from loadtests.observer import LocustObserver
from loadtests.settings import LoadtestSettings
from simulator.app import BUILTIN_TRAITS, AppUser, draw_device, pick, read_traits
from simulator.preflight import endpoints
from simulator.scenario import Behaviour

BETWEEN_SESSIONS_S = (1.0, 5.0)  # the load test's pace: far shorter than a phone's day


@dataclass
class _Process:
    """What the device users of one Locust process share: settings, HTTP port, slots."""

    settings: LoadtestSettings
    port: SyncHttpPort
    folder: Path
    worker: str
    slots: itertools.count[int]
    live: int = 0
    devices: int = 0
    requests: int = 0  # every request event fired in this process (HTTP exchanges)
    failures: int = 0

    def count(self, exception: BaseException | None = None, **_: Any) -> None:
        self.requests += 1
        self.failures += exception is not None


_shared: dict[int, _Process] = {}


def process_state(environment: Environment) -> _Process:
    """The shared state of this process's users (made on first use)."""
    found = _shared.get(id(environment))
    if found is None:
        settings = LoadtestSettings.from_options(environment.parsed_options)
        port = make_sync_port(
            settings.http_backend,  # type: ignore[arg-type]
            verify=settings.ca_file or True,
            max_connections=settings.max_devices,
        )
        runner = environment.runner
        worker = runner.client_id if isinstance(runner, WorkerRunner) else "local"
        folder = settings.device_root / worker.replace("/", "_")
        found = _Process(settings, port, folder, worker, itertools.count())
        environment.events.request.add_listener(found.count)
        _shared[id(environment)] = found
    return found


def write_worker_summary(environment: Environment, **_: Any) -> None:
    """`events.quitting` listener: `<device root>/<worker>/summary.json` with this process's
    own request count, failures and devices (the master's totals are the sum of these)."""
    shared = _shared.get(id(environment))
    if shared is None:
        return
    summary = {
        "worker": shared.worker,
        "requests": shared.requests,
        "failures": shared.failures,
        "devices": shared.devices,
    }
    shared.folder.mkdir(parents=True, exist_ok=True)
    (shared.folder / "summary.json").write_text(json.dumps(summary))


def draw_identity(
    settings: LoadtestSettings, rng: random.Random
) -> tuple[DeviceIdentity, str, str, Behaviour]:
    """A device of the fleet mix: (identity, channel it asks for, dialect it speaks, its
    user's behaviour)."""
    groups = settings.fleet.groups
    group = rng.choices(groups, [g.share for g in groups])[0]
    drawn = draw_device(group, rng)
    identity = DeviceIdentity(
        device_id=drawn.device_id,
        app_id=settings.app_id,
        platform=drawn.platform,  # type: ignore[arg-type]
        version_build=drawn.native_version,
        version_os=drawn.os,
        plugin_version=get_profile(settings.plugin).plugin_version,
    )
    dialect, behaviour = pick(group.dialect, rng), pick(group.behaviour, rng)
    return identity, drawn.channel, dialect, settings.fleet.behaviours[behaviour]


class DeviceUserBase(User):
    """A Locust user that is one device: its folder, identity, agent and app model.

    Subclass it to script other behaviours (tasks calling `self.device_now.foreground()`,
    `.check_for_update()`, ... then `self.settle()`, and `self.live_for(s)` to let time pass
    while the app lives); `DeviceUser` is the shipped one.
    """

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.device: SyncDevice | None = None  # None while the app process is not running
        self.observer: LocustObserver | None = None
        self.rng = random.Random()
        self._started = False

    def on_start(self) -> None:
        shared = process_state(self.environment)
        if shared.live >= shared.settings.max_devices:
            raise StopUser()
        shared.live += 1
        shared.devices += 1
        self._started = True
        self.home = shared.folder / f"{next(shared.slots):06d}"
        self.identity, channel, dialect, behaviour = draw_identity(shared.settings, self.rng)
        # the user's habits, compressed so that a session lasts --session-s on average
        mean_session_s = behaviour.session_min * 60
        scale = shared.settings.session_s / mean_session_s if mean_session_s > 0 else 1.0
        self.app = AppUser(behaviour, self.rng, scale)
        self.next_open = 0.0  # a crashed app is opened again from then on
        # at --session-s 0 the user's time shrinks to nothing: no reboots (one at every instant
        # would kill every session), an immediate relaunch after a crash
        self.next_reboot = self.app.next_reboot(time.time()) if scale > 0 else float("inf")
        self.config = self._config(shared.settings, channel, dialect)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "identity.json").write_text(json.dumps(asdict(self.identity)))
        self._cold_start()

    def _config(self, settings: LoadtestSettings, channel: str, dialect: str) -> AgentConfig:
        urls = endpoints(self.host, *settings.urls, dialect=dialect)
        return AgentConfig(
            update_url=urls.updates,
            stats_url=urls.stats,
            channel_url=urls.channel,
            plugin=settings.plugin,
            dialect=dialect,
            auto_update=settings.apply_mode,
            # Capgo's key, or the trust material --code-signing gives this dialect (none:
            # unsigned, their hashes are still verified)
            public_key=settings.public_key if dialect == DEFAULT_DIALECT else None,
            code_signing_pem=settings.code_signing.get(dialect),
            default_channel=channel or None,
            ca_file=settings.ca_file,
        )

    def _open(self) -> None:
        shared = process_state(self.environment)
        observer = LocustObserver(self.environment, self.identity.device_id, self._note_reload)
        self.observer = observer
        # durable=False: commits stay atomic against kills but skip fsync, which would block
        # the whole gevent process (every device of it) on the disk at each commit
        self.device = SyncDevice.open(
            self.home / "device",
            self.config,
            self.identity,
            shared.port,
            observer=observer,
            durable=False,
        )

    def _note_reload(self, boot_id: int, bundle_id: str) -> None:
        self.app.reloaded(boot_id, bundle_id, time.time())

    @property
    def device_now(self) -> SyncDevice:
        """The running device (RuntimeError while the app process is not running)."""
        if self.device is None:
            raise RuntimeError("device not open")
        return self.device

    def on_stop(self) -> None:
        """Close the device; unsent stats stay queued on its disk, as on a killed phone
        (and a distributed run's master waits only 0.5 s for the workers' last report)."""
        if not self._started:
            return
        self._started = False
        process_state(self.environment).live -= 1
        if self.observer is not None:
            self.observer.flush()
        if self.device is not None:
            self.device.close()
            self.device = None

    @property
    def _settings(self) -> LoadtestSettings:
        return process_state(self.environment).settings

    def _cold_start(self) -> None:
        """The app process starts: the agent opens its folder and launches."""
        self._open()
        self.device_now.launch()
        self.settle()

    def die(self) -> None:
        """The app process ends (killed, crashed, phone rebooted)."""
        if self.device is not None:
            self.device.kill()
        self.device = None
        self.app.died()

    def settle(self) -> None:
        """The app's side after each step: how it boots what the agent reloaded (the app
        model's decision); then the agent's due timers and a due notifyAppReady."""
        self._settle_boots()
        self._due(time.time())

    def live_for(self, seconds: float) -> None:
        """Let `seconds` pass as the app lives: the agent's timers and a slow-starting app's
        notifyAppReady() happen at their times, the timers first."""
        end = time.time() + seconds
        while True:
            now = time.time()
            deadline = self.device.next_deadline() if self.device is not None else None
            wake = min(end, self.app.ready_at(), float("inf") if deadline is None else deadline)
            if wake > now:
                time.sleep(min(wake - now, 60.0))
                now = time.time()
            self._due(now)
            if now >= end:
                return

    def _due(self, now: float) -> None:
        if self.device is None:
            return
        pending = self.app.ready
        deadline = self.device.next_deadline()
        if deadline is not None and deadline <= now:
            self.device.run_timers()
            self._settle_boots()
        if self.device is not None and self.app.take_ready(pending, now):
            assert pending is not None
            self.device.notify_app_ready(pending.boot_id)

    def _settle_boots(self) -> None:
        if not self.app.reloads or self.device is None:
            return
        status = self.device.status()
        settle = self.app.boot_to_settle(status.boot_id, status.current.id)
        if settle is None:
            return
        boot_id, booted_at = settle
        path = status.current.path
        traits = BUILTIN_TRAITS if path is None else read_traits(path, self.identity.platform)
        boot = self.app.boot(traits, boot_id, status.current.version, booted_at, time.time())
        if boot.kind == "ready":
            self.device.notify_app_ready(boot_id)
        elif boot.kind == "crashed":
            self.die()
            self.next_open = boot.at


class DeviceUser(DeviceUserBase):
    """One phone with the app: sessions (open, use, leave), at the load test's pace."""

    wait_time = constant(0)  # the pause between sessions is the app's too: `live_for` below

    @task
    def session(self) -> None:
        """Open the app (a cold start when it is not running, else a foreground: check,
        maybe download), use it, leave it (killed, or backgrounded: maybe install)."""
        now = time.time()
        if now >= self.next_reboot:  # the phone rebooted meanwhile: the process is gone
            self.die()
            self.next_reboot = self.app.next_reboot(now)
        self.live_for(max(self.next_open - now, 0.0))
        if self.device is None:
            self._cold_start()
        else:
            self.device_now.foreground()
            self.settle()
        now = time.time()
        self.live_for(self.app.session_end(now) - now)
        if self.device is not None:
            if self.app.leave_kills():
                self.die()
            else:
                self.device_now.background()
                self.settle()
        self.live_for(self.rng.uniform(*BETWEEN_SESSIONS_S))
