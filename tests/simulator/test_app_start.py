"""A bundle whose app starts slower than appReadyTimeout (10 s) is rolled back on every device;
one that starts in time is kept. Real agents, embedded server, 4 simulated hours."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from simulator.runner import RunOptions, simulate

SCENARIO = """
app_id = "{app_id}"
duration_h = 4
[behaviours.stays]  # never killed: the ready timeout fires in the running app
sessions_per_day = 20
kill_share = 0
reboots_per_day = 0
[[fleet]]
network = "lan"
behaviour = "stays"
platform = ["ios", "android"]
[[releases]]
version = "1.0.1"
size_kb = 20
start_s = {start_s}
crash_on_boot = {{ ios = {crash_p}, android = {crash_p} }}
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
"""


def start_scenario(start_s: float, crash_p: float = 0.0, app_id: str = "com.example.otasim") -> str:
    """A 4-hour scenario: 1.0.1 (starting `start_s` after its boot, crashing on it with
    `crash_p`) published at once to devices that never kill or reboot the app; the Locust
    users' test runs it too (tests/loadtests/test_users_share_the_app_model.py)."""
    return SCENARIO.format(app_id=app_id, start_s=start_s, crash_p=crash_p)


# appReadyTimeout is 10 s: met exactly on simulated time
@pytest.mark.parametrize(("start_s", "rolled_back"), [(9.5, False), (10.5, True)])
def test_slow_start_past_the_ready_timeout_rolls_back(
    tmp_path: Path, start_s: float, rolled_back: bool
) -> None:
    path = tmp_path / "start.toml"
    path.write_text(start_scenario(start_s))
    report, _ = simulate(
        RunOptions(str(path), devices=12, report_dir=tmp_path / "r", progress=False)
    )
    rows = list(csv.DictReader((tmp_path / "r" / "devices.csv").read_text().splitlines()))
    booted = [r for r in rows if "1.0.1" in r["versions_run"].split()]
    assert len(booted) == 12
    assert all(("1.0.1" in r["rolled_back"]) == rolled_back for r in booted)
    assert all((r["final_version"] == "1.0.1") != rolled_back for r in rows)
    assert report["updates"]["unbootable"] == 0
