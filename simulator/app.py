"""The app model shared by the fleet simulator and the Locust users (decisions only, no driver).

A simulated phone runs a real agent; what this module models is everything around it that a
real phone has and a test harness must invent:

- **the fleet draw** (`draw_device`): a device's identity from a `[[fleet]]` group, drawn in
  one fixed order so a seed gives the same devices in `simulator.fleet` and in `loadtests`;
- **the user's sessions** (`AppUser`): when the app is opened, how long it stays in the
  foreground, whether leaving it kills it, when the phone reboots; durations come from the
  group's `Behaviour`, times `scale` (1 in the simulator; the Locust users compress them);
- **the app's boot** (`AppUser.boot`): how a booted bundle behaves, from the bundle itself
  (`read_traits`: `index.html` present, `otasim-behaviour.json` written by `make_dist`):
  it crashes (the process dies, the user relaunches a little later), shows a blank page
  (`notifyAppReady()` never comes), or calls `notifyAppReady()` for the boot it was
  started as, `start_s` after the boot (`AppUser.ready_due`: the driver runs the agent's due
  timers first, so a start slower than `appReadyTimeout` is rolled back).

The drivers (`simulator.device.VirtualDevice` on asyncio and virtual time,
`loadtests.users.DeviceUserBase` on gevent and real time) only perform what it decides, so this
module imports no driver and no event loop.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from simulator.scenario import Behaviour, Choice, Group, Release
from simulator.streams import DeviceRandom

BEHAVIOUR_FILE = "otasim-behaviour.json"
DAY_S = 86_400.0
RELAUNCH_AFTER_CRASH_S = (60.0, 900.0)  # the user tries again a little later


# -- the bundle's side: what a release's files say about its boot ------------------------------


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


@dataclass(frozen=True, slots=True)
class BundleTraits:
    loads: bool  # has an index.html
    crash_p: float  # chance the app crashes when it boots this bundle
    start_s: float = 0.0  # time from boot to notifyAppReady()


BUILTIN_TRAITS = BundleTraits(loads=True, crash_p=0.0)  # the app store build boots fine


def read_traits(bundle: Path, platform: str) -> BundleTraits:
    """What the simulated app finds in an unpacked bundle (no behaviour file: boots fine)."""
    try:
        spec = json.loads((bundle / BEHAVIOUR_FILE).read_text())
        crash_p = float(spec.get("crash_on_boot", {}).get(platform, 0.0))
        start_s = float(spec.get("start_s", 0.0))
    except (OSError, ValueError, AttributeError, TypeError):
        crash_p = start_s = 0.0
    return BundleTraits((bundle / "index.html").is_file(), crash_p, start_s)


# -- the fleet draw ---------------------------------------------------------------------------


def pick(choice: Choice, rng: random.Random) -> str:
    values, weights = zip(*choice, strict=True)
    return str(rng.choices(values, weights)[0])


@dataclass(frozen=True, slots=True)
class DrawnDevice:
    """A device's identity as drawn from its group (the agent's `DeviceIdentity` fields)."""

    device_id: str
    platform: str
    os: str
    native_version: str
    channel: str


def draw_device(group: Group, rng: random.Random) -> DrawnDevice:
    """A device of `group`; the simulator goes on drawing its network, behaviour... after."""
    return DrawnDevice(
        device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        platform=pick(group.platform, rng),
        os=pick(group.os, rng),
        native_version=pick(group.native_version, rng),
        channel=pick(group.channel, rng),
    )


# -- the user and the app ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Boot:
    """What the app does with a boot: `crashed` (the process dies; the user opens the app
    again at `at`), `blank` (no notifyAppReady), `ready` (notifyAppReady now), `starting`
    (notifyAppReady at `at`: kept as `AppUser.ready` until `AppUser.take_ready`)."""

    kind: str
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class PendingReady:
    """A notifyAppReady() to come: for boot `boot_id` of `version`, at time `at`."""

    boot_id: int
    version: str
    at: float


class AppUser:
    """The person and the app on one phone: every decision, drawn from `rng` in a fixed order.

    Times are the driver's (simulated seconds, or real ones); `scale` multiplies the user's
    durations (sessions, gaps, reboots, relaunches), not the app's start time, which the
    agent's `appReadyTimeout` is measured against.
    """

    __slots__ = ("behaviour", "ready", "reloads", "rng", "scale")  # one per fleet device

    def __init__(
        self, behaviour: Behaviour, rng: random.Random | DeviceRandom, scale: float = 1.0
    ) -> None:
        self.behaviour, self.rng, self.scale = behaviour, rng, scale
        self.reloads: list[tuple[int, str, float]] = []  # (boot id, bundle id, when) to settle
        self.ready: PendingReady | None = None

    def _exp(self, mean_s: float) -> float:
        """An exponential duration of mean `mean_s` x scale (inf: never; 0 at scale 0)."""
        if mean_s <= 0:
            return float("inf")
        scaled = mean_s * self.scale
        return self.rng.expovariate(1 / scaled) if scaled > 0 else 0.0

    def first_open(self, now: float) -> float:
        """When the user first opens the app (somewhere in a first gap)."""
        return now + self.rng.random() * self.gap()

    def gap(self) -> float:
        """Time between two sessions: sessions_per_day on average, minus the session itself."""
        b = self.behaviour
        return self._exp(max(DAY_S / b.sessions_per_day - b.session_min * 60, 60.0))

    def session_end(self, now: float) -> float:
        """When the session opened at `now` ends (the user leaves the app)."""
        return now + self._exp(self.behaviour.session_min * 60)

    def next_reboot(self, now: float) -> float:
        """When the phone next reboots (never without reboots_per_day)."""
        b = self.behaviour
        return now + self._exp(DAY_S / b.reboots_per_day if b.reboots_per_day else 0)

    def leave_kills(self) -> bool:
        """Whether leaving the app kills it (else it goes to the background)."""
        return self.rng.random() < self.behaviour.kill_share

    def died(self) -> None:
        """The app process ended (killed, crashed, phone rebooted): no ready will come."""
        self.ready = None
        self.reloads.clear()

    def reloaded(self, boot_id: int, bundle_id: str, at: float) -> None:
        """The agent (re)booted the web view on `bundle_id` (its `appReloaded` event)."""
        self.reloads.append((boot_id, bundle_id, at))

    def boot_to_settle(self, boot_id: int | None, bundle_id: str) -> tuple[int, float] | None:
        """The boot to settle now, (boot id, when it happened): the last reload since the
        previous call, if it is still the device's current boot (`boot_id` on `bundle_id`)."""
        if not self.reloads:
            return None
        last_boot, last_bundle, at = self.reloads[-1]
        self.reloads.clear()
        return (last_boot, at) if (last_boot, last_bundle) == (boot_id, bundle_id) else None

    def boot(
        self, traits: BundleTraits, boot_id: int, version: str, booted_at: float, now: float
    ) -> Boot:
        """The app booted `version` (boot `boot_id`) at `booted_at`; the driver sees it at
        `now`."""
        self.ready = None
        if traits.crash_p and self.rng.random() < traits.crash_p:
            return Boot("crashed", now + self.rng.uniform(*RELAUNCH_AFTER_CRASH_S) * self.scale)
        if not traits.loads:
            return Boot("blank")
        if traits.start_s <= 0:
            return Boot("ready", now)
        self.ready = PendingReady(boot_id, version, booted_at + traits.start_s)
        return Boot("starting", self.ready.at)

    def ready_at(self) -> float:
        """When the pending notifyAppReady() is due (inf: none pending)."""
        return self.ready.at if self.ready is not None else float("inf")

    def take_ready(self, pending: PendingReady | None, now: float) -> bool:
        """Whether `pending`, seen before the agent's timers due at `now` ran, is still the
        app's and due: then the driver calls notifyAppReady() for it (handed over once). The
        timers come first, as the plugin's appReadyTimeout fires before a late app."""
        if pending is None or self.ready is not pending or pending.at > now:
            return False
        self.ready = None
        return True
