"""otasim against servers that are not its own: pre-flight refusals, findings about the server,
unknowns marked unknown, each plugin profile's request shapes, separate URLs, --expect-release.

The servers are small loopback servers behaving like the families users run
(`family_servers`) and the reference server.
"""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path
from typing import Any

import pytest
from family_servers import old_capgo, plain

from simulator.cli import main
from simulator.runner import RunOptions, simulate

APP = "com.example.otasim"
SCENARIO = """
description = "a small fleet against someone else's server"
duration_h = 2
[[fleet]]
network = "lan"
behaviour = "heavy"
[[expect]]
metric = "tampered_activated"
max = 0
[[expect]]
metric = "unbootable"
max = 0
"""


def _scenario(tmp_path: Path) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "external.toml"
    path.write_text(SCENARIO)
    return str(path)


def _zip(marker: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("index.html", f"<html>{marker}</html>")
    return out.getvalue()


def _run(tmp_path: Path, **options: Any) -> dict[str, Any]:
    report, _ = simulate(
        RunOptions(
            _scenario(tmp_path), devices=6, seed=3,
            report_dir=tmp_path / "report", progress=False, **options,
        )
    )  # fmt: skip
    return report


# -- pre-flight ---------------------------------------------------------------------------


def _closed_port() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def _preflight_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(["run", "--scenario", _scenario(tmp_path), "--devices", "2", "--no-progress",
                 "--report", str(tmp_path / "report"), *argv])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 3 and captured.out == ""  # the server's answer, not a usage error
    assert not (tmp_path / "report").exists()  # the report folder the pre-flight made is gone
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otasim: error: ")
    return lines[0]


def test_a_closed_port_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _preflight_error(tmp_path, capsys, "--server", _closed_port())
    assert "pre-flight" in line and "no answer" in line and "refused" in line.lower()


def test_a_plain_web_server_answering_501_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with plain() as url:
        line = _preflight_error(tmp_path, capsys, "--server", url)
    assert "HTTP 501" in line and "not a Capgo-compatible updates endpoint" in line


def test_a_server_that_drops_connections_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with plain(drop=True) as url:
        line = _preflight_error(tmp_path, capsys, "--server", url)
    assert "pre-flight" in line and "no answer" in line


def test_separate_paths_need_their_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with old_capgo(updates_path="/api/check") as server:
        line = _preflight_error(tmp_path, capsys, "--server", server.url)
    assert f"POST {server.url}/updates: HTTP 404 not_found" in line


def test_an_unknown_app_and_a_wrong_key_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.app import make_dist
    from simulator.publish import publish
    from simulator.release import create_keys
    from simulator.scenario import Release
    from simulator.server.client import AdminClient
    from simulator.server.embedded import run_server

    private_pem, _ = create_keys()
    _, other_public = create_keys()
    (tmp_path / "other.pub").write_bytes(other_public)
    with run_server(tmp_path / "server", in_process=False) as server:
        line = _preflight_error(tmp_path, capsys, "--server", server.url, "--app-id", APP)
        assert f"does not know app {APP} (429 on_premise_app)" in line
        with AdminClient(server.url, server.admin_key) as admin:
            dist = make_dist(Release("1.0.1", size_kb=4), tmp_path / "dist", seed=1)
            publish(admin, app_id=APP, version="1.0.1", channel="production", source=dist,
                    private_pem=private_pem)  # fmt: skip
        line = _preflight_error(tmp_path, capsys, "--server", server.url, "--app-id", APP)
        assert "offers 1.0.1 encrypted, but no public key was given" in line
        line = _preflight_error(tmp_path, capsys, "--server", server.url, "--app-id", APP,
                                "--public-key", str(tmp_path / "other.pub"))  # fmt: skip
        assert "the public key does not match" in line and "key_id_mismatch" in line


def test_a_session_key_the_public_key_cannot_open_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.release import create_keys

    (tmp_path / "app.pub").write_bytes(create_keys()[1])
    with old_capgo(
        release=("1.0.1", _zip("1.0.1")), session_key="QUJDREVGR0hJSktMTU5PUA==:QUJD"
    ) as server:
        line = _preflight_error(tmp_path, capsys, "--server", server.url, "--app-id", APP,
                                "--public-key", str(tmp_path / "app.pub"))  # fmt: skip
    assert "the public key does not match 1.0.1" in line


def test_an_unwritable_report_folder_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("in the way")
    code = main(["run", "--scenario", _scenario(tmp_path), "--devices", "2", "--no-progress",
                 "--report", str(tmp_path / "file" / "report")])  # fmt: skip
    assert code == 2
    assert "not writable" in capsys.readouterr().err


# -- verdicts against a server written for plugin 6 ---------------------------------------


def test_no_kind_answers_are_a_finding_not_failures(tmp_path: Path) -> None:
    with old_capgo() as server:
        report = _run(tmp_path, server_url=server.url, app_id=APP)
        rows = list(server.stats_rows)
    assert report["stats"]["by_action"]["download_fail"] > 0  # what plugin-8 devices send
    assert report["failures"] == {}  # ... is no update failure
    finding, flags, batches = report["findings"]
    assert "without a valid `kind`" in finding["text"] and "plugin-8" in finding["text"]
    assert finding["events"] == report["stats"]["by_action"]["download_fail"]
    assert "not JSON booleans (allow_self_set: 0, public: 1)" in flags["text"]
    assert "stats batches" in batches["text"] and "without per-event `results`" in batches["text"]
    sent = sum(len(b) for b in server.stats_bodies)
    assert batches["events"] == report["stats"]["unconfirmed"] == sent > 0
    assert report["passed"]
    # plugin 8 batches stats: this server stores one row per POST with every field empty
    assert rows and all(r["action"] is None for r in rows)
    assert report["unknown"]["stats_lost"].startswith("the server's own records")
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Findings about the server" in page and "without a valid" in page


def test_plugin_6_speaks_the_servers_language(tmp_path: Path) -> None:
    with old_capgo() as server:
        report = _run(tmp_path, server_url=server.url, app_id=APP, plugin="plugin-6")
        bodies = list(server.stats_bodies)
        rows = list(server.stats_rows)
    assert report["findings"] == []  # plugin 6 has no listChannels: the int flags are moot
    assert "download_fail" not in report["stats"]["by_action"]
    assert report["run"]["plugin"] == "plugin-6"
    assert bodies and all(isinstance(b, dict) for b in bodies)
    assert all(b["plugin_version"] == "6.14.28" for b in bodies)
    assert all(r["action"] is not None and r["device_id"] for r in rows)


def test_separate_urls_and_time_to_adoption_from_the_devices(tmp_path: Path) -> None:
    paths = {"updates_path": "/api/check", "stats_path": "/api/stats", "channel_path": "/api/ch"}
    with old_capgo(release=("1.0.1", _zip("1.0.1")), **paths) as server:
        report = _run(
            tmp_path, updates_url=f"{server.url}/api/check", stats_url=f"{server.url}/api/stats",
            channel_url=f"{server.url}/api/ch", app_id=APP,
        )  # fmt: skip
        rows = len(server.stats_bodies)
    assert rows > 0 and report["adoption"]["final"]["1.0.1"] > 0
    assert "/api/check" in report["run"]["server"]
    adoption = report["adoption"]["time_to_adoption_h"]["1.0.1"]
    assert adoption["since"] == "first_download_started" and adoption["devices"] > 0
    # the published files are unknown: tampering cannot be checked, and says so
    assert report["updates"]["tampered_activated"] is None
    (tamper,) = (r for r in report["expectations"] if "tampered" in r["expect"])
    assert tamper["ok"] is None and "--expect-release" in tamper["reason"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert "unknown — devices booted 1.0.1" in page and "✔</td><td>at most 0 tampered" not in page


def test_expect_release_makes_the_tamper_check_work(tmp_path: Path) -> None:
    published = tmp_path / "published.zip"
    published.write_bytes(_zip("1.0.1"))
    altered = tmp_path / "altered"
    altered.mkdir()
    (altered / "index.html").write_text("<html>what we meant to ship</html>")
    with old_capgo(release=("1.0.1", _zip("1.0.1"))) as server:
        good = _run(tmp_path / "a", server_url=server.url, app_id=APP,
                    expect_releases={"1.0.1": published})  # fmt: skip
        bad = _run(tmp_path / "b", server_url=server.url, app_id=APP,
                   expect_releases={"1.0.1": altered})  # fmt: skip
    assert good["updates"]["tampered_activated"] == 0 and good["passed"]
    assert good["run"]["expected_releases"] == ["1.0.1"]
    assert bad["updates"]["tampered_activated"] > 0 and not bad["passed"]


def test_a_server_failing_most_requests_is_named_with_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with old_capgo(refuse_after=1) as server:  # the pre-flight check passes, then 503s
        code = main(["run", "--scenario", _scenario(tmp_path), "--devices", "3",
                     "--time-scale", "2880", "--no-progress", "--server", server.url,
                     "--app-id", APP, "--report", str(tmp_path / "report")])  # fmt: skip
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    refused = [f for f in report["findings"] if "refused or failed" in f["text"]]
    updates = report["requests"]["/updates"]
    assert any(f"{updates['count']:,} of {updates['count']:,} /updates" in f["text"]
               for f in refused)  # fmt: skip
    assert "503: " in refused[0]["text"] and "finding" in out and code in (0, 1)


@pytest.mark.parametrize("plugin", ["plugin-6", "plugin-7", "plugin-8"])
def test_each_profile_against_the_reference_server(tmp_path: Path, plugin: str) -> None:
    """The reference server takes each profile's shapes: single-object stats (6, 7) and
    batches answered with per-event results (8) all arrive; no finding."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        SCENARIO.replace('metric = "tampered_activated"\nmax = 0', 'metric = "stats_lost"\nmax = 0')
        + '[[releases]]\nversion = "1.0.1"\nsize_kb = 8\n'
        + '[[timeline]]\nat_h = 0\naction = "publish"\nversion = "1.0.1"\n'
    )
    report, _ = simulate(
        RunOptions(str(path), devices=6, seed=4, plugin=plugin,
                   report_dir=tmp_path / "report", progress=False)
    )  # fmt: skip
    assert report["passed"] and report["run"]["plugin"] == plugin
    assert report["stats"]["lost"] == 0 and report["stats"]["server_received"] > 0
    assert report["adoption"]["final"]["1.0.1"] > 0.5 and report["findings"] == []


def test_findings_merge_across_processes(tmp_path: Path) -> None:
    with old_capgo(release=("1.0.1", _zip("1.0.1"))) as server:
        report = _run(tmp_path, server_url=server.url, app_id=APP, processes=2)
        sent = sum(len(b) for b in server.stats_bodies)
    texts = [f["text"] for f in report["findings"]]
    assert any("without a valid `kind`" in t for t in texts)
    assert report["stats"]["unconfirmed"] == sent > 0
    assert report["adoption"]["time_to_adoption_h"]["1.0.1"]["devices"] > 0
    assert report["updates"]["tampered_activated"] is None


@pytest.mark.parametrize("retries", [0, 3])
def test_a_flipped_transfer_then_clean_ones_the_release_lands(tmp_path: Path, retries: int) -> None:
    """The first downloads are corrupted in transit; with the bounded retry (the default 3)
    devices that refused one take the release from a later, clean transfer; with none left
    they stay on what they run (a corrupted bundle is never activated)."""
    import csv

    with old_capgo(release=("1.0.1", _zip("1.0.1")), corrupt=6) as server:
        report = _run(tmp_path, server_url=server.url, app_id=APP, artefact_retries=retries)
    assert report["failures"]["checksum_fail"] == 6 and report["updates"]["unbootable"] == 0
    with open(tmp_path / "report" / "devices.csv", newline="") as handle:
        devices = list(csv.DictReader(handle))
    hit = [d for d in devices if "checksum_fail" in d["failures"]]
    landed = [d for d in hit if "1.0.1" in d["versions_run"].split()]
    assert hit and (landed if retries else not landed)
