"""`otasim check` as a user runs it: against `otasim serve` in its own process, usage errors
and an unreachable server (exit 2), --list, --only/--skip."""

from __future__ import annotations

import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from check_harness import APP, run_check

from simulator.checks.runner import all_checks, select
from simulator.cli import main
from simulator.publish import publish
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server


def test_done_when_command_against_otasim_serve(dist: Path, tmp_path: Path) -> None:
    """`otasim check --server URL --app-id com.example.app` against `otasim serve` passes."""
    with run_server(in_process=False) as server:
        with AdminClient(server.url, server.admin_key) as admin:
            publish(admin, app_id=APP, version="1.0.1", channel="production", source=dist)
        files = [tmp_path / "check.xml", tmp_path / "check.html", tmp_path / "check.json"]
        done = subprocess.run(
            [sys.executable, "-m", "simulator.cli", "check", "--server", server.url,
             "--app-id", APP, "--junit", str(files[0]), "--html", str(files[1]),
             "--json", str(files[2])],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: passed" in done.stdout
    suite = ET.parse(files[0]).getroot()[0]
    assert suite.get("failures") == "0" and int(suite.get("tests") or 0) == len(all_checks())
    assert "otasim check" in files[1].read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["check", "--server", url, "--app-id", APP]) == 3
    assert "cannot reach" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["--app-id", APP],  # no --server
        ["--server", "http://127.0.0.1:1", "--app-id", APP, "--only", "no-such-check"],
        ["--server", "http://127.0.0.1:1", "--app-id", APP, "--public-key", "/nonexistent.pem"],
        ["--server", "ftp://127.0.0.1:1", "--app-id", APP],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *args]) == 2
    assert "otasim: error:" in capsys.readouterr().err


def test_list_names_every_check_with_severity_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--list"]) == 0
    out = capsys.readouterr().out
    for check in all_checks():
        assert check.id in out and check.severity in out
        assert " ".join(check.why.split()[:5]) in " ".join(out.split())


def test_only_and_skip_select_by_id_family_and_glob() -> None:
    assert {c.family for c in select(["bundle"])} == {"bundle"}
    assert [c.id for c in select(["protocol.stats-*"])] == [
        "protocol.stats-batch", "protocol.stats-single",
    ]  # fmt: skip
    chosen = select(["decide"], ["decide.sticky"])
    assert "decide.sticky" not in {c.id for c in chosen} and chosen
    with pytest.raises(ValueError, match="no check matches"):
        select(["decide.nope"])


def test_only_runs_just_the_chosen_checks(
    reference: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = run_check(tmp_path, capsys, "--server", reference.url, "--app-id", APP,
                    "--only", "protocol.answer", "--only", "bundle.download")  # fmt: skip
    assert [c["id"] for c in got.report["checks"]] == ["protocol.answer", "bundle.download"]
    assert got.code == 0


def test_docs_list_every_check_with_its_severity_and_why() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "checks.md").read_text()
    for check in all_checks():
        assert f"| `{check.id}` | {check.severity} | {check.title} | {check.why} |" in docs
