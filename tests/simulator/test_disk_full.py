"""A scenario's disk-full share (issue 15, item 4): real agents against the embedded server.

Half of 20 heavy users have a full disk for the first 4 of 12 simulated hours (the store's
free-space answer, on each device's virtual clock). They must report `insufficient_disk_space`
while it lasts, keep booting, and adopt the release once space returns; the other devices
live exactly as in the same run without the share, and the run is reproducible.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from simulator.runner import RunOptions, simulate

DEVICES = 20
SCENARIO = """
name = "disk-full"
duration_h = 12
devices = 20

[[fleet]]
platform = ["android", "ios"]
network = "wifi"
behaviour = "heavy"

[[releases]]
version = "1.0.1"
size_kb = 100

[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
"""
SHARE = "\n[disk_full]\nshare = 0.5\nfrom_h = 0\nuntil_h = 4\n"


def run(tmp_path: Path, name: str, text: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    out = tmp_path / name
    simulate(RunOptions(str(path), devices=DEVICES, seed=7, report_dir=out, progress=False))
    report = json.loads((out / "report.json").read_text())
    rows = list(csv.DictReader((out / "devices.csv").read_text().splitlines()))
    return report, rows


def test_a_disk_full_share_fails_downloads_then_adopts_once_space_returns(
    tmp_path: Path,
) -> None:
    report, rows = run(tmp_path, "full", SCENARIO + SHARE)
    full = [r for r in rows if r["disk_full"] == "1"]
    rest = [r for r in rows if r["disk_full"] == "0"]
    assert len(full) == DEVICES // 2 == len(rest)
    assert report["faults"]["disk_full_devices"] == len(full)
    # every refused free-space answer is one failure the agent reported, and only there
    refused = report["faults"]["disk_full"]
    assert refused >= len(full) and report["failures"]["insufficient_disk_space"] == refused
    assert all("insufficient_disk_space=" in r["failures"] for r in full)
    assert not any("insufficient_disk_space" in r["failures"] for r in rest)
    # nobody is stuck: all keep booting and adopt once the disk has room again
    assert all(r["unbootable"] == "0" for r in rows)
    assert all(r["final_version"] == "1.0.1" for r in rows)
    # while the disk is full, only the other half can have adopted
    with (tmp_path / "full" / "timeline.csv").open() as f:
        during = [r for r in csv.DictReader(f) if float(r["t_h"]) < 4]
    assert during and max(float(r["1.0.1"]) for r in during) <= 0.5

    again, rows_again = run(tmp_path, "again", SCENARIO + SHARE)
    assert rows_again == rows and again["faults"] == report["faults"]
    assert (tmp_path / "again" / "timeline.csv").read_bytes() == (
        tmp_path / "full" / "timeline.csv"
    ).read_bytes()

    plain, rows_plain = run(tmp_path, "plain", SCENARIO)
    assert "disk_full" not in plain["faults"] and "disk_full_devices" not in plain["faults"]
    assert all(r["disk_full"] == "0" for r in rows_plain)
    assert rest == [r for r in rows_plain if r["index"] in {x["index"] for x in rest}]
