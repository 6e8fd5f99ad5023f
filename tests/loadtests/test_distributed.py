"""A distributed Locust run: one master and two workers, separate processes on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from locust_run import (
    APP_ID,
    LOCUSTFILE,
    VERSION,
    Target,
    device_versions,
    outcome_rows,
    stats_rows,
)

USERS = 40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]
    with open(log, "wb") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def test_master_totals_are_the_workers_sum_and_identities_are_distinct(
    target: Target, tmp_path: Path
) -> None:
    devices, port = tmp_path / "devices", str(_free_port())
    master = _start(
        [
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
            "--headless", "--expect-workers", "2", "-u", str(USERS), "-r", "20", "-t", "15s",
            "--csv", str(tmp_path / "run"), "--app-id", APP_ID, *target.locust_args(devices),
        ],
        tmp_path / "master.log",
    )  # fmt: skip
    worker_args = [
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        port,
        "--app-id",
        APP_ID,
    ]
    workers = [
        _start([*worker_args, *target.locust_args(devices)], tmp_path / f"worker{n}.log")
        for n in range(2)
    ]
    try:
        assert master.wait(timeout=120) == 0, (tmp_path / "master.log").read_text()[-4000:]
        assert [w.wait(timeout=30) for w in workers] == [0, 0]
    finally:
        for process in (master, *workers):
            if process.poll() is None:
                process.kill()
    summaries = [json.loads(p.read_text()) for p in devices.glob("*/summary.json")]
    assert len({s["worker"] for s in summaries}) == 2
    master_total = int(stats_rows(tmp_path / "run")[("", "Aggregated")]["Request Count"])
    assert master_total > 0 and master_total == sum(s["requests"] for s in summaries)
    ids, versions, _ = device_versions(devices)
    assert sum(s["devices"] for s in summaries) == len(ids) == len(set(ids)) == USERS
    # the workers' update outcomes reach the master's own table, out of the request figures
    installed = outcome_rows(tmp_path / "run")[("update", "installed")]
    assert installed == versions.count(VERSION) > 0
