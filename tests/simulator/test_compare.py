"""`otasim compare` on two synthetic report folders: with a known regression (exit 1, the
regressed figures named, the page written) and without (exit 0); unknown figures are
neither; a folder without a report is a one-line error."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

from simulator.cli import main
from simulator.metrics import DeviceOutcome, Metrics
from simulator.report import RunInfo, build_report
from simulator.scenario import load_scenario


def baseline_report() -> dict[str, Any]:
    """A 100-device fleet: 90 adopt 1.0.1 in the first hours, 10 fail its checksum."""
    metrics = Metrics()
    for i in range(100):
        d = DeviceOutcome(i, f"id-{i}", "ios", "17", "wifi", "daily", "production")
        metrics.devices.append(d)
        t = 600.0 + i * 60
        metrics.stat(d, "download_0", "1.0.1", t)
        metrics.request(d, "/updates", 200, 0.020, 300, False)
        if i % 10 == 0:
            metrics.stat(d, "checksum_fail", "1.0.1", t + 5)
        else:
            metrics.ran(d, "1.0.1", t + 60, confirmed=True)
    info = RunInfo(
        scenario=load_scenario("steady-rollout"), devices=100, seed=1, time_scale=None,
        server_url="http://127.0.0.1:1", embedded=True, started_at="2026-01-01T00:00:00Z",
        wall_s=10.0, published_s={"1.0.1": 0.0}, server_received=None,
    )  # fmt: skip
    return build_report(metrics, info)


def folder(tmp_path: Path, name: str, report: dict[str, Any]) -> Path:
    out = tmp_path / name
    out.mkdir()
    (out / "report.json").write_text(json.dumps(report))
    return out


def test_a_known_regression_exits_1_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = baseline_report()
    worse = copy.deepcopy(base)
    worse["adoption"]["milestones"]["1.0.1"]["1h"] -= 0.2  # adoption at 1 h: 0.2 lower
    worse["failures"]["checksum_fail"] = 30  # 0.3 per device instead of 0.1
    worse["requests"]["/updates"]["latency_ms"]["p99"] = 20.5  # the same, give or take
    base_dir, run_dir = folder(tmp_path, "base", base), folder(tmp_path, "run", worse)
    assert main(["compare", str(base_dir), str(run_dir)]) == 1
    out = capsys.readouterr().out
    regressed = [line.split("  ")[0] for line in out.splitlines() if line.startswith("REGRESSED")]
    assert regressed == [
        "REGRESSED adoption of the newest release 1 h after publication",
        "REGRESSED failures checksum_fail per device",
    ]
    assert "2 regression(s)" in out
    page = (run_dir / "compare.html").read_text()
    assert page.count('<tr class="regressed">') == 2 and "2 regression(s)" in page


def test_the_same_run_or_a_change_within_thresholds_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = baseline_report()
    near = copy.deepcopy(base)
    near["adoption"]["milestones"]["1.0.1"]["1h"] -= 0.04  # under the 0.05 default
    near["requests"]["/updates"]["latency_ms"]["p99"] *= 3  # 3x, but by less than 50 ms
    base_dir, run_dir = folder(tmp_path, "base", base), folder(tmp_path, "run", near)
    assert main(["compare", str(base_dir), str(base_dir), "--html", str(tmp_path / "c.html")]) == 0
    assert main(["compare", str(base_dir), str(run_dir)]) == 0
    assert "no regression" in capsys.readouterr().out
    # a tighter threshold makes the same change a regression
    assert main(["compare", str(base_dir), str(run_dir), "--max-adoption-drop", "0.01"]) == 1


def test_an_unmeasured_figure_is_unknown_not_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = baseline_report()
    run = copy.deepcopy(base)
    run["updates"]["tampered_activated"] = None  # an external server: not measurable
    assert main(["compare", str(folder(tmp_path, "b", base)), str(folder(tmp_path, "r", run))]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "tampered" in line)
    assert row.startswith("unknown") and "unknown" in row.split("tampered activated")[1]


def test_a_folder_without_a_report_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text('{"schema": "something/2"}')
    base = str(folder(tmp_path, "b", baseline_report()))
    assert main(["compare", base, str(tmp_path / "empty")]) == 2
    assert main(["compare", base, str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("otasim: error: ") and "cannot read the report" in err[0]
    assert err[1].endswith("not an otasim report (otasim.report/1)")


CRASHING = """
duration_h = 2
[[fleet]]
network = "lan"
behaviour = "heavy"
[[releases]]
version = "1.0.1"
size_kb = 20
crash_on_boot = { android = 1.0, ios = 1.0 }
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
"""


def test_run_with_a_baseline_compares_in_the_report_and_exits_1_on_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A release that crashes on every boot, against a baseline whose release did not: the
    failures per device regress; the summary, report.json and report.html say so."""
    (tmp_path / "crash.toml").write_text(CRASHING)
    base = folder(tmp_path, "base", baseline_report())
    out = tmp_path / "out"
    argv = ["run", "--scenario", str(tmp_path / "crash.toml"), "--devices", "10", "--seed", "3",
            "--no-progress", "--report", str(out), "--baseline", str(base),
            "--junit", str(tmp_path / "junit.xml")]  # fmt: skip
    assert main(argv) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["passed"]  # no expectation: the regression alone fails the run
    regressions = report["comparison"]["regressions"]
    assert "failures update_fail per device" in regressions, regressions
    assert "against the baseline: " in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "Compared with the baseline: " in page and "REGRESSED" in page
    # the JUnit file carries the comparison too: one test case per figure, a regression
    # a failure, an unknown figure skipped
    suites = ElementTree.parse(tmp_path / "junit.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["otasim.crash", "otasim.crash.baseline"]
    cases = {c.get("name"): c for c in suites[1].iter("testcase")}
    assert set(cases) == {r["figure"] for r in report["comparison"]["rows"]}
    failed = {n for n, c in cases.items() if c.find("failure") is not None}
    assert failed == set(regressions) and suites[1].get("failures") == str(len(failed))
    skipped = {n for n, c in cases.items() if c.find("skipped") is not None}
    unknown = {r["figure"] for r in report["comparison"]["rows"] if r["verdict"] == "unknown"}
    assert skipped == unknown
