"""`DeviceUser`: a Locust user that is one real device running the agent (`DeviceUserBase`
holds the device; `DeviceUser` adds the shipped behaviour).

Each user owns a `SyncDevice` (the blocking driver; gevent makes it cooperative) in its own
folder, `<device root>/<worker>/<slot>/device`, with an identity drawn from the fleet mix and
written beside it (`identity.json`). Its tasks are what a phone's user does: open the app
(a foreground: check, download, verify, install), use it, leave it (the default apply mode
installs then), and now and then kill and relaunch it (a cold start). The app's side is
modelled as the simulator does: a booted bundle confirms `notifyAppReady` unless it has no
`index.html` or its behaviour file makes it crash on this platform.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from locust import User, between, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.backends import make_sync_port
from agent.drivers.http import SyncHttpPort
from agent.drivers.sync import SyncDevice
from agent.protocol.profiles import get_profile
from loadtests.observer import LocustObserver
from loadtests.settings import LoadtestSettings
from simulator.device import read_traits
from simulator.preflight import endpoints
from simulator.scenario import Choice


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


def _pick(choice: Choice, rng: random.Random) -> str:
    values, weights = zip(*choice, strict=True)
    return str(rng.choices(values, weights)[0])


def draw_identity(
    settings: LoadtestSettings, rng: random.Random
) -> tuple[DeviceIdentity, str, str]:
    """A device of the fleet mix: (identity, channel it asks for, dialect it speaks)."""
    groups = settings.fleet.groups
    group = rng.choices(groups, [g.share for g in groups])[0]
    identity = DeviceIdentity(
        device_id=str(UUID(int=rng.getrandbits(128), version=4)),
        app_id=settings.app_id,
        platform=_pick(group.platform, rng),  # type: ignore[arg-type]
        version_build=_pick(group.native_version, rng),
        version_os=_pick(group.os, rng),
        plugin_version=get_profile(settings.plugin).plugin_version,
    )
    return identity, _pick(group.channel, rng), _pick(group.dialect, rng)


class DeviceUserBase(User):
    """A Locust user that is one device: its folder, identity, agent and app-side model.

    Subclass it to script other behaviours (tasks calling `self.device_now.foreground()`,
    `.check_for_update()`, ... then `self.settle()`); `DeviceUser` is the shipped one.
    """

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.device: SyncDevice | None = None
        self.observer: LocustObserver | None = None
        self.rng = random.Random()
        self._reloads: list[tuple[int, str]] = []

    def on_start(self) -> None:
        shared = process_state(self.environment)
        if shared.live >= shared.settings.max_devices:
            raise StopUser()
        shared.live += 1
        shared.devices += 1
        self.home = shared.folder / f"{next(shared.slots):06d}"
        self.identity, channel, dialect = draw_identity(shared.settings, self.rng)
        self.config = self._config(shared.settings, channel, dialect)
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "identity.json").write_text(json.dumps(asdict(self.identity)))
        self._open()
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
            public_key=settings.public_key,
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
        self._reloads.append((boot_id, bundle_id))

    @property
    def device_now(self) -> SyncDevice:
        """The open device (RuntimeError before `on_start` or after `on_stop`)."""
        if self.device is None:
            raise RuntimeError("device not open")
        return self.device

    def on_stop(self) -> None:
        """Close the device; unsent stats stay queued on its disk, as on a killed phone
        (and a distributed run's master waits only 0.5 s for the workers' last report)."""
        if self.device is None:
            return
        if self.observer is not None:
            self.observer.flush()
        self.device.close()
        self.device = None
        process_state(self.environment).live -= 1

    @property
    def _settings(self) -> LoadtestSettings:
        return process_state(self.environment).settings

    def _cold_start(self) -> None:
        self.device_now.launch()
        self.settle()

    def settle(self) -> None:
        """The app's side after each step: confirm the boots it survives; fire due timers."""
        while self._reloads:
            boot_id, bundle_id = self._reloads.pop(0)
            if self._boots(bundle_id):
                self.device_now.notify_app_ready(boot_id)
        self.device_now.run_timers()

    def _boots(self, bundle_id: str) -> bool:
        status = self.device_now.status()
        path = next((b.path for b in status.bundles if b.id == bundle_id), None)
        if path is None:  # builtin, or gone
            return True
        traits = read_traits(path, self.identity.platform)
        return traits.loads and self.rng.random() >= traits.crash_p


class DeviceUser(DeviceUserBase):
    """One phone with the app: sessions (open, use, leave) and now and then a relaunch."""

    wait_time = between(1.0, 5.0)  # between two sessions

    @task(4)
    def session(self) -> None:
        """Open the app (check, maybe download), use it a while, leave it (maybe install)."""
        self.device_now.foreground()
        self.settle()
        time.sleep(min(self.rng.expovariate(1.0), 3.0) * self._settings.session_s)
        self.device_now.background()
        self.settle()

    @task(1)
    def relaunch(self) -> None:
        """The app is killed, then opened again: a cold start."""
        self.device_now.kill()
        self._open()
        self._cold_start()
