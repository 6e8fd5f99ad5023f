"""Per-device end records: the one source every output of a run is derived from.

`records(metrics, end_s, target)` reads each device's outcome once, at the scenario's end:
what it runs (`crashed` when its app crashed on boot and was not started again), its end state,
its failures and rollbacks up to the end (the final stats delivery after the end is not part
of the fleet's life), and, when it does not run the target release, why it is stuck.
report.json's counts, devices.csv's rows, timeline.csv's last row, the breakdowns and the
stuck-devices table are all sums over these records (tests/simulator/test_consistency.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.core import versions

from simulator.metrics import BUILTIN, CRASHED, DeviceOutcome

# End states.
RUNNING = "running"
NOT_CONFIRMED = "booted, not confirmed"  # no notifyAppReady yet for the version it runs
AWAITING_RELAUNCH = "crashed, awaiting relaunch"
UNBOOTABLE = "unbootable"

VERIFICATION = frozenset({"checksum_fail", "decrypt_fail", "checksum_required"})
DIMENSIONS = ("platform", "os", "network", "channel", "dialect", "fault_group")
MILESTONES_H = (1, 6, 24)  # adoption milestones: hours after a release's publication


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One device at the run's end: who it is (`device`, as the fleet recorded it) and what
    its end looks like, with everything counted up to the end only."""

    device: DeviceOutcome
    fault_group: str  # the faults the scenario put on this device ("none", "mitm:...")
    final_version: str  # what it runs at the end (CRASHED: nothing, its app crashed)
    last_booted: str
    state: str
    versions_run: tuple[str, ...]
    failures: dict[str, int]
    rolled_back: tuple[str, ...]
    rollbacks: int
    crashes: int
    stuck: str  # why it does not run the target release ("" when it does, or no target)

    def value(self, dimension: str) -> str:
        """The device's value in a breakdown dimension (`DIMENSIONS`)."""
        return str(getattr(self if dimension == "fault_group" else self.device, dimension))

    def csv_row(self) -> dict[str, object]:
        """Its row of devices.csv."""
        d = self.device
        return {
            "index": d.index,
            "device_id": d.device_id,
            "platform": d.platform,
            "os": d.os,
            "network": d.network,
            "behaviour": d.behaviour,
            "channel": d.channel,
            "mitm": d.mitm,
            "dialect": d.dialect,
            "disk_full": int(d.disk_full),
            "fault_group": self.fault_group,
            "final_version": self.final_version,
            "last_booted": self.last_booted,
            "state": self.state,
            "versions_run": " ".join(self.versions_run),
            "downloads": sum(d.downloads.values()),
            "failures": " ".join(f"{a}={n}" for a, n in sorted(self.failures.items())),
            "rolled_back": " ".join(self.rolled_back),
            "rollbacks": self.rollbacks,
            "redownloaded": " ".join(sorted(d.redownloaded)),
            "crashes": self.crashes,
            "tampered_activated": d.tampered,
            "unbootable": int(d.unbootable),
            "stats_queued": d.stats_queued,
            "stats_pending": d.stats_pending,
            "requests": d.requests,
            "unanswered": d.unanswered,
            "stuck": self.stuck,
        }


def target_version(candidates: Iterable[str]) -> str | None:
    """The release the fleet should end on: the newest one published or offered."""
    known = [v for v in candidates if v not in (BUILTIN, CRASHED)]
    return max(known, key=versions.sort_key) if known else None


def records(
    devices: Sequence[DeviceOutcome], end_s: float, target: str | None
) -> list[DeviceRecord]:
    return [record(d, end_s, target) for d in devices]


def record(d: DeviceOutcome, end_s: float, target: str | None) -> DeviceRecord:
    final = d.version_at(end_s)
    last = d.last_booted(end_s)
    if d.unbootable:
        state = UNBOOTABLE
    elif final == CRASHED:
        state = AWAITING_RELAUNCH
    elif final != BUILTIN and final not in d.confirmed:
        state = NOT_CONFIRMED
    else:
        state = RUNNING
    rollbacks = [v for t, v in d.rollbacks if t <= end_s]
    failures = d.failures(end_s)
    faults = [f"mitm:{d.mitm}"] * bool(d.mitm) + ["disk_full"] * d.disk_full
    return DeviceRecord(
        device=d,
        fault_group="+".join(faults) or "none",
        final_version=final,
        last_booted=last,
        state=state,
        versions_run=tuple(v for t, v in d.running if t <= end_s),
        failures=dict(sorted(failures.items())),
        rolled_back=tuple(sorted(set(rollbacks), key=versions.sort_key)),
        rollbacks=len(rollbacks),
        crashes=sum(v == CRASHED for t, v in d.running if t <= end_s),
        stuck=_stuck(d, final, state, set(rollbacks), failures, target, end_s),
    )


def _stuck(
    d: DeviceOutcome,
    final: str,
    state: str,
    rolled_back: set[str],
    failures: Counter[str],
    target: str | None,
    end_s: float,
) -> str:
    """Why the device does not run `target` at the end ("" when it does)."""
    if target is None or (final == target and state == RUNNING):
        return ""
    if state == UNBOOTABLE:
        return "unbootable: neither its bundle nor the fallback can load"
    if state == AWAITING_RELAUNCH:
        return f"crashed on boot of {d.last_booted(end_s)}, awaiting relaunch"
    if target in rolled_back:
        how = "crashed on boot" if d.crashes else "no notifyAppReady"
        return f"rolled back from {target} ({how})"
    if final == target:
        return f"booted {target}, not confirmed yet"
    newer = [v for v in d.confirmed if versions.less_than(target, v)]
    if newer:
        return f"refused downgrade: confirmed {max(newer, key=versions.sort_key)} earlier"
    for group, why in ((VERIFICATION, "failed verification"),
                       ({"insufficient_disk_space"}, "disk full"),
                       ({"unzip_fail"}, "unzip failed"),
                       ({"download_fail"}, "download failed")):  # fmt: skip
        hit = sorted(a for a in failures if a in group)
        if hit:
            return f"{why} ({', '.join(f'{a}={failures[a]}' for a in hit)})"
    if d.downloads[target]:
        return f"downloaded {target}, waits for the next app start"
    if d.download_starts[target]:
        return f"download of {target} started, not finished"
    if rolled_back:
        how = "crashed on boot" if d.crashes else "no notifyAppReady"
        return f"rolled back from {', '.join(sorted(rolled_back))} ({how}), then never got {target}"
    if failures:
        return "failed: " + ", ".join(f"{a}={n}" for a, n in sorted(failures.items()))
    if d.requests == 0:
        return "never checked: the app was not opened"
    if d.unanswered == d.requests:
        return f"offline: none of its {d.requests:,} requests answered"
    return f"never offered {target}"


def breakdowns(
    rows: Sequence[DeviceRecord], target: str | None
) -> dict[str, list[dict[str, object]]]:
    """Per dimension (platform, OS, network, channel, dialect, fault group), one row per
    value."""
    out: dict[str, list[dict[str, object]]] = {}
    for dim in DIMENSIONS:
        groups: dict[str, list[DeviceRecord]] = {}
        for r in rows:
            groups.setdefault(r.value(dim), []).append(r)
        out[dim] = [
            {
                "value": value,
                "devices": len(members),
                "on_target": round(
                    sum(r.final_version == target for r in members) / len(members), 4
                ),
                "rolled_back": sum(bool(r.rollbacks) for r in members),
                "failed": sum(bool(r.failures) for r in members),
                "crashed": sum(r.crashes > 0 for r in members),
                "stuck": sum(bool(r.stuck) for r in members),
            }
            for value, members in sorted(groups.items())
        ]
    return out
