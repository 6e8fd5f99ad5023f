"""`otasim device` speaking Expo and CodePush, walked by hand against the reference server:
keys, a signed publish, update, a crashed boot, the rollback, and the failed version refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.server.embedded import run_server

TRUST = {"expo": "certificate", "codepush": "public_key"}


def otasim(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", *map(str, args)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("dialect", ["expo", "codepush"])
def test_walk_update_crash_rollback(tmp_path: Path, dialect: str) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html>1.0.1</html>")
    keys = otasim("keys", "create", "--dialect", dialect, "--out", tmp_path / "keys", "--json")
    assert keys.returncode == 0, keys.stderr
    made = json.loads(keys.stdout)
    with run_server(tmp_path / "srv") as server:
        published = otasim(
            "publish", "--server", server.url, "--api-key", server.admin_key, "--app-id",
            "com.example.app", "--version", "1.0.1", "--channel", "production",
            "--dialect", dialect, "--key", made["private_key"], dist,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        folder = tmp_path / "dev"
        init = otasim(
            "device", "init", folder, "--server", server.url, "--app-id", "com.example.app",
            "--platform", "ios", "--version-build", "1.0.0", "--dialect", dialect,
            "--public-key", made[TRUST[dialect]],
        )  # fmt: skip
        assert init.returncode == 0, init.stderr
        assert f"dialect {dialect}" in init.stdout
        outputs = []
        for args in (("launch",), ("foreground",), ("launch", "--crash"), ("launch",)):
            step = otasim("device", *args, folder)
            assert step.returncode == 0, step.stdout + step.stderr
            outputs.append(step.stdout)
        final = json.loads(otasim("device", "status", folder, "--json").stdout)
    assert "event setNext" in outputs[0]
    assert "stat  set 1.0.1" in outputs[2]
    assert "stat  update_fail 1.0.1" in outputs[3]
    assert final["current"]["id"] == "builtin" and final["failed_versions"] == ["1.0.1"]
    assert final["pending_stats"] == 0


def test_init_refuses_trust_material_the_dialect_cannot_use(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    done = otasim(
        "device", "init", tmp_path / "dev", "--server", "http://127.0.0.1:9", "--app-id",
        "com.example.app", "--platform", "ios", "--version-build", "1.0.0", "--dialect", "expo",
        "--public-key", bad,
    )  # fmt: skip
    assert done.returncode == 2 and "certificate" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
