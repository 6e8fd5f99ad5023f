"""Scenario files: every bundled one loads; bad files fail with file, key and reason."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from simulator.metrics import METRICS, DeviceOutcome, Metrics
from simulator.scenario import ScenarioError, bundled_scenarios, load_scenario

REQUIRED = {
    "steady-rollout", "staged-rollout", "bad-release-rollback",
    "server-outage", "flaky-network", "mitm-tamper",
}  # fmt: skip

MINIMAL = """
[[fleet]]
platform = "ios"
[[releases]]
version = "1.0.1"
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
"""


def test_every_required_scenario_is_bundled_and_valid() -> None:
    assert set(bundled_scenarios()) >= REQUIRED
    for name in bundled_scenarios():
        scenario = load_scenario(name)
        assert scenario.name == name and scenario.expectations and scenario.timeline


def test_a_file_path_loads_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL)
    scenario = load_scenario(str(path))
    assert scenario.name == "mine" and scenario.duration_s == 24 * 3600
    assert scenario.groups[0].platform == (("ios", 1.0),)
    assert scenario.timeline[0].percent == 100


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        ("bogus = 1", "bogus", "unknown key"),
        ('duration_h = "long"', "duration_h", "expected a number"),
        ("[[expect]]\nmetric = 'speed'\nmax = 1", "expect[0].metric", "unknown metric"),
        ("[[expect]]\nmetric = 'unbootable'", "expect[0]", "exactly one of min or max"),
        (
            "[[timeline]]\nat_h = 1\naction = 'publish'\nversion = '9.9.9'",
            "timeline[1].version",
            "not one of the [[releases]]",
        ),
        ("[[timeline]]\nat_h = 1\naction = 'explode'", "timeline[1].action", "unknown action"),
        ("[[timeline]]\nat_h = 99\naction = 'pause'", "timeline[1].at_h", "out of range"),
        ("[[fleet]]\nnetwork = '5g'", "fleet[1].network", "unknown value '5g'"),
        ("[[fleet]]\nbehaviour = 'nightly'", "fleet[1].behaviour", "unknown value"),
        ("[[fleet]]\nmitm = true", "mitm.mode", "required"),
        ("[behaviours.x]\nkill_share = 2", "behaviours.x.kill_share", "within [0, 1]"),
        ("[behaviours.x]\nsessions_per_day = 0", "behaviours.x.sessions_per_day", "above 0"),
        ("[disk_full]\nshare = 1.5", "disk_full.share", "out of range"),
        ("[disk_full]\nfrom_h = 1", "disk_full.share", "required"),
        ("[disk_full]\nshare = 0.1\nfrom_h = 6\nuntil_h = 2", "disk_full.until_h", "after"),
        ("[disk_full]\nshare = 0.1\nuntil_h = 30", "disk_full.until_h", "out of range"),
        ("[disk_full]\nshare = 0.1\nlevel = 1", "disk_full.level", "unknown key"),
        # expectations in their metric's range: a share is 0 to 1, counts are not negative
        (
            "[[expect]]\nmetric = 'adoption'\nversion = '1.0.1'\nmin = 95",
            "expect[0].min",
            "out of range [0, 1]: this metric is a share of devices (did you mean 0.95?)",
        ),
        ("[[expect]]\nmetric = 'success_rate'\nmin = 1.5", "expect[0].min", "out of range"),
        ("[[expect]]\nmetric = 'failures'\nmax = -1", "expect[0].max", "out of range"),
        ("[[expect]]\nmetric = 'latency_p99'\nmax = -5", "expect[0].max", "out of range"),
        (
            "[[expect]]\nmetric = 'adoption'\nversion = '1.0.1'\nendpoint = '/updates'\nmin = 1",
            "expect[0].endpoint",
            "metric 'adoption' takes no endpoint",
        ),
        (
            "[[expect]]\nmetric = 'failures'\nendpoint = '/updates'\nmax = 1",
            "expect[0].endpoint",
            "takes no endpoint",
        ),
        ("[[expect]]\nmetric = 'failures'\ncause = ''\nmax = 1", "expect[0].cause", "non-empty"),
    ],
)
def test_invalid_files_name_file_key_and_reason(
    tmp_path: Path, extra: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    top, _, rest = extra.partition("\n[")
    if extra.startswith("["):
        text = MINIMAL + "\n" + extra
    else:
        text = top + "\n" + MINIMAL + ("\n[" + rest if rest else "")
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert reason in message


def test_a_disk_full_share_loads_in_run_seconds(tmp_path: Path) -> None:
    path = tmp_path / "full.toml"
    path.write_text(MINIMAL + "\n[disk_full]\nshare = 0.25\nfrom_h = 1\nuntil_h = 6\n")
    full = load_scenario(str(path)).disk_full
    assert full is not None and (full.share, full.from_s, full.until_s) == (0.25, 3600, 21600)
    path.write_text(MINIMAL)
    assert load_scenario(str(path)).disk_full is None


def test_unknown_name_lists_bundled_scenarios() -> None:
    with pytest.raises(ScenarioError, match="steady-rollout"):
        load_scenario("no-such-scenario")


def test_not_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[fleet")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(str(path))


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_a_scenario_accepts_is_measured(tmp_path: Path, name: str) -> None:
    """One list of metric names: what a scenario may expect is what a run can measure."""
    path = tmp_path / "m.toml"
    version = "version = '1.0.1'\n" if METRICS[name].needs_version else ""
    path.write_text(MINIMAL + f"\n[[expect]]\nmetric = '{name}'\n{version}max = 1\n")
    (expectation,) = load_scenario(str(path)).expectations
    metrics = Metrics()
    metrics.devices.append(DeviceOutcome(0, "d", "ios", "17", "wifi", "good", "production"))
    value = metrics.evaluate(expectation, end_s=3600.0, stats_lost=0)
    assert isinstance(value, int | float)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.evaluate(replace(expectation, metric=name + "_typo"), 3600.0, 0)


def test_failure_and_latency_expectations_name_what_they_measure(tmp_path: Path) -> None:
    path = tmp_path / "e.toml"
    path.write_text(
        MINIMAL
        + "\n[[expect]]\nmetric = 'failures'\ncause = 'checksum_fail'\nmax = 0\n"
        + "\n[[expect]]\nmetric = 'latency_p99'\nendpoint = '/updates'\nmax = 250\n"
        + "\n[[expect]]\nmetric = 'failures'\nat_h = 2\nmax = 3\n"
    )
    described = [e.describe() for e in load_scenario(str(path)).expectations]
    assert described == [
        "failures(checksum_fail) <= 0",
        "latency_p99(/updates) <= 250",
        "failures at 2 h <= 3",
    ]
