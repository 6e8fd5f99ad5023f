"""The report: expectations judged, files written, HTML self-contained with real SVG charts."""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import random
from pathlib import Path

from simulator.metrics import DeviceOutcome, Metrics
from simulator.report import (
    RunInfo,
    build_report,
    failures_chart,
    latency_chart,
    render_html,
    write_report,
)
from simulator.scenario import load_scenario


def synthetic_metrics(n: int = 40) -> Metrics:
    """A small fleet's worth of measurements: most adopt 1.0.1, a few fail and roll back."""
    rng = random.Random(5)
    metrics = Metrics()
    for i in range(n):
        d = DeviceOutcome(
            i, f"id-{i}", "android" if i % 2 else "ios", "14", "4g", "daily", "production"
        )
        metrics.devices.append(d)
        t = rng.uniform(600, 20 * 3600)
        metrics.stat(d, "download_0", "1.0.1", t)
        metrics.request(d, "/updates", 200, rng.uniform(0.01, 0.08), 300, False)
        metrics.request(d, "bundle", 200, rng.uniform(0.05, 0.4), 300_000, False)
        if i % 10 == 0:
            metrics.stat(d, "checksum_fail", "1.0.1", t + 5)
            continue
        metrics.stat(d, "download_complete", "1.0.1", t + 5)
        metrics.ran(d, "1.0.1", t + 60, confirmed=i % 7 != 0)
        if i % 7 == 0:
            metrics.stat(d, "update_fail", "1.0.1", t + 70)
            metrics.ran(d, "builtin", t + 70, confirmed=True)
    metrics.request(metrics.devices[0], "/stats", None, 0.02, 0, True)
    metrics.steps.append({"at_h": 0.0, "label": "publish 1.0.1", "action": "publish"})
    return metrics


def info(server_received: int | None) -> RunInfo:
    return RunInfo(
        scenario=load_scenario("steady-rollout"),
        devices=40,
        seed=1,
        time_scale=None,
        server_url="http://127.0.0.1:1",
        embedded=True,
        started_at="2026-01-01T00:00:00Z",
        wall_s=60.0,
        published_s={"1.0.1": 0.0},
        server_received=server_received,
    )


def test_report_judges_expectations_from_measurements() -> None:
    metrics = synthetic_metrics()
    queued = sum(d.stats_queued for d in metrics.devices)
    report = build_report(metrics, info(server_received=queued - 3))
    by_name = {r["expect"]: r for r in report["expectations"]}
    adoption = by_name["adoption(1.0.1) at 24 h >= 0.95"]
    assert adoption["value"] == metrics.adoption("1.0.1", 24 * 3600) and not adoption["ok"]
    assert by_name["unbootable <= 0"]["ok"]
    assert by_name["stats_lost <= 0"]["value"] == 3 and not report["passed"]
    assert report["updates"]["attempted"] == 40 and report["updates"]["rollbacks"] == 5
    assert report["failures"]["checksum_fail"] == 4
    assert report["bytes"]["full"] == 40 * 300_000
    assert report["requests"]["/stats"]["errors"] == 1
    assert report["run"]["speedup"] == 1440.0


def test_unknown_server_stats_leave_loss_and_its_verdict_unknown() -> None:
    report = build_report(synthetic_metrics(), info(server_received=None))
    lost = next(r for r in report["expectations"] if r["expect"].startswith("stats_lost"))
    assert report["stats"]["lost"] is None and lost["value"] is None and lost["ok"] is None


def test_more_stats_recorded_than_sent_leaves_loss_unknown_never_a_pass() -> None:
    metrics = synthetic_metrics()
    queued = sum(d.stats_queued for d in metrics.devices)
    report = build_report(metrics, info(server_received=queued + 111))
    lost = next(r for r in report["expectations"] if r["expect"].startswith("stats_lost"))
    assert report["stats"]["lost"] is None and lost["value"] is None and lost["ok"] is None
    assert report["unknown"]["stats_lost"].startswith("the server recorded 111 more")


def test_files_are_written_and_the_page_is_self_contained(tmp_path: Path) -> None:
    metrics = synthetic_metrics()
    report = build_report(metrics, info(server_received=0))
    page = write_report(report, metrics, info(server_received=None), tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["schema"] == "otasim.report/1"
    rows = list(csv.DictReader((tmp_path / "devices.csv").read_text().splitlines()))
    assert len(rows) == 40 and rows[0]["final_version"] == "builtin"
    timeline = list(csv.DictReader((tmp_path / "timeline.csv").read_text().splitlines()))
    assert float(timeline[-1]["1.0.1"]) == metrics.adoption("1.0.1", 24 * 3600)
    text = page.read_text()
    assert (
        text.count("<svg") == 4
        and "<script" not in text
        and "http" not in text.split("<svg")[0].split("server")[0]
    )
    assert "FAILED" in text and "publish 1.0.1" in text


def test_downgrade_is_a_confirmed_version_followed_by_an_older_one() -> None:
    metrics = Metrics()
    replayed, crashed = (
        DeviceOutcome(i, f"d{i}", "ios", "17", "wifi", "daily", "p") for i in (0, 1)
    )
    for t, version in enumerate(["1.0.1", "1.0.10", "1.0.2"]):
        metrics.ran(replayed, version, float(t), confirmed=True)
    metrics.ran(crashed, "1.0.1", 0.0, confirmed=False)
    metrics.ran(crashed, "builtin", 1.0, confirmed=True)
    assert replayed.downgraded() and not crashed.downgraded()


def test_charts_without_data_say_so_instead_of_drawing_empty_axes() -> None:
    curve = [{"t_h": 0.0, "1.0.1": 1.0, "failures": 0.0, "rollbacks": 0.0}]
    empty = failures_chart({}, curve)
    assert "No failures" in empty and "<svg" not in empty
    assert "<svg" in failures_chart({"checksum_fail": 2}, curve)
    assert "<svg" not in latency_chart({}) and "No requests" in latency_chart({})


def test_fidelity_notes_and_where_the_wall_time_went_are_on_the_page() -> None:
    quiet = render_html(build_report(synthetic_metrics(), info(server_received=0)), [])
    assert "no time of day" in quiet and "time uncapped" in quiet
    assert 'class="notes"' not in quiet  # nothing to confess: no notes list
    note = "3 requests got no answer within their timeout in real time <here>"
    run = dataclasses.replace(
        info(server_received=0), notes=(note,), time_scale=60.0,
        wall={"fleet_cpu_s": 12.5, "fleet_system_s": 2.0, "server_cpu_s": 4.0},
    )  # fmt: skip
    report = build_report(synthetic_metrics(), run)
    page = render_html(report, [])
    assert report["run"]["notes"] == [note] and html.escape(note) in page
    assert "fleet CPU 12.5 s" in page and "server CPU 4 s" in page and "capped at 60×" in page


def test_refusals_are_findings_about_external_servers_only() -> None:
    metrics = synthetic_metrics()
    for _ in range(200):
        metrics.request(metrics.devices[0], "/updates", 501, 0.001, 0, True)
    embedded = build_report(metrics, info(server_received=0))
    assert embedded["findings"] == []  # our own server's outages are the scenario's
    external = dataclasses.replace(info(server_received=None), embedded=False)
    (refused,) = build_report(metrics, external)["findings"]
    assert (
        refused["text"] == "your server refused or failed 200 of 240 /updates requests (501: 200)"
    )
    metrics.faults["reset"] += 7
    (noted,) = build_report(metrics, external)["findings"]
    assert noted["text"].endswith("; the scenario's network injected 7 faults, counted in these")
    metrics.request(metrics.devices[0], "/updates", 200, 0.001, 0, False)  # below half: no finding
    for _ in range(200):
        metrics.request(metrics.devices[0], "/updates", 200, 0.001, 0, False)
    assert build_report(metrics, external)["findings"] == []


def test_phantom_failures_are_findings_not_failures() -> None:
    from agent.protocol.profiles import get_profile

    metrics = synthetic_metrics()
    device = metrics.devices[1]
    before = dict(metrics.failures())
    payload = {"kind": "failed", "error": "no_new_version_available", "statusCode": 200}
    metrics.check_result(device, get_profile(), payload)
    metrics.stat(device, "download_fail", "1.0.0", 100.0)
    assert dict(metrics.failures()) == before and metrics.actions["download_fail"] == 1
    metrics.check_result(device, get_profile(), {**payload, "error": "no_channel"})
    metrics.stat(device, "download_fail", "1.0.0", 200.0)  # a real failure stays one
    assert metrics.failures()["download_fail"] == before.get("download_fail", 0) + 1
    report = build_report(metrics, info(server_received=0))
    assert report["failures"]["download_fail"] == 1 and report["findings"][0]["events"] == 1


def test_failure_count_and_latency_expectations_fire() -> None:
    """failures per cause and latency percentiles: each missed on the synthetic fleet (4
    checksum failures; /updates answered in 10 to 80 ms), met with room, and unknown for
    an endpoint never called."""
    import dataclasses

    from simulator.scenario import Expectation

    metrics = synthetic_metrics()
    scenario = dataclasses.replace(
        load_scenario("steady-rollout"),
        expectations=(
            Expectation("failures", about="checksum_fail", max=0),
            Expectation("failures", about="checksum_fail", max=4),
            Expectation("failures", max=3),
            Expectation("latency_p99", about="/updates", max=5),
            Expectation("latency_p50", about="/updates", max=1000),
            Expectation("latency_p90", max=1),
            Expectation("latency_p99", about="/channel_self", max=100),
        ),
    )
    report = build_report(metrics, dataclasses.replace(info(0), scenario=scenario))
    got = [(r["expect"], r["ok"], r["unit"]) for r in report["expectations"]]
    assert got == [
        ("failures(checksum_fail) <= 0", False, "count"),
        ("failures(checksum_fail) <= 4", True, "count"),
        ("failures <= 3", False, "count"),
        ("latency_p99(/updates) <= 5", False, "ms"),
        ("latency_p50(/updates) <= 1000", True, "ms"),
        ("latency_p90 <= 1", False, "ms"),
        ("latency_p99(/channel_self) <= 100", None, "ms"),
    ]
    assert report["expectations"][0]["value"] == 4 and not report["passed"]


def test_each_stuck_device_says_why() -> None:
    """One device per reason, recorded as the fleet records them; the one on the target is
    not stuck."""
    from simulator.results import record

    def device(i: int, **attrs: int | bool) -> DeviceOutcome:
        d = DeviceOutcome(i, f"id-{i}", "ios", "17", "wifi", "daily", "production")
        for name, value in attrs.items():
            setattr(d, name, value)
        return d

    m, end = Metrics(), 24 * 3600.0
    on_target = device(0, requests=5)
    m.ran(on_target, "1.0.2", 100.0, confirmed=True)
    crashed = device(1, requests=5)
    m.ran(crashed, "1.0.2", 100.0, confirmed=False)
    m.crashed(crashed, 100.0)
    rolled = device(2, requests=5)
    m.ran(rolled, "1.0.2", 100.0, confirmed=False)
    m.crashed(rolled, 100.0)
    m.stat(rolled, "update_fail", "1.0.2", 400.0)
    m.ran(rolled, "builtin", 400.0, confirmed=True)
    tampered = device(3, requests=5)
    m.stat(tampered, "download_0", "1.0.2", 50.0)
    m.stat(tampered, "checksum_fail", "1.0.2", 60.0)
    waiting = device(4, requests=5)
    m.stat(waiting, "download_0", "1.0.2", 50.0)
    m.stat(waiting, "download_complete", "1.0.2", 60.0)
    late = device(5, requests=5)
    m.stat(late, "download_0", "1.0.2", end + 60)  # after the end: not this run's
    rows = [
        record(d, end, "1.0.2").stuck
        for d in (on_target, crashed, rolled, tampered, waiting, late, device(6),
                  device(7, requests=4, unanswered=4), device(8, unbootable=True))
    ]  # fmt: skip
    assert rows == [
        "",
        "crashed on boot of 1.0.2, awaiting relaunch",
        "rolled back from 1.0.2 (crashed on boot)",
        "failed verification (checksum_fail=1)",
        "downloaded 1.0.2, waits for the next app start",
        "download of 1.0.2 started, not finished",
        "never checked: the app was not opened",
        "offline: none of its 4 requests answered",
        "unbootable: neither its bundle nor the fallback can load",
    ]
