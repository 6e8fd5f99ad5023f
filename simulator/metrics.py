"""What a fleet run measures: per-device outcomes, requests, stats actions, adoption over time.

`Metrics` is fed while the fleet runs (by `simulator.device`, from the agent's observer
callbacks and the simulated app) and summarised at the end into the plain dict that
`simulator.report` writes as report.json. Times are simulated seconds since the run started,
except request latencies, which are real (wall-clock: how long the real exchange took).
"""

from __future__ import annotations

import bisect
import json
import statistics
from array import array
from collections import Counter
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

from agent.core import versions
from agent.protocol.answers import finding
from agent.protocol.profiles import PluginProfile
from agent.protocol.registry import dialect_spec

BUILTIN = "builtin"
CRASHED = "crashed"  # in DeviceOutcome.running: the app crashed on boot, not started again yet
DOWNLOAD_STARTS = frozenset({"download_0", "download_zip_start", "download_manifest_start"})
FAILURE_EXTRA = frozenset({"insufficient_disk_space", "checksum_required", "app_launch_timeout"})
# A device's version sets start as this one shared empty set (an empty set is 216 bytes, four
# per device); `Metrics` replaces one by a new set when it adds a version.
NO_VERSIONS: frozenset[str] = frozenset()


def is_failure(action: str) -> bool:
    """True for the Capgo stats actions that report a failed step."""
    return action.endswith("_fail") or action in FAILURE_EXTRA


@dataclass(slots=True)
class DeviceOutcome:
    """What happened to one device (one row of devices.csv).

    Made by the fleet with the device's identity (`Metrics.add_device`); written after that
    only by `Metrics`' methods, which the virtual device calls as things happen.
    """

    index: int
    device_id: str
    platform: str
    os: str
    network: str
    behaviour: str
    channel: str
    mitm: str = ""
    disk_full: bool = False  # in the scenario's disk-full share
    dialect: str = "capgo"  # the server protocol the device speaks
    # (since, version): what the app runs (CRASHED from a crash on boot to the next start)
    running: list[tuple[float, str]] = field(default_factory=lambda: [(0.0, BUILTIN)])
    download_starts: Counter[str] = field(default_factory=Counter)
    downloads: Counter[str] = field(default_factory=Counter)
    failure_log: list[tuple[float, str, str]] = field(default_factory=list)  # (t, action, ver)
    rollbacks: list[tuple[float, str]] = field(default_factory=list)  # (t, version rolled back)
    booted: AbstractSet[str] = NO_VERSIONS
    confirmed: AbstractSet[str] = NO_VERSIONS
    redownloaded: AbstractSet[str] = NO_VERSIONS
    crashes: int = 0
    tampered: int = 0
    unbootable: bool = False
    stats_queued: int = 0
    stats_pending: int = 0
    phantom: int = 0  # download_fail reports still to come for answers that were no failure
    unchecked: AbstractSet[str] = NO_VERSIONS  # booted with no published files to compare
    requests: int = 0  # HTTP exchanges the device made
    unanswered: int = 0  # of which got no answer (offline, lost, reset, timeout)

    @property
    def version(self) -> str:
        return self.running[-1][1]

    def fail(self, action: str, version: str, t: float) -> None:
        """A failure the device reported (a Capgo stats action) or met (an agent error)."""
        self.failure_log.append((t, action, version))

    def failures(self, until: float = float("inf")) -> Counter[str]:
        """Failures by action, up to simulated time `until`."""
        return Counter(action for t, action, _ in self.failure_log if t <= until)

    def rolled_back_by(self, until: float = float("inf")) -> set[str]:
        """Versions the agent rolled back from, up to simulated time `until`."""
        return {v for t, v in self.rollbacks if t <= until}

    def last_booted(self, until: float = float("inf")) -> str:
        """The version the device booted last (before `until`), crashed or not."""
        booted = [v for t, v in self.running if v != CRASHED and t <= until]
        return booted[-1] if booted else BUILTIN

    def downgraded(self) -> bool:
        """Booted a version older than one it had already confirmed (a replay, a rollback
        of the channel): the agent's own rollbacks to the fallback do not count."""
        floor: str | None = None
        for _, version in self.running:
            if version in (BUILTIN, CRASHED):
                continue
            if floor is not None and versions.less_than(version, floor):
                return True
            if version in self.confirmed:
                floor = versions.raise_floor(floor, version)
        return False

    def version_at(self, t: float) -> str:
        i = bisect.bisect_right(self.running, (t, "\uffff")) - 1
        return self.running[max(i, 0)][1]


class Metrics:
    """Counters for one run. `devices[i]` is device i's outcome."""

    def __init__(self) -> None:
        self.devices: list[DeviceOutcome] = []
        self.latency: dict[str, array[float]] = {}
        self.statuses: dict[str, Counter[str]] = {}
        self.bytes: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.mitm: Counter[str] = Counter()
        self.steps: list[dict[str, object]] = []
        self.timeouts = 0  # requests ended by the real-time safety timeout
        self.findings: Counter[str] = Counter()  # about the server: text -> device reports
        self.stats_unconfirmed = 0  # events sent in batches answered without `results`
        self.first_offered: dict[str, float] = {}  # version -> first download start seen

    def add_device(self, device: DeviceOutcome) -> DeviceOutcome:
        """A device of the fleet (in index order), to be measured from now on."""
        self.devices.append(device)
        return device

    def request(
        self,
        device: DeviceOutcome,
        name: str,
        status: int | None,
        elapsed_s: float,
        nbytes: int,
        failed: bool,
    ) -> None:
        """One HTTP exchange of `device` (status None: no answer, a transport error)."""
        device.requests += 1
        device.unanswered += status is None
        self.latency.setdefault(name, array("d")).append(elapsed_s)
        self.statuses.setdefault(name, Counter())["error" if status is None else str(status)] += 1
        if name in ("bundle", "delta file") and not failed and status is not None:
            self.bytes["full" if name == "bundle" else "delta"] += nbytes

    def check_result(
        self, device: DeviceOutcome, profile: PluginProfile, payload: dict[str, object]
    ) -> None:
        """A device's `updateCheckResult`: when the device calls failed what was no failure
        (an up-to-date or blocked answer), it is a finding about the server, and the
        `download_fail` the device reports next for it is not an update failure."""
        kind, error, status = payload.get("kind"), payload.get("error"), payload.get("statusCode")
        if not isinstance(kind, str) or not isinstance(error, str) or not isinstance(status, int):
            return
        found = finding(profile.name, profile.reads_kind, kind, error, None, status)
        if found is not None:
            self.findings[found.text] += 1
            device.phantom += 1

    def stats_answer(self, request: bytes, answer: bytes) -> None:
        """A 200 answer to a stats POST: a batch (array) answered without per-event `results`
        was not taken as a batch (see `simulator.device.StatsWatch`)."""
        if not request.startswith(b"["):
            return
        try:
            data = json.loads(answer)  # small; the batch itself is parsed only when needed
            if isinstance(data, dict) and "results" in data:
                return
            events = json.loads(request)
        except ValueError:
            return
        if isinstance(events, list):
            self.stats_unconfirmed += len(events)

    def stat(self, device: DeviceOutcome, action: str, version: str, t: float) -> None:
        """A stats action the device's agent queued."""
        version = version.split(":", 1)[0]
        self.actions[action] += 1
        reports = dialect_spec(device.dialect).reports
        if reports is None or action in reports:  # queued to be sent (else not reported)
            device.stats_queued += 1
        if action == "download_fail" and device.phantom:
            device.phantom -= 1  # reported, as the plugin does; not a failure of the update
            return
        if action in DOWNLOAD_STARTS:
            if version not in self.first_offered or t < self.first_offered[version]:
                self.first_offered[version] = t
            if any(v == version for _, v in device.rollbacks):
                device.redownloaded = device.redownloaded | {version}
            device.download_starts[version] += 1
        elif action == "download_complete":
            device.downloads[version] += 1
        elif action == "update_fail":
            device.rollbacks.append((t, version))
        if is_failure(action):
            device.fail(action, version, t)

    def ran(self, device: DeviceOutcome, version: str, t: float, *, confirmed: bool) -> None:
        """The device's app started on `version` (confirmed: it reached appReady)."""
        if device.running[-1][1] != version:
            device.running.append((t, version))
        if version != BUILTIN:
            if version not in device.booted:
                device.booted = device.booted | {version}
            if confirmed and version not in device.confirmed:
                device.confirmed = device.confirmed | {version}

    def crashed(self, device: DeviceOutcome, t: float) -> None:
        """The app crashed as it booted (its `ran` was recorded just before): it runs nothing
        until the user starts it again."""
        device.crashes += 1
        device.running.append((t, CRASHED))

    def local_failure(self, device: DeviceOutcome, action: str, t: float) -> None:
        """A local failure the device's agent could not absorb (its disk failed...)."""
        device.fail(action, "", t)

    def files_checked(self, device: DeviceOutcome, version: str, matched: bool | None) -> None:
        """The files of a booted `version` compared with what was published: `matched` False
        is a tampered activation; None: nothing published to compare with."""
        if matched is None:
            device.unchecked = device.unchecked | {version}
        elif not matched:
            device.tampered += 1

    def finished(self, device: DeviceOutcome, *, unbootable: bool, stats_pending: int) -> None:
        """The device's state at the end of the run."""
        device.unbootable, device.stats_pending = unbootable, stats_pending

    def adoption(self, version: str, t: float) -> float:
        """Share of devices running `version` at simulated time t."""
        if not self.devices:
            return 0.0
        return sum(d.version_at(t) == version for d in self.devices) / len(self.devices)

    def versions(self) -> list[str]:
        """Every state a device ran in: versions in order, then builtin and crashed."""
        seen = {v for d in self.devices for _, v in d.running}
        ordered = sorted(seen - {BUILTIN, CRASHED}, key=versions.sort_key)
        return ordered + [v for v in (BUILTIN, CRASHED) if v in seen]

    def curve(self, duration_s: float, points: int = 97) -> list[dict[str, float]]:
        """Adoption per version (plus cumulative failures and rollbacks) at regular times up
        to the run's end (what happens after it, in the final stats delivery, is not counted)."""
        versions = self.versions()
        failures = sorted(t for d in self.devices for t, _, _ in d.failure_log)
        rollbacks = sorted(t for d in self.devices for t, _ in d.rollbacks)
        rows = []
        for k in range(points):
            t = duration_s * k / (points - 1)
            running = Counter(d.version_at(t) for d in self.devices)
            row: dict[str, float] = {"t_h": round(t / 3600, 4)}
            row.update({v: running[v] / max(len(self.devices), 1) for v in versions})
            row["failures"] = bisect.bisect_right(failures, t)
            row["rollbacks"] = bisect.bisect_right(rollbacks, t)
            rows.append(row)
        return rows

    def time_to_adoption(self, version: str, published_s: float) -> dict[str, float | int]:
        """Hours from publication to the device first running `version` (percentiles)."""
        waits = sorted(
            (next(t for t, v in d.running if v == version) - published_s) / 3600
            for d in self.devices
            if version in (v for _, v in d.running)
        )
        return {"devices": len(waits), **_percentiles(waits, digits=3)}

    def latency_summary(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, values in sorted(self.latency.items()):
            ms = sorted(v * 1000 for v in values)
            errors = sum(
                n for s, n in self.statuses[name].items() if s == "error" or s.startswith("5")
            )
            out[name] = {
                "count": len(ms),
                "errors": errors,
                "status": dict(sorted(self.statuses[name].items())),
                "latency_ms": _percentiles(ms, digits=1),
            }
        return out

    def merge(self, other: Metrics) -> None:
        """Add the measurements of another shard of the same fleet (devices stay by index)."""
        self.devices = sorted([*self.devices, *other.devices], key=lambda d: d.index)
        for name, values in other.latency.items():
            self.latency.setdefault(name, array("d")).extend(values)
        for name, counts in other.statuses.items():
            self.statuses.setdefault(name, Counter()).update(counts)
        for mine, theirs in ((self.bytes, other.bytes), (self.actions, other.actions),
                             (self.faults, other.faults), (self.mitm, other.mitm)):  # fmt: skip
            mine.update(theirs)
        self.findings.update(other.findings)
        self.stats_unconfirmed += other.stats_unconfirmed
        for version, t in other.first_offered.items():
            self.first_offered[version] = min(t, self.first_offered.get(version, t))
        self.timeouts += other.timeouts

    def failures(self, until: float = float("inf")) -> Counter[str]:
        """Failures by action (Capgo stats action, or the agent error a device met), without
        the reports that were no failure (findings), up to simulated time `until`."""
        total: Counter[str] = Counter()
        for d in self.devices:
            total.update(d.failures(until))
        return total

    def unchecked_versions(self) -> list[str]:
        """Versions devices booted with no published files to compare them with."""
        return sorted({v for d in self.devices for v in d.unchecked}, key=versions.sort_key)

    def refusals(self, share: float = 0.5, least: int = 5) -> dict[str, dict[str, int]]:
        """Endpoints where most (and at least `least`) requests got no answer or an error
        status: {name: {"requests": n, status: n, ...}}."""
        out = {}
        for name, statuses in sorted(self.statuses.items()):
            bad = {s: n for s, n in statuses.items() if s == "error" or int(s) >= 400}
            total = sum(statuses.values())
            if sum(bad.values()) >= least and sum(bad.values()) > share * total:
                out[name] = {"requests": total, **dict(sorted(bad.items()))}
        return out

    def evaluate(self, expectation: Asked, end_s: float, stats_lost: int | None) -> float:
        """The measured value an expectation is checked against (see `METRICS`)."""
        metric = METRICS.get(expectation.metric)
        version = expectation.version or ""
        if metric is None or (metric.needs_version and not version):
            raise ValueError(f"unknown metric {expectation.metric!r} or no version given")
        at = end_s if expectation.at_s is None else expectation.at_s
        return metric.measure(self, version or expectation.about or "", at, stats_lost)

    def success(self) -> tuple[int, int, float]:
        """(updates attempted, updates confirmed, rate): per device and version."""
        attempted = sum(len(+d.download_starts) for d in self.devices)
        succeeded = sum(len(d.confirmed) for d in self.devices)
        return attempted, succeeded, round(succeeded / attempted, 4) if attempted else 1.0


class Asked(Protocol):
    """What `Metrics.evaluate` reads of an expectation (`simulator.scenario.Expectation`)."""

    @property
    def metric(self) -> str: ...
    @property
    def version(self) -> str | None: ...
    @property
    def at_s(self) -> float | None: ...
    @property
    def about(self) -> str | None: ...


@dataclass(frozen=True)
class Metric:
    """An expectation metric: whether it needs a `version`, how it is measured from a run
    (`measure(metrics, version or about, at_s, stats_lost)`), its unit (a `share` is 0 to 1,
    a `count` a whole number, `ms` real milliseconds), and `about`: the optional [[expect]]
    key that narrows it (`endpoint`, `cause`; absent: all)."""

    needs_version: bool
    measure: Callable[[Metrics, str, float, int | None], float]
    unit: str = "count"
    about: str | None = None


def _latency(q: str) -> Callable[[Metrics, str, float, int | None], float]:
    def measure(m: Metrics, endpoint: str, at: float, lost: int | None) -> float:
        names = [endpoint] if endpoint else list(m.latency)
        ms = sorted(v * 1000 for n in names for v in m.latency.get(n, ()))
        return _percentiles(ms, digits=1)[q] if ms else float("nan")

    return measure


def _failures(m: Metrics, cause: str, at: float, lost: int | None) -> float:
    counts = m.failures(at)
    return counts[cause] if cause else sum(counts.values())


def _rolled_back(m: Metrics, v: str, at: float, lost: int | None) -> float:
    """Of the devices that booted `v` and never confirmed it, the share rolled back by `at`;
    a device whose app crashed on `v` and was not started again is left out (the agent rolls
    back at the next start: see `simulator.results`, state `crashed, awaiting relaunch`)."""
    booted = [
        d for d in m.devices
        if v in d.booted and v not in d.confirmed
        and not (d.version_at(at) == CRASHED and d.last_booted(at) == v)
    ]  # fmt: skip
    return round(sum(v in d.rolled_back_by(at) for d in booted) / len(booted), 4) if booted else 1.0


# The metrics a scenario's [[expect]] may name (the one list: `simulator.scenario` checks
# scenarios against it).
METRICS: dict[str, Metric] = {
    # share of devices running `version` at `at_h`
    "adoption": Metric(True, lambda m, v, at, lost: round(m.adoption(v, at), 4), "share"),
    # share of devices that booted `version` and were rolled back from it
    "rolled_back": Metric(True, _rolled_back, "share"),
    # devices that downloaded `version` again after it failed for them
    "redownloaded": Metric(
        True, lambda m, v, at, lost: sum(v in d.redownloaded for d in m.devices)
    ),
    # devices left with no bootable bundle
    "unbootable": Metric(False, lambda m, v, at, lost: sum(d.unbootable for d in m.devices)),
    # devices that activated a bundle unlike the one published (unknown: NaN when a booted
    # release's published files are not known)
    "tampered_activated": Metric(
        False,
        lambda m, v, at, lost: (
            float("nan") if m.unchecked_versions() else sum(d.tampered > 0 for d in m.devices)
        ),
    ),
    # stats events devices sent minus those the server recorded (unknown: NaN)
    "stats_lost": Metric(False, lambda m, v, at, lost: float("nan") if lost is None else lost),
    # installs that reached appReady / installs attempted
    "success_rate": Metric(False, lambda m, v, at, lost: m.success()[2], "share"),
    # devices that booted a version older than one they had confirmed
    "downgraded": Metric(False, lambda m, v, at, lost: sum(d.downgraded() for d in m.devices)),
    # failures by `at_h` (of one `cause`: a Capgo stats action such as checksum_fail, or an
    # agent error; without: all)
    "failures": Metric(False, _failures, about="cause"),
    # request latency percentiles in real ms (of one `endpoint` such as /updates or bundle,
    # as in report.json's requests; without: all requests; unknown when none was answered)
    **{
        f"latency_{q}": Metric(False, _latency(q), "ms", about="endpoint")
        for q in ("p50", "p90", "p99")
    },
}


def _percentiles(values: list[float], digits: int) -> dict[str, float]:
    if not values:
        return {}
    if len(values) == 1:
        cuts = [values[0]] * 99
    else:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(cuts[49], digits),
        "p90": round(cuts[89], digits),
        "p99": round(cuts[98], digits),
        "max": round(values[-1], digits),
    }
