"""The same scenario and seed give the same fleet life, whatever the machine does meanwhile.

Each run is compared with everything it outputs: devices.csv and timeline.csv byte for byte,
report.json field for field except the documented wall-clock fields (`WALL_CLOCK`). One run
has CPU-burning processes competing for the cores; another is split over two processes.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from simulator import shards
from simulator.device import VirtualDevice
from simulator.runner import RunOptions, simulate

# report.json "run" fields that describe the machine, not the fleet (docs/simulator.md)
WALL_CLOCK = ("started_at", "wall_s", "speedup", "wall", "server")
SCENARIO = "flaky-network"  # faults, retries, offline periods: every random stream at work
DEVICES = 30


def _burn(until: float) -> None:
    while time.monotonic() < until:
        sum(i * i for i in range(10_000))


@contextmanager
def cpu_burners(n: int = 2, limit_s: float = 120.0) -> Iterator[None]:
    """`n` processes spinning on the CPU (each ends by itself after `limit_s`)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_burn, args=(time.monotonic() + limit_s,)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


def outputs(
    tmp_path: Path, name: str, scenario: str, seed: int = 5, **options: Any
) -> dict[str, Any]:
    """A run's report folder: devices.csv and timeline.csv as bytes, report.json parsed."""
    out = tmp_path / name
    simulate(
        RunOptions(scenario, devices=DEVICES, seed=seed, report_dir=out, progress=False, **options)
    )
    report = json.loads((out / "report.json").read_text())
    for field in WALL_CLOCK:
        report["run"].pop(field)
    for endpoint in report["requests"].values():
        endpoint.pop("latency_ms")  # real milliseconds of the loopback exchanges
    return {
        "devices.csv": (out / "devices.csv").read_bytes(),
        "timeline.csv": (out / "timeline.csv").read_bytes(),
        "report.json": report,
    }


def assert_same(first: dict[str, Any], second: dict[str, Any]) -> None:
    for name in first:
        assert first[name] == second[name], name


def test_same_seed_same_outputs_under_cpu_contention(tmp_path: Path) -> None:
    quiet = outputs(tmp_path, "quiet", SCENARIO)
    with cpu_burners():
        loaded = outputs(tmp_path, "loaded", SCENARIO)
    assert_same(quiet, loaded)
    assert quiet["report.json"]["faults"]["offline"] > 0  # the random streams really ran
    other = outputs(tmp_path, "other-seed", SCENARIO, seed=6)
    assert other["devices.csv"] != quiet["devices.csv"]  # the comparison can fail


def test_two_processes_report_as_one(tmp_path: Path) -> None:
    one = outputs(tmp_path, "one", "mitm-tamper")
    two = outputs(tmp_path, "two", "mitm-tamper", processes=2)
    assert one["report.json"]["mitm"].get("swap", 0) > 0  # shared knowledge crossed shards
    assert_same(one, two)


def test_the_clock_step_changes_how_much_runs_at_once_never_what_happens(tmp_path: Path) -> None:
    """A step's window is concurrency, not resolution: each device keeps its exact time."""
    wide = outputs(tmp_path, "wide", "staged-rollout", window_s=3600.0)
    narrow = outputs(tmp_path, "narrow", "staged-rollout", window_s=1.0)
    assert_same(wide, narrow)


@pytest.mark.parametrize("scenario", ["flaky-network", "bad-release-rollback"])
def test_idle_devices_that_drop_their_agent_live_as_those_that_keep_it(
    tmp_path: Path, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sleeping app's agent is rebuilt from its folder at the next wake: no output shows it."""
    woken: list[bool] = []
    wake = VirtualDevice._wake

    async def counted(self: VirtualDevice) -> None:
        woken.append(self.asleep)
        await wake(self)

    monkeypatch.setattr(VirtualDevice, "_wake", counted)
    monkeypatch.setattr(VirtualDevice, "sleep_drops_agent", False)
    kept = outputs(tmp_path, "kept", scenario)
    assert not any(woken)
    monkeypatch.setattr(VirtualDevice, "sleep_drops_agent", True)
    monkeypatch.setattr(VirtualDevice, "drop_agent_after_s", 0.0)  # at every sleep it can
    dropped = outputs(tmp_path, "dropped", scenario)
    assert sum(woken) > DEVICES  # the devices really slept without their agent, and woke
    assert_same(kept, dropped)


def test_a_fleet_process_with_few_connections_waits_for_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many more devices in a step than connections, and slow bodies paced past their step:
    devices start as others park and never wait on the clock holding a connection, so none
    waits for one until a real-time timeout, and the outputs are those of a roomy pool."""
    roomy = outputs(tmp_path, "roomy", SCENARIO, window_s=0.01)
    monkeypatch.setattr(shards, "CONNECTIONS", 1)  # without the release: 6 timeouts, 124 s
    monkeypatch.setattr(shards, "DEVICES_AT_ONCE", 1)
    tight = outputs(tmp_path, "tight", SCENARIO, window_s=0.01)
    assert not [n for n in tight["report.json"]["run"]["notes"] if "timeout" in n]
    assert_same(roomy, tight)
