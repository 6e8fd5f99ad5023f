"""`otasim device` as a user runs it: separate processes, real loopback HTTP, real SIGKILLs."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from capgo_peer import CapgoPeer, canned_json, make_zip, serve_peer

OTASIM = [sys.executable, "-m", "simulator.cli", "device"]


def otasim(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OTASIM, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def init(folder: Path, peer: CapgoPeer, *extra: str) -> None:
    done = otasim(
        "init",
        folder,
        "--server",
        peer.url,
        "--app-id",
        "com.example.app",
        "--platform",
        "android",
        "--version-build",
        "1.0.0",
        *extra,
    )
    assert done.returncode == 0, done.stderr


def status(folder: Path) -> dict[str, Any]:
    done = otasim("status", folder, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_update_failed_boot_and_rollback(peer: CapgoPeer, tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    peer.publish("1.0.1")
    init(folder, peer)
    launch = otasim("launch", folder)
    assert launch.returncode == 0, launch.stderr
    assert "stat  set_next 1.0.1" in launch.stdout and "event setNext" in launch.stdout
    assert status(folder)["next"]["version"] == "1.0.1"
    foreground = otasim("foreground", folder, "--verbose")
    assert (
        foreground.returncode == 0 and f"http  POST {peer.url}/updates -> 200" in foreground.stdout
    )
    crash = otasim("launch", folder, "--crash")
    assert crash.returncode == 0 and "stat  set 1.0.1" in crash.stdout
    booted = status(folder)
    assert booted["current"]["version"] == "1.0.1" and not booted["boot_confirmed"]
    rollback = otasim("launch", folder)
    assert rollback.returncode == 0
    assert "stat  update_fail 1.0.1" in rollback.stdout and "event updateFailed" in rollback.stdout
    final = status(folder)
    assert final["current"]["id"] == "builtin" and final["failed_versions"] == ["1.0.1"]
    assert final["pending_stats"] == 0 and final["boot_confirmed"]
    assert final["highest_confirmed"] is None  # a boot that failed never raises the floor
    actions = peer.actions()
    for expected in ("set_next", "set", "app_launch_timeout", "update_fail", "app_launch_ready"):
        assert expected in actions
    assert actions.index("set") < actions.index("update_fail")
    assert len(peer.bundle_requests()) == 1  # the failed version was not fetched again


def test_status_shows_the_anti_rollback_floor(peer: CapgoPeer, tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    peer.publish("1.0.1")
    init(folder, peer)
    assert otasim("launch", folder).returncode == 0  # downloads 1.0.1 as next
    assert status(folder)["highest_confirmed"] is None
    assert "floor    - " in otasim("status", folder).stdout
    assert otasim("launch", folder).returncode == 0  # boots 1.0.1 and confirms it
    assert status(folder)["highest_confirmed"] == "1.0.1"
    text = otasim("status", folder)
    assert text.returncode == 0 and "floor    1.0.1 (highest confirmed version)" in text.stdout


def test_usage_errors_are_one_line_and_exit_2(peer: CapgoPeer, tmp_path: Path) -> None:
    missing = otasim("launch", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "not a device folder" in missing.stderr
    init(tmp_path / "dev", peer)
    again = otasim(
        "init",
        tmp_path / "dev",
        "--server",
        peer.url,
        "--app-id",
        "com.example.app",
        "--platform",
        "ios",
        "--version-build",
        "1.0.0",
    )
    assert again.returncode == 2 and "already a device folder" in again.stderr
    bad = otasim(
        "init",
        tmp_path / "x",
        "--server",
        peer.url,
        "--app-id",
        "com.example.app",
        "--platform",
        "ios",
        "--version-build",
        "1.0.0",
        "--config",
        "appReadyTimeout=5",
    )
    assert bad.returncode == 2 and "app_ready_timeout_ms" in bad.stderr
    helped = otasim("launch", "--help")
    assert "exit codes" in helped.stdout and "--crash" in helped.stdout


def test_failed_download_exits_3(peer: CapgoPeer, tmp_path: Path) -> None:
    peer.publish("1.0.1", checksum="0" * 64)
    init(tmp_path / "dev", peer)
    done = otasim("launch", tmp_path / "dev")
    assert done.returncode == 3 and "stat  checksum_fail 1.0.1" in done.stdout
    assert status(tmp_path / "dev")["current"]["id"] == "builtin"


def _kill_when(folder: Path, peer: CapgoPeer, ready: Any) -> None:
    """Run `otasim device foreground` and SIGKILL it as soon as `ready()` holds."""
    proc = subprocess.Popen(
        [*OTASIM, "foreground", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not ready() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        assert proc.poll() is None, "the command finished before the kill point"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)


def test_sigkill_mid_download_then_resume(peer: CapgoPeer, tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    init(folder, peer)
    assert otasim("launch", folder).returncode == 0
    peer.publish("1.0.1", make_zip("1.0.1", {"big.bin": os.urandom(600_000)}))
    peer.slow_bundle_s = 0.02

    def part_started() -> bool:
        return any(p.stat().st_size > 100_000 for p in (folder / "downloads").glob("*.part"))

    _kill_when(folder, peer, part_started)
    assert status(folder)["current"]["id"] == "builtin"
    peer.slow_bundle_s = 0.0
    done = otasim("foreground", folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert status(folder)["next"]["version"] == "1.0.1"
    resumed = peer.bundle_requests()[-1]
    assert int(resumed["range"].removeprefix("bytes=").rstrip("-")) > 100_000


def test_sigkill_mid_swap_leaves_a_bootable_device(peer: CapgoPeer, tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    init(folder, peer)
    assert otasim("launch", folder).returncode == 0
    many = {f"assets/f{i}.js": b"x" * 200 for i in range(4000)}
    peer.publish("1.0.1", make_zip("1.0.1", many))

    def unpacking() -> bool:
        staging = folder / "staging"
        return staging.is_dir() and any(staging.iterdir())

    _kill_when(folder, peer, unpacking)
    killed = status(folder)
    assert killed["current"]["id"] == "builtin" and killed["next"] is None
    assert not (folder / "staging").exists()  # swept at the reopen
    assert otasim("launch", folder).returncode == 0
    assert otasim("background", folder).returncode == 0
    final = status(folder)
    assert final["current"]["version"] == "1.0.1" and final["boot_confirmed"]
    assert Path(final["current"]["path"], "assets", "f3999.js").read_bytes() == b"x" * 200


def test_walk_against_the_reference_server(tmp_path: Path) -> None:
    from simulator.server.embedded import run_server

    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html>1.0.1</html>")
    with run_server(tmp_path / "srv") as server:
        published = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulator.cli",
                "publish",
                "--server",
                server.url,
                "--api-key",
                server.admin_key,
                "--app-id",
                "com.example.app",
                "--version",
                "1.0.1",
                "--channel",
                "production",
                "--delta",
                str(dist),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert published.returncode == 0, published.stderr
        folder = tmp_path / "dev"
        done = otasim(
            "init",
            folder,
            "--server",
            server.url,
            "--app-id",
            "com.example.app",
            "--platform",
            "ios",
            "--version-build",
            "1.0.0",
        )
        assert done.returncode == 0, done.stderr
        outputs = []
        for args in (("launch",), ("foreground",), ("launch", "--crash"), ("launch",)):
            step = otasim(*args, folder)
            assert step.returncode == 0, step.stdout + step.stderr
            outputs.append(step.stdout)
        final = status(folder)
    assert "stat  download_manifest_complete 1.0.1" in outputs[0]  # the delta path
    assert "stat  update_fail 1.0.1" in outputs[3]
    assert final["current"]["id"] == "builtin" and final["failed_versions"] == ["1.0.1"]
    assert final["pending_stats"] == 0


def _make_certs(folder: Path) -> Path:
    """A throwaway CA and a 127.0.0.1 certificate, from the HTTP port tests' helper."""
    spec = importlib.util.spec_from_file_location(
        "loopback_http", Path(__file__).parent.parent / "http" / "loopback_http.py"
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules.get("loopback_http") or importlib.util.module_from_spec(spec)
    if "loopback_http" not in sys.modules:
        sys.modules["loopback_http"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    ca_path, _ = module.make_certs(folder)
    return Path(ca_path)


def test_https_verifies_by_default_and_takes_a_custom_ca(tmp_path: Path) -> None:
    ca_path = _make_certs(tmp_path)
    with serve_peer((tmp_path / "server.pem", tmp_path / "server.key")) as peer:
        peer.publish("1.0.1")
        init(tmp_path / "untrusted", peer)
        refused = otasim("launch", tmp_path / "untrusted")
        assert refused.returncode == 3 and "downloadFailed" in refused.stdout
        assert peer.requests == []  # the handshake failed: nothing reached the server
        init(tmp_path / "trusted", peer, "--config", f"ca_file={ca_path}")
        trusted = otasim("launch", tmp_path / "trusted")
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        assert status(tmp_path / "trusted")["next"]["version"] == "1.0.1"


def test_a_missing_or_bad_ca_file_is_refused_at_init_and_never_breaks_status(
    peer: CapgoPeer, tmp_path: Path
) -> None:
    """The audit's case: `ca_file` accepted by init, then every command (status included)
    ended in a FileNotFoundError traceback."""
    (tmp_path / "junk.pem").write_text("not a certificate")
    for ca in (tmp_path / "missing.pem", tmp_path / "junk.pem"):
        done = otasim(
            *("init", tmp_path / "dev", "--server", peer.url, "--app-id", "com.example.app"),
            *("--platform", "ios", "--version-build", "1.0.0", "--config", f"ca_file={ca}"),
        )
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "ca_file" in done.stderr and not (tmp_path / "dev").exists()
    ca_path = _make_certs(tmp_path)
    init(tmp_path / "dev", peer, "--config", f"ca_file={ca_path}")
    ca_path.unlink()  # removed after init
    launched = otasim("launch", tmp_path / "dev")
    assert launched.returncode == 2 and "Traceback" not in launched.stderr
    assert "ca_file" in launched.stderr
    assert status(tmp_path / "dev")["current"]["id"] == "builtin"


def test_unusable_device_folder_exits_4(peer: CapgoPeer, tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    init(folder, peer)
    (folder / "state.json").mkdir()  # a state file nothing can read or replace
    done = otasim("launch", folder)
    assert done.returncode == 4 and done.stderr.count("\n") == 1
    assert "state_corrupt" in done.stderr


def test_up_to_date_without_kind_exits_0_and_prints_the_finding(
    peer: CapgoPeer, tmp_path: Path
) -> None:
    no_kind = {"error": "no_new_version_available", "message": "No new version available"}
    plugin8, plugin6 = tmp_path / "p8", tmp_path / "p6"
    init(plugin8, peer)
    init(plugin6, peer, "--plugin", "plugin-6")
    peer.canned.append(canned_json(no_kind))
    launch = otasim("launch", plugin8)
    assert launch.returncode == 0, launch.stderr
    assert "stat  download_fail" in launch.stdout  # what plugin 8 does, faithfully
    assert "finding your server answers 'no_new_version_available' without a valid" in (
        launch.stdout
    )
    peer.canned.append(canned_json(no_kind))
    launch = otasim("launch", plugin6)
    assert launch.returncode == 0 and "finding" not in launch.stdout
    assert "download_fail" not in launch.stdout and "event noNeedUpdate" in launch.stdout
    sent = [body for _, path, body in peer.requests if path == "/stats"]
    assert sent and all(isinstance(body, dict) for body in sent[-3:])  # plugin 6: one per POST
    peer.canned.append(canned_json({"error": "no_channel", "message": "no channel"}))
    assert otasim("launch", plugin8).returncode == 3  # a real failure stays one


def test_init_with_separate_urls(peer: CapgoPeer, tmp_path: Path) -> None:
    folder = tmp_path / "dev"
    done = otasim(
        "init", folder, "--app-id", "com.example.app", "--platform", "ios",
        "--version-build", "1.0.0", "--updates-url", f"{peer.url}/updates",
        "--stats-url", f"{peer.url}/stats", "--channel-url", f"{peer.url}/channel_self",
        "--plugin", "plugin-7",
    )  # fmt: skip
    assert done.returncode == 0 and "plugin-7 7.34.0" in done.stdout
    record = json.loads((folder / "device.json").read_text())
    assert record["config"]["stats_url"] == f"{peer.url}/stats"
    assert record["identity"]["plugin_version"] == "7.34.0"
    missing = otasim(
        "init", tmp_path / "other", "--app-id", "com.example.app", "--platform", "ios",
        "--version-build", "1.0.0", "--stats-url", f"{peer.url}/stats",
    )  # fmt: skip
    assert missing.returncode == 2 and "no updates URL" in missing.stderr


def test_a_bundle_that_crashes_on_boot_is_rolled_back_as_in_the_fleet(tmp_path: Path) -> None:
    """The bundle's otasim-behaviour.json says it crashes on every iOS boot (as the fleet's
    and the Locust users' apps read it): `device` never confirms it, the next launch rolls
    back. An Android device of the same release boots it fine."""
    from simulator.server.embedded import run_server

    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html>1.0.1</html>")
    (dist / "otasim-behaviour.json").write_text('{"crash_on_boot": {"ios": 1.0}}')
    with run_server(tmp_path / "srv") as server:
        published = subprocess.run(
            [sys.executable, "-m", "simulator.cli", "publish", "--server", server.url,
             "--api-key", server.admin_key, "--app-id", "com.example.app",
             "--version", "1.0.1", "--channel", "production", str(dist)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        runs: dict[str, list[str]] = {}
        for platform in ("ios", "android"):
            folder = tmp_path / platform
            done = otasim("init", folder, "--server", server.url, "--app-id", "com.example.app",
                          "--platform", platform, "--version-build", "1.0.0")  # fmt: skip
            assert done.returncode == 0, done.stderr
            runs[platform] = [otasim(a, folder).stdout for a in ("launch", "launch", "launch")]
        ios, android = runs["ios"], runs["android"]
        final = status(tmp_path / "ios")
    crashed = "app   1.0.1: crashed on boot (otasim-behaviour.json: crash_on_boot ios = 1)"
    assert crashed in ios[1] and "stat  update_fail 1.0.1" in ios[2]
    assert final["current"]["id"] == "builtin" and final["failed_versions"] == ["1.0.1"]
    assert not any("app   " in out or "update_fail" in out for out in android)
    assert status(tmp_path / "android")["current"]["version"] == "1.0.1"
