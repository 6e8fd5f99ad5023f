"""Capawesome and Appflow run bundled scenarios end to end on the embedded reference server (real
devices over loopback, `otasim run --dialect NAME`): the default one, and the bad release
that crashes on boot, rolls back and is never taken again. A mixed fleet reports each share."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from simulator.runner import RunOptions, simulate

DEVICES = 40
OTHER_DIALECTS = ["capawesome", "appflow"]


def _run(tmp_path: Path, scenario: str, dialect: str | None) -> dict[str, object]:
    report, _ = simulate(
        RunOptions(
            scenario=scenario, devices=DEVICES, seed=4, dialect=dialect,
            report_dir=tmp_path / "report", progress=False,
        )
    )  # fmt: skip
    failed = [r for r in report["expectations"] if r["ok"] is False]
    assert report["passed"] and not failed, failed
    return report


@pytest.mark.parametrize("dialect", OTHER_DIALECTS)
@pytest.mark.parametrize("scenario", ["steady-rollout", "bad-release-rollback"])
def test_the_bundled_scenario_passes_in_the_dialect(
    tmp_path: Path, scenario: str, dialect: str
) -> None:
    report = _run(tmp_path, scenario, dialect)
    assert report["run"]["dialects"] == {dialect: DEVICES}  # type: ignore[index]
    rows = list(csv.DictReader((tmp_path / "report" / "devices.csv").read_text().splitlines()))
    assert {r["dialect"] for r in rows} == {dialect}
    assert sum(int(r["downloads"]) for r in rows) >= DEVICES  # every device really downloaded
    if scenario == "bad-release-rollback":
        # a device whose first check came after the rollback never ran 1.0.1: nothing to undo
        ran_bad = [r for r in rows if "1.0.1" in r["versions_run"].split()]
        assert len(ran_bad) >= DEVICES // 2
        assert all("1.0.1" in r["rolled_back"].split() for r in ran_bad)
        assert all(r["final_version"] == "1.0.2" for r in rows)
        assert not any("1.0.1" in r["redownloaded"].split() for r in rows)


MIXED = """
name = "mixed"
duration_h = 12
devices = 30
[[fleet]]
share = 1
platform = ["android", "ios"]
dialect = { capgo = 1, capawesome = 1, appflow = 1 }
[[releases]]
version = "1.0.1"
delta = true
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
[[expect]]
metric = "adoption"
version = "1.0.1"
at_h = 12
min = 0.9
"""


def test_a_fleet_mixing_dialects_adopts_one_release_in_two_processes(tmp_path: Path) -> None:
    """One publication carries every dialect's artefacts; each share updates through its own
    protocol, also with the fleet split over two processes."""
    scenario = tmp_path / "mixed.toml"
    scenario.write_text(MIXED)
    report, _ = simulate(
        RunOptions(scenario=str(scenario), seed=2, processes=2,
                   report_dir=tmp_path / "report", progress=False)
    )  # fmt: skip
    assert report["passed"], report["expectations"]
    dialects = report["run"]["dialects"]
    assert set(dialects) == {"capgo", "capawesome", "appflow"} and sum(dialects.values()) == 30
    rows = list(csv.DictReader((tmp_path / "report" / "devices.csv").read_text().splitlines()))
    assert sum(r["final_version"] == "1.0.1" for r in rows) >= 27, [
        (r["dialect"], r["final_version"], r["failures"])
        for r in rows
        if r["final_version"] != "1.0.1"
    ]
    assert report["expectations"][0]["ok"] is True
