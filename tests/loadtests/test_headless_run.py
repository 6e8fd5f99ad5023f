"""Headless Locust runs of device users against the embedded reference server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from locust_run import (
    APP_ID,
    BROKEN_APP_ID,
    LOCUST_CONF,
    TAMPERED_APP_ID,
    VERSION,
    Target,
    device_versions,
    locust,
    outcome_rows,
    stats_rows,
)

from simulator.server.client import AdminClient


def test_device_users_install_the_release(target: Target, tmp_path: Path) -> None:
    devices = tmp_path / "devices"
    args = [
        "--config", str(LOCUST_CONF),  # the app id and fleet mix come from it
        "--headless", "-u", "100", "-r", "50", "-t", "20s", "--csv", str(tmp_path / "run"),
        "--max-error-ratio", "0.05", "--min-update-success-ratio", "0.95",
        *target.locust_args(devices),
    ]  # fmt: skip
    done = locust(args)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = stats_rows(tmp_path / "run")
    assert {("POST", "/updates"), ("GET", "bundle"), ("POST", "/stats")} <= rows.keys()
    http = [row for key, row in rows.items() if key != ("", "Aggregated")]
    assert all(row["Type"] in ("GET", "POST", "PUT") for row in http)  # no outcome rows
    total = int(rows[("", "Aggregated")]["Request Count"])
    assert total == sum(int(row["Request Count"]) for row in http)
    ids, versions, pending = device_versions(devices)
    assert len(ids) == len(set(ids)) == 100
    installed = versions.count(VERSION)
    assert installed >= 80, versions
    assert outcome_rows(tmp_path / "run")[("update", "installed")] == installed
    with AdminClient(target.server.url, target.server.admin_key) as admin:
        on_server = admin.stats(APP_ID, VERSION)["versions"][VERSION]["installs"]
    assert installed - pending <= on_server <= installed


def test_a_tampered_release_is_refused_once_per_device_and_fails_the_run(
    target: Target, tmp_path: Path
) -> None:
    devices = tmp_path / "devices"
    args = [
        "--headless", "-u", "10", "-r", "10", "-t", "8s", "--csv", str(tmp_path / "run"),
        "--host", target.server.url, "--app-id", TAMPERED_APP_ID, "--device-root", str(devices),
        "--min-update-success-ratio", "0.5",
    ]  # fmt: skip
    done = locust(args)
    assert done.returncode == 1, done.stderr[-4000:]
    assert "threshold missed: update success ratio 0.0000" in done.stderr
    rows, outcomes = stats_rows(tmp_path / "run"), outcome_rows(tmp_path / "run")
    assert ("update", "installed") not in outcomes
    assert outcomes[("update", "verification failure")] == 10
    assert rows[("GET", "bundle")]["Request Count"] == "10"  # held back: backoff 600 s
    _, versions, _ = device_versions(devices)
    assert len(versions) == 10 and VERSION not in versions


def test_a_release_that_never_boots_is_rolled_back_and_never_reinstalled(
    target: Target, tmp_path: Path
) -> None:
    args = [
        "--headless", "-u", "10", "-r", "10", "-t", "25s", "--csv", str(tmp_path / "run"),
        "--host", target.server.url, "--app-id", BROKEN_APP_ID,
        "--device-root", str(tmp_path / "devices"), "--session-s", "1",
        "--min-update-success-ratio", "1",
    ]  # fmt: skip
    done = locust(args)
    assert done.returncode == 1, done.stderr[-4000:]  # rollbacks fail the success ratio
    assert "threshold missed: update success ratio" in done.stderr
    assert stats_rows(tmp_path / "run")[("", "Aggregated")]["Failure Count"] == "0"
    outcomes = outcome_rows(tmp_path / "run")
    rolled_back = outcomes[("update", "rolled back")]
    assert rolled_back >= 1
    assert rolled_back <= outcomes[("update", "installed")] <= 10  # never installed twice


LEAK_CHECK = """
import socket, sys
from simulator.cli import main
code = main(sys.argv[1:])
leaked = [m for m in ("gevent", "locust") if m in sys.modules]
assert not leaked and not socket.socket.__module__.startswith("gevent"), leaked
sys.exit(code)
"""


def test_otasim_loadtest_fails_on_tight_thresholds_without_importing_gevent(
    tmp_path: Path,
) -> None:
    out = tmp_path / "report"
    args = [
        "loadtest", "-u", "5", "-r", "5", "-t", "8s", "--report", str(out),
        "--", "--max-p95-updates-ms", "0.001", "--min-update-success-ratio", "1.5",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", LEAK_CHECK, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "threshold missed: p95 of /updates" in done.stderr
    assert "threshold missed: update success ratio" in done.stderr
    assert (out / "report.html").is_file() and (out / "locust_stats.csv").is_file()
    assert "AssertionError" not in done.stderr


def test_a_retried_then_completed_request_is_one_success(tmp_path: Path) -> None:
    """A server that drops every other /updates connection of each device (a flaky
    keep-alive): each check is retried once and completes; Locust shows no failure."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "simulator"))
    from family_servers import old_capgo

    with old_capgo(drop_odd=True) as server:
        args = [
            "--headless", "-u", "4", "-r", "4", "-t", "6s", "--csv", str(tmp_path / "run"),
            "--host", server.url, "--app-id", APP_ID, "--device-root", str(tmp_path / "d"),
            "--max-error-ratio", "0",
        ]  # fmt: skip
        done = locust(args)
        dropped = sum(n // 2 + n % 2 for n in server.seen.values())
    assert done.returncode == 0, done.stderr[-4000:]
    rows, outcomes = stats_rows(tmp_path / "run"), outcome_rows(tmp_path / "run")
    checks = rows[("POST", "/updates")]
    assert checks["Failure Count"] == "0" and int(checks["Request Count"]) >= 4
    retries = outcomes[("retry", "POST /updates")]
    assert retries == dropped and abs(retries - int(checks["Request Count"])) <= 4


def test_device_users_speak_the_dialect_given(target: Target, tmp_path: Path) -> None:
    """`--dialect appflow`: every user checks and downloads as an Appflow device (its check
    and file-list requests, per-file downloads, no stats) and installs the release."""
    devices = tmp_path / "devices"
    args = [
        "--config", str(LOCUST_CONF), "--dialect", "appflow",
        "--headless", "-u", "20", "-r", "20", "-t", "12s", "--csv", str(tmp_path / "run"),
        *target.locust_args(devices),
    ]  # fmt: skip
    done = locust(args)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = stats_rows(tmp_path / "run")
    assert ("GET", "delta file") in rows and ("POST", "/updates") in rows
    assert ("GET", "/updates") in rows  # the file list: the check's second exchange
    assert not any(name == "/stats" for _, name in rows)
    ids, versions, _ = device_versions(devices)
    assert len(ids) == 20 and versions.count(VERSION) >= 16, versions
