"""The Locust users and the fleet share one app model (`simulator.app`): the users load no
asyncio driver, and a release boots the same way under both drivers (a slow start past
appReadyTimeout is rolled back, one within it is kept, a crash on boot is rolled back)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from locust_run import VERSION, Target, device_versions, locust, outcome_rows

from simulator.app import make_dist
from simulator.publish import publish
from simulator.runner import RunOptions, simulate
from simulator.scenario import Release
from simulator.server.client import AdminClient

# what the simulator's asyncio side would bring into Locust's gevent process
ASYNCIO_SIDE = (
    "agent.drivers.aio",
    "agent.drivers.http_aiohttp",
    "aiohttp",
    "simulator.device",
    "simulator.fleet",
    "simulator.clock",
    "simulator.shards",
)
PROBE = (
    "import sys, {module}\n"
    f"print(' '.join(m for m in {ASYNCIO_SIDE!r} if m in sys.modules))\n"
    "print('simulator.app' in sys.modules)\n"
)


def _loaded(module: str) -> tuple[list[str], bool]:
    """(asyncio-side modules loaded, whether the app model is) by importing `module` alone."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    side, app = out.stdout.splitlines()
    return side.split(), app == "True"


def test_the_locust_users_load_the_app_model_and_no_asyncio_driver() -> None:
    assert _loaded("loadtests.users") == ([], True)
    assert _loaded("loadtests.locustfile") == ([], True)


def test_the_probe_sees_the_asyncio_driver_of_the_fleet() -> None:
    side, app = _loaded("simulator.fleet")
    assert {"agent.drivers.aio", "simulator.device", "simulator.fleet"} <= set(side) and app


def _scenario(start_s: float, crash_p: float, app_id: str) -> str:
    """The fleet's slow-start scenario (tests/simulator/test_app_start.py), for `app_id`."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "simulator"))
    from test_app_start import start_scenario

    return start_scenario(start_s, crash_p, app_id)


def _fleet_rolled_back(scenario: Path, report: Path) -> list[bool]:
    """For each simulated device that booted VERSION: whether it was rolled back from it."""
    simulate(RunOptions(str(scenario), devices=6, report_dir=report, progress=False))
    rows = list(csv.DictReader((report / "devices.csv").read_text().splitlines()))
    return [VERSION in r["rolled_back"].split() for r in rows if VERSION in r["versions_run"]]


def _locust_rolled_back(target: Target, scenario: Path, app_id: str, tmp: Path) -> list[bool]:
    """For each Locust device that installed VERSION: whether it was rolled back from it."""
    start_s, crash_p = BOOTS[app_id]
    release = Release(VERSION, 8, (("ios", crash_p), ("android", crash_p)), start_s=start_s)
    dist = make_dist(release, tmp / "dist", seed=3)
    with AdminClient(target.server.url, target.server.admin_key) as admin:
        publish(admin, app_id=app_id, version=VERSION, channel="production", source=dist)
    args = [
        "--headless", "-u", "5", "-r", "5", "-t", "22s", "--csv", str(tmp / "run"),
        "--host", target.server.url, "--app-id", app_id, "--fleet-mix", str(scenario),
        "--device-root", str(tmp / "devices"), "--session-s", "1",
    ]  # fmt: skip
    done = locust(args)
    assert done.returncode in (0, 1), done.stderr[-4000:]
    outcomes = outcome_rows(tmp / "run")
    installed = outcomes.get(("update", "installed"), 0)
    rolled_back = outcomes.get(("update", "rolled back"), 0)
    _, versions, _ = device_versions(tmp / "devices")
    assert len(versions) == 5 and installed == 5  # each device installed it once
    assert rolled_back == 5 - versions.count(VERSION)  # ... and runs it unless rolled back
    return [True] * rolled_back + [False] * (installed - rolled_back)


# (start_s, crash_on_boot) per app; appReadyTimeout is 10 s: a start 2 s after the boot is in
# time, 10.5 s is too late; a crash kills the app, and its next cold start rolls back
BOOTS = {"com.example.quick": (2.0, 0.0), "com.example.slow": (10.5, 0.0),
         "com.example.crash": (0.0, 1.0)}  # fmt: skip


@pytest.mark.parametrize(("app_id", "rolled_back"), [("com.example.quick", False),
                                                     ("com.example.slow", True),
                                                     ("com.example.crash", True)])  # fmt: skip
def test_a_release_boots_alike_in_the_fleet_and_under_locust(
    target: Target, tmp_path: Path, app_id: str, rolled_back: bool
) -> None:
    start_s, crash_p = BOOTS[app_id]
    scenario = tmp_path / "start.toml"
    scenario.write_text(_scenario(start_s, crash_p, app_id))
    fleet = _fleet_rolled_back(scenario, tmp_path / "report")
    users = _locust_rolled_back(target, scenario, app_id, tmp_path)
    assert len(fleet) == 6 and set(fleet) == {rolled_back}
    assert set(users) == {rolled_back}
