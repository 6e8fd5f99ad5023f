"""`otasim run` as a user calls it: exit status, summary, report folder, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.etree import ElementTree

import pytest

from agent.config import AgentConfig
from simulator import device
from simulator.cli import main
from simulator.preflight import Endpoints
from simulator.runner import RunOptions, _config

TINY = """
description = "ten devices for two hours"
duration_h = 2
[[fleet]]
network = "lan"
behaviour = "heavy"
[[releases]]
version = "1.0.1"
size_kb = 20
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
[[expect]]
metric = "unbootable"
max = 0
[[expect]]
metric = "adoption"
version = "1.0.1"
min = {min}
{at}"""


def scenario(tmp_path: Path, adoption_min: float, at_h: float | None = None) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(min=adoption_min, at="" if at_h is None else f"at_h = {at_h}\n"))
    return str(path)


@pytest.mark.parametrize(("adoption_min", "status"), [(0.0, 0), (1.0, 1)])
def test_exit_status_follows_the_expectations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], adoption_min: float, status: int
) -> None:
    report = tmp_path / ("a-report-folder-whose-path-is-longer-than-a-terminal-line" * 2)
    argv = ["run", "--scenario", scenario(tmp_path, adoption_min, 0), "--devices", "10"]
    argv += ["--report", str(report), "--seed", "5", "--junit", str(tmp_path / "ci" / "j.xml")]
    assert main(argv) == status
    out = capsys.readouterr().out
    assert "tiny: 10 devices" in out and str(report / "report.html") in out
    assert "stuck (not on 1.0.1 at the end): " in out  # who is stuck, in the summary too
    # the JUnit file, parsed back: one test case per expectation, the missed one a failure
    suite = ElementTree.parse(tmp_path / "ci" / "j.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "otasim.tiny"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"unbootable <= 0", f"adoption(1.0.1) at 0 h >= {adoption_min:g}"}
    assert cases["unbootable <= 0"].find("failure") is None
    missed = cases[f"adoption(1.0.1) at 0 h >= {adoption_min:g}"].find("failure")
    assert (missed is not None) == (status == 1) and suite.get("failures") == str(status)
    if missed is not None:
        assert missed.get("message") == "measured 0.0 (share)"
    assert ("passed" if status == 0 else "FAILED") in out
    assert {p.name for p in report.iterdir()} >= {
        "report.html", "report.json", "devices.csv", "timeline.csv",
    }  # fmt: skip


def test_invalid_scenario_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("duration_h = -1\n[[fleet]]\n")
    assert main(["run", "--scenario", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"otasim: error: {path}: duration_h: -1 is out of range [0.01, inf]"


def test_server_options_need_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--app-id", "com.example.app"]) == 2
    assert "go with --server" in capsys.readouterr().err


def test_a_used_workdir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "devices" / "000001").mkdir(parents=True)
    assert main(["run", "--workdir", str(tmp_path)]) == 2
    assert "earlier run" in capsys.readouterr().err


def test_an_external_server_is_used_as_it_is(tmp_path: Path) -> None:
    from simulator.app import make_dist
    from simulator.publish import publish
    from simulator.release import create_keys
    from simulator.runner import RunOptions, simulate
    from simulator.scenario import Release
    from simulator.server.client import AdminClient
    from simulator.server.embedded import run_server

    private_pem, public_pem = create_keys()
    (tmp_path / "key.pub").write_bytes(public_pem)
    app = "com.example.external"
    with run_server(tmp_path / "server", in_process=False) as server:
        with AdminClient(server.url, server.admin_key) as admin:  # the user publishes
            dist = make_dist(Release("1.0.1", size_kb=20), tmp_path / "dist", seed=1)
            publish(admin, app_id=app, version="1.0.1", channel="production", source=dist,
                    private_pem=private_pem)  # fmt: skip
        report, _ = simulate(
            RunOptions(
                scenario(tmp_path, 0.5), devices=10, seed=2,
                report_dir=tmp_path / "r", server_url=server.url,
                public_key_file=tmp_path / "key.pub", app_id=app, progress=False,
            )
        )  # fmt: skip
    assert not report["run"]["embedded_server"] and report["run"]["server"] == server.url
    assert report["adoption"]["final"]["1.0.1"] >= 0.5 and report["passed"]
    notes = report["run"]["notes"]
    assert "pre-flight: the server answered a new device: offers 1.0.1" in notes
    assert report["timeline"] == [] and any("yours to perform" in n for n in notes)
    assert any("its own clock is real time" in n for n in notes)  # the fidelity guard
    assert report["stats"]["lost"] is None and "stats_lost" in report["unknown"]


def test_fleet_devices_run_without_the_real_time_rate_check() -> None:
    """The slow-retrieval rate check counts real time, which a device's virtual waits fill
    whenever a step or barrier is held up: a fleet's devices must not stop downloads by it,
    while a device's own default keeps it on."""
    base = "http://127.0.0.1:1"
    urls = Endpoints(f"{base}/updates", f"{base}/stats", f"{base}/channel_self")
    config = _config(urls, {"public_key": None}, "production", "capgo", RunOptions())
    assert config.stall_window_s == 0
    assert AgentConfig(update_url=urls.updates).stall_window_s > 0


def test_a_workdir_keeps_every_device_and_its_event_log_linked_from_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --workdir, every device's folder and event log stay there (what its agent did,
    in simulated time) and the stuck devices' rows link to those logs, not to the report
    folder's summaries."""
    crashing = TINY.format(min=0.0, at="").replace(
        "size_kb = 20\n", "size_kb = 20\ncrash_on_boot = { android = 1.0, ios = 1.0 }\n"
    )
    (tmp_path / "crash.toml").write_text(crashing)
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["run", "--scenario", str(tmp_path / "crash.toml"), "--devices", "10", "--seed", "3",
            "--no-progress", "--report", str(out), "--workdir", str(work)]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    devices = work / "devices"
    folders = sorted(p.name for p in devices.iterdir() if p.is_dir())
    assert folders == [f"{i:06d}" for i in range(10)]
    logs = {p.name: p.read_text() for p in devices.glob("*.log")}
    assert sorted(logs) == [f"{i:06d}.log" for i in range(10)]
    assert any("boot of 1.0.1: crashed" in text for text in logs.values())
    for text in logs.values():
        assert "request /updates POST" in text
        assert text.splitlines()[-1].split("s  ", 1)[1].startswith("end of the run: current ")
    report = json.loads((out / "report.json").read_text())
    listed = report["stuck"]["listed"]
    assert listed and all(Path(r["log"]) == devices.resolve() / f"{r['index']:06d}.log"
                          for r in listed)  # fmt: skip
    page = (out / "report.html").read_text()
    first = devices.resolve() / f"{listed[0]['index']:06d}.log"
    assert f'href="{first.as_uri()}"' in page
    assert not (out / "devices").exists()  # the logs are the workdir's


def test_an_event_log_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "LOG_LINES", 3)
    log = device.EventLog(tmp_path / "000000.log")
    for i in range(100):
        log.add(float(i), f"event {i}")
    log.close()
    lines = (tmp_path / "000000.log").read_text().splitlines()
    assert [line.split("s  ")[-1] for line in lines] == [
        "event 0",
        "event 1",
        "event 2",
        "... and 97 more, not logged",
    ]


def test_a_run_removes_the_folders_of_runs_killed_outright(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed outright (SIGKILL) leaves `otasim-run-PID-*`; the next run removes it
    when that PID no longer runs, and keeps a live process's folder and other names."""
    where = Path("/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = where / f"otasim-run-{gone.pid}-test"
    live = where / f"otasim-run-{os.getpid()}-test"
    other = where / "otasim-run-notapid-test"
    try:
        for folder in (dead, live, other):
            (folder / "devices").mkdir(parents=True)
        argv = ["run", "--scenario", scenario(tmp_path, 0.0), "--devices", "2", "--seed", "1",
                "--no-progress", "--report", str(tmp_path / "out")]  # fmt: skip
        assert main(argv) == 0
        capsys.readouterr()
        assert not dead.exists() and live.is_dir() and other.is_dir()
    finally:
        for folder in (dead, live, other):
            shutil.rmtree(folder, ignore_errors=True)
