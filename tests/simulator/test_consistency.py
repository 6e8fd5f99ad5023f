"""One source of truth: over small random scenarios (hypothesis), really run against the
embedded server, report.json, devices.csv, timeline.csv and report.html agree on counts,
shares, final versions, failures, rollbacks and end states."""

from __future__ import annotations

import csv
import html
import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.metrics import BUILTIN, CRASHED, DeviceOutcome, Metrics
from simulator.report import RunInfo, build_report, write_report
from simulator.runner import RunOptions, simulate
from simulator.scenario import load_scenario

NETWORKS = ("lan", "wifi", "4g", "flaky", "offline-often")


@st.composite
def scenarios(draw: st.DrawFn) -> str:
    """A small scenario: one or two groups, one or two releases (each may crash on boot on
    a platform, or never load), published at random times; people who rarely reopen a
    crashed app, so that some end crashed and awaiting relaunch."""
    duration = draw(st.integers(2, 5))
    groups = []
    for _ in range(draw(st.integers(1, 2))):
        platforms = draw(st.sets(st.sampled_from(["ios", "android"]), min_size=1))
        networks = draw(st.sets(st.sampled_from(NETWORKS), min_size=1))
        groups.append(
            f"[[fleet]]\nshare = {draw(st.integers(1, 3))}\n"
            f"platform = {sorted(platforms)!r}\nnetwork = {sorted(networks)!r}\n"
            f"behaviour = {draw(st.sampled_from(['heavy', 'rare', 'daily']))!r}\n"
            f"mitm = {str(draw(st.booleans())).lower()}\n"
        )
    releases, steps = [], []
    for k in range(draw(st.integers(1, 2))):
        version = f"1.0.{k + 1}"
        crash = draw(st.sampled_from([0.0, 0.5, 1.0]))
        boots = draw(st.booleans()) if crash == 0 else True
        releases.append(
            f'[[releases]]\nversion = "{version}"\nsize_kb = 8\nboots = {str(boots).lower()}\n'
            f"crash_on_boot = {{ android = {crash}, ios = {crash} }}\n"
        )
        at = draw(st.floats(0, duration - 1)) if k else 0.0
        steps.append(f'[[timeline]]\nat_h = {at:.2f}\naction = "publish"\nversion = "{version}"\n')
    return f'duration_h = {duration}\n[mitm]\nmode = ["flip", "swap"]\nrate = 0.5\n' + "".join(
        groups + releases + steps
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), devices=st.integers(4, 16), seed=st.integers(0, 99))
def test_every_output_is_derived_from_the_same_device_records(
    scenario: str, devices: int, seed: int
) -> None:
    with tempfile.TemporaryDirectory(prefix="otasim-consistency-") as tmp:
        path = Path(tmp) / "s.toml"
        path.write_text(scenario)
        out = Path(tmp) / "r"
        report, page = simulate(
            RunOptions(str(path), devices=devices, seed=seed, report_dir=out, progress=False)
        )
        rows = read_csv(out / "devices.csv")
        timeline = read_csv(out / "timeline.csv")
        text = page.read_text(encoding="utf-8")
        assert json.loads((out / "report.json").read_text()) == report
    assert len(rows) == devices == report["run"]["devices"]
    assert_consistent(report, rows, timeline, text)


def assert_consistent(
    report: dict[str, Any], rows: list[dict[str, str]], timeline: list[dict[str, str]], text: str
) -> None:
    n = len(rows)

    # final versions: devices.csv counts, report.json shares, timeline.csv's last row
    finals = Counter(r["final_version"] for r in rows)
    assert set(finals) <= set(report["adoption"]["final"])
    last = timeline[-1]
    for version, share in report["adoption"]["final"].items():
        assert share == round(finals[version] / n, 4)
        assert abs(float(last[version]) - finals[version] / n) < 1e-9

    # failures and rollbacks: per device, in total, and as timeline.csv's cumulative count
    failures: Counter[str] = Counter()
    for r in rows:
        failures.update({a: int(c) for a, c in (f.split("=") for f in r["failures"].split())})
    assert dict(failures) == report["failures"]
    assert int(last["failures"]) == sum(report["failures"].values())
    rollbacks = sum(int(r["rollbacks"]) for r in rows)
    assert rollbacks == report["updates"]["rollbacks"] == int(last["rollbacks"])
    assert sum(bool(r["rolled_back"]) for r in rows) == report["updates"]["devices_rolled_back"]
    assert sum(int(r["crashes"]) for r in rows) == report["updates"]["crashes"]

    # end states: a device never runs a version it was rolled back from; crashed devices
    # await relaunch and run nothing
    for r in rows:
        assert r["final_version"] not in r["rolled_back"].split(), r
        assert (r["state"] == "crashed, awaiting relaunch") == (r["final_version"] == "crashed")
    assert Counter(r["state"] for r in rows) == report["states"]
    assert finals["crashed"] == report["updates"]["awaiting_relaunch"]

    # stuck devices and breakdowns are sums of the same rows
    stuck = [r for r in rows if r["stuck"]]
    assert len(stuck) == report["stuck"]["devices"]
    assert [s["index"] for s in report["stuck"]["listed"]] == [int(r["index"]) for r in stuck]
    for dim, values in report["breakdowns"].items():
        by_value = Counter(r[dim] for r in rows)
        assert {v["value"]: v["devices"] for v in values} == by_value
        assert sum(v["stuck"] for v in values) == len(stuck)

    # the HTML shows the same figures
    cards = dict(
        (html.unescape(label), value)
        for value, label in re.findall(r"<div><b>([^<]*)</b><span>([^<]*)</span></div>", text)
    )
    assert cards["rollbacks"] == f"{report['updates']['rollbacks']:,}"
    assert cards["crashed, awaiting relaunch"] == f"{finals['crashed']:,}"
    target = report["stuck"]["target"]
    assert cards[f"stuck (not on {target})"] == f"{len(stuck):,}"
    for s in report["stuck"]["listed"]:
        assert html.escape(s["why"]) in text and f'href="{s["log"]}"' in text


@st.composite
def fleets(draw: st.DrawFn) -> Metrics:
    """Device outcomes as the fleet records them, events up to 2 h past the 24 h end (the
    final stats delivery): boots, crashes, failures, rollbacks in any order of time."""
    metrics = Metrics()
    for i in range(draw(st.integers(1, 12))):
        d = DeviceOutcome(i, f"d{i}", draw(st.sampled_from(["ios", "android"])), "17",
                          draw(st.sampled_from(NETWORKS)), "daily", "production",
                          draw(st.sampled_from(["", "flip"])), draw(st.booleans()))  # fmt: skip
        metrics.devices.append(d)
        times = sorted(draw(st.lists(st.floats(0, END_S + 7200), max_size=6)))
        for t in times:
            version = draw(st.sampled_from(["1.0.1", "1.0.2"]))
            kind = draw(st.sampled_from(["ok", "crash", "blank", "fail", "rollback"]))
            metrics.stat(d, "download_0", version, t)
            if kind == "fail":
                metrics.stat(
                    d, draw(st.sampled_from(["checksum_fail", "download_fail"])), version, t
                )
            elif kind == "rollback" and d.version not in (BUILTIN, CRASHED):
                metrics.stat(d, "app_launch_timeout", d.version, t)
                metrics.stat(d, "update_fail", d.version, t)
                metrics.ran(d, BUILTIN, t, confirmed=True)
            elif kind != "fail" and t <= END_S:  # the app boots only during the run
                if any(v == version for _, v in d.rollbacks):
                    continue  # never re-installs a version it rolled back from
                metrics.ran(d, version, t, confirmed=kind == "ok")
                if kind == "crash":
                    metrics.crashed(d, t)
        metrics.request(d, "/updates", draw(st.sampled_from([200, None])), 0.01, 10, False)
    return metrics


END_S = 24 * 3600.0


@settings(max_examples=25, deadline=None)
@given(metrics=fleets())
def test_outputs_agree_on_any_device_history(metrics: Metrics) -> None:
    """The same property on recorded outcomes directly, with events after the end (what
    the final stats delivery reports) that no output may count."""
    info = RunInfo(
        scenario=load_scenario("steady-rollout"), devices=len(metrics.devices), seed=1,
        time_scale=None, server_url="http://127.0.0.1:1", embedded=True,
        started_at="2026-01-01T00:00:00Z", wall_s=1.0,
        published_s={"1.0.1": 0.0, "1.0.2": 3600.0}, server_received=None,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="otasim-consistency-") as tmp:
        report = build_report(metrics, info)
        page = write_report(report, metrics, info, Path(tmp))
        rows = read_csv(Path(tmp) / "devices.csv")
        timeline = read_csv(Path(tmp) / "timeline.csv")
        assert_consistent(report, rows, timeline, page.read_text(encoding="utf-8"))
