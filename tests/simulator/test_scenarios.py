"""Every bundled scenario, small, end to end: real agents against the embedded reference server
(its own process) over loopback HTTP, and the scenario's expectations hold.

50 devices, 24 simulated hours at 8 640x (about 10 s each).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest

from simulator.runner import RunOptions, simulate

DEVICES = 50


def run(
    name: str, tmp_path: Path, seed: int = 3, processes: int = 1, progress: bool = False
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    report, page = simulate(
        RunOptions(
            scenario=name,
            devices=DEVICES,
            seed=seed,
            report_dir=tmp_path / "report",
            progress=progress,
            processes=processes,
        )
    )
    text = page.read_text()
    charts = text.count("<svg") + text.count('<p class="empty">')  # a chart, or its empty state
    assert charts == 4 and (text.count("<svg") == 4) == bool(report["failures"])
    devices = list(csv.DictReader((tmp_path / "report" / "devices.csv").read_text().splitlines()))
    assert len(devices) == DEVICES
    failed = [r for r in report["expectations"] if r["ok"] is not True]
    assert not failed, failed
    return report, devices


def test_steady_rollout(tmp_path: Path) -> None:
    report, _ = run("steady-rollout", tmp_path)
    assert report["passed"] and report["adoption"]["final"]["1.0.1"] >= 0.95
    assert report["bytes"]["full"] >= 0.95 * DEVICES * 300 * 1024  # every device really downloaded
    assert report["stats"]["server_received"] == report["stats"]["sent"] > 0


def test_staged_rollout_follows_the_stages(tmp_path: Path) -> None:
    report, _ = run("staged-rollout", tmp_path)
    steps = [s["label"] for s in report["timeline"]]
    assert steps == ["publish 1.0.1 10%", "rollout 1.0.1 50%", "rollout 1.0.1"]
    assert all(s["error"] is None for s in report["timeline"])
    assert report["bytes"]["delta"] > 0 and report["requests"]["delta file"]["count"] >= DEVICES


def test_bad_release_is_rolled_back_everywhere_and_never_downloaded_again(tmp_path: Path) -> None:
    report, devices = run("bad-release-rollback", tmp_path)
    booted_bad = [d for d in devices if "1.0.1" in d["versions_run"].split()]
    assert len(booted_bad) >= DEVICES // 2  # the bad release really reached the fleet
    assert all("1.0.1" in d["rolled_back"].split() for d in booted_bad)
    assert all(d["redownloaded"] == "" for d in devices)
    assert all(d["final_version"] != "1.0.1" for d in devices)
    assert report["failures"]["update_fail"] == report["updates"]["rollbacks"] >= len(booted_bad)


def test_server_outage_loses_no_stats(tmp_path: Path) -> None:
    report, _ = run("server-outage", tmp_path)
    stats = report["stats"]
    assert stats["lost"] == 0 and stats["pending"] == 0
    assert stats["server_received"] == stats["sent"] > 0
    assert report["requests"]["/stats"]["errors"] > 0  # the outage was real: devices saw it
    assert [s["action"] for s in report["timeline"]][1:] == ["server_down", "server_up"]


def test_flaky_network_still_updates_without_harm(tmp_path: Path) -> None:
    report, _ = run("flaky-network", tmp_path)
    faults = report["faults"]
    assert faults["offline"] > 0 and faults["loss"] > 0 and faults["5xx"] > 0
    assert report["updates"]["tampered_activated"] == 0


def test_mitm_tampering_and_replays_are_never_activated(tmp_path: Path) -> None:
    report, devices = run("mitm-tamper", tmp_path)
    assert report["mitm"].get("flip", 0) > 0  # bytes really were flipped in transit
    assert report["mitm"].get("replay", 0) > 0  # older signed offers really were replayed
    assert report["updates"]["downgraded"] == 0
    rejected = sum(report["failures"].get(a, 0) for a in ("checksum_fail", "decrypt_fail"))
    assert rejected > 0
    assert all(d["tampered_activated"] == "0" for d in devices)
    clean = [d for d in devices if not d["mitm"]]
    assert all(d["final_version"] == "1.0.2" for d in clean)


def test_a_fleet_sharded_over_two_processes_reports_as_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the progress line unabridged
    report, devices = run("bad-release-rollback", tmp_path, processes=2, progress=True)
    assert [int(d["index"]) for d in devices] == list(range(DEVICES))
    assert report["updates"]["rollbacks"] >= DEVICES // 2  # both shards' devices counted
    assert report["stats"]["server_received"] == report["stats"]["sent"]
    # the live progress line counted the whole fleet, not only this process's shard
    last = capsys.readouterr().out.strip().splitlines()[-1]
    shown = re.search(r"([\d,]+) rolled back", last)
    assert shown and int(shown[1].replace(",", "")) == report["updates"]["rollbacks"], last


RACE = """
description = "steps at 0 h and 4 h, whatever the processes"
duration_h = 8
[[fleet]]
network = "wifi"
behaviour = "heavy"
[[releases]]
version = "1.0.1"
size_kb = 20
[[releases]]
version = "1.0.2"
size_kb = 20
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
[[timeline]]
at_h = 4
action = "publish"
version = "1.0.2"
"""


def test_sharded_timeline_steps_land_at_their_simulated_times(tmp_path: Path) -> None:
    """The shards agree on time zero and wait for each step: with two processes, nothing of
    1.0.2 exists in any shard before 4 h, and 1.0.1 reached both shards before it."""
    path = tmp_path / "race.toml"
    path.write_text(RACE)
    report, _ = simulate(
        RunOptions(str(path), devices=20, seed=2, report_dir=tmp_path / "r", processes=2,
                   progress=False)
    )  # fmt: skip
    assert [s["at_h"] for s in report["timeline"]] == [0.0, 4.0]
    rows = list(csv.DictReader((tmp_path / "r" / "timeline.csv").read_text().splitlines()))
    before = [r for r in rows if float(r["t_h"]) < 4.0]
    assert before and all(float(r["1.0.2"]) == 0.0 for r in before)
    assert float(before[-1]["1.0.1"]) > 0.5
    devices = list(csv.DictReader((tmp_path / "r" / "devices.csv").read_text().splitlines()))
    for shard in (0, 1):  # the devices of each process got 1.0.2 after 1.0.1, never before
        ran = [d["versions_run"].split() for d in devices if int(d["index"]) % 2 == shard]
        assert sum(v[-1] == "1.0.2" for v in ran) >= 8
        both = [v for v in ran if "1.0.1" in v and "1.0.2" in v]
        assert both and all(v.index("1.0.1") < v.index("1.0.2") for v in both), ran


def test_a_failing_first_process_stops_the_workers_at_their_next_sync_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers wait for the first process at every synchronisation point: when it fails, they
    are told to end instead of waiting forever (the run raises, it does not hang)."""
    from simulator.metrics import Metrics
    from simulator.timeline import Timeline

    perform = Timeline.perform_due

    async def failing(self: Timeline, metrics: Metrics, at_s: float) -> None:
        if at_s > 0:
            raise RuntimeError("injected timeline failure")
        await perform(self, metrics, at_s)

    monkeypatch.setattr(Timeline, "perform_due", failing)
    with pytest.raises(RuntimeError, match="injected"):
        simulate(
            RunOptions("bad-release-rollback", devices=10, processes=2,
                       report_dir=tmp_path / "r", progress=False)
        )  # fmt: skip
