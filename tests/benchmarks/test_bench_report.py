"""Report building: `build_report` and `write_report` (report.json, the CSVs, report.html with
its charts) for a fleet of 1 000 devices that lived a day through `steady-rollout`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from simulator.metrics import DeviceOutcome, Metrics
from simulator.report import RunInfo, build_report, write_report
from simulator.scenario import load_scenario

DEVICES = 1000


def fleet_day(seed: int = 1) -> tuple[Metrics, RunInfo]:
    rng = random.Random(seed)
    scenario = load_scenario("steady-rollout")
    metrics = Metrics()
    for i in range(DEVICES):
        device = DeviceOutcome(i, f"d{i}", "ios", "17", "wifi", "good", "production")
        metrics.devices.append(device)
        for version in ("1.0.1", "1.0.2"):
            t = rng.uniform(0, scenario.duration_s)
            metrics.stat(device, "download_zip_start", version, t)
            metrics.request(device, "bundle", 200, rng.uniform(0.05, 2.0), 1 << 20, False)
            for _ in range(4):
                metrics.request(device, "/updates", 200, rng.uniform(0.005, 0.2), 400, False)
            if rng.random() < 0.05:
                metrics.stat(device, "download_fail", version, t)
                continue
            metrics.stat(device, "download_complete", version, t)
            metrics.ran(device, version, t + 60, confirmed=rng.random() > 0.02)
    info = RunInfo(
        scenario=scenario, devices=DEVICES, seed=seed, time_scale=1440.0,
        server_url="http://127.0.0.1:0", embedded=True, started_at="2026-01-01T00:00:00Z",
        wall_s=60.0, published_s={"1.0.1": 0.0, "1.0.2": 3600.0}, server_received=None,
    )  # fmt: skip
    return metrics, info


@pytest.mark.benchmark(group="report")
def test_build_report(benchmark) -> None:
    metrics, info = fleet_day()
    report = benchmark(build_report, metrics, info)
    assert report["run"]["devices"] == DEVICES


@pytest.mark.benchmark(group="report")
def test_write_report_with_charts(benchmark, folder: Path) -> None:
    metrics, info = fleet_day()
    report = build_report(metrics, info)
    page = benchmark.pedantic(write_report, args=(report, metrics, info, folder), rounds=5)
    assert "<svg" in page.read_text()
    assert json.loads((folder / "report.json").read_text())["run"]["devices"] == DEVICES
