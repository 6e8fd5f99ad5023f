"""otasim serve / publish / admin as a user runs them: real processes, one-line errors."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.release import create_keys
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer

from .conftest import add_bundle, device


def otasim(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def as_admin(server: RunningServer) -> dict[str, str]:
    return {"OTASIM_SERVER": server.url, "OTASIM_API_KEY": server.admin_key}


def one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otasim: error: "), result.stderr
    assert fragment in lines[0]


def test_publish_encrypted_then_rollout_pause_rollback(
    as_admin: dict[str, str], tmp_path: Path, server: RunningServer
) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<html>v1</html>")
    key = tmp_path / "private.pem"
    key.write_bytes(create_keys()[0])
    app = ["--app-id", "com.cli.app", "--channel", "production"]
    first = otasim(
        "publish", *app, "--version", "1.0.1", "--key", str(key), str(dist), env=as_admin
    )
    assert first.returncode == 0, first.stderr
    (line,) = first.stdout.splitlines()  # one line, what was published where
    assert line.startswith("published 1.0.1 of com.cli.app on channel production (file ")
    (dist / "index.html").write_text("<html>v2</html>")
    second = otasim(
        "publish",
        *app,
        "--version",
        "1.0.2",
        "--key",
        str(key),
        "--rollout",
        "10",
        "--json",
        str(dist),
        env=as_admin,
    )
    (line,) = second.stdout.splitlines()  # --json: the server's answer, on one line
    published: dict[str, Any] = json.loads(line)
    assert published["channel"]["rollout_bps"] == 1000 and published["channel"]["public"]
    assert published["bundle"]["version"] == "1.0.2"
    paused = otasim("admin", "rollout-pause", "com.cli.app", "production", env=as_admin)
    assert json.loads(paused.stdout)["rollout_paused"] is True
    back = otasim("admin", "rollback", "com.cli.app", "production", "1.0.1", env=as_admin)
    assert json.loads(back.stdout)["rollout_version"] is None
    stats = json.loads(otasim("admin", "stats", "com.cli.app", env=as_admin).stdout)
    assert stats["app_id"] == "com.cli.app"
    bundles = json.loads(otasim("admin", "bundles", "com.cli.app", env=as_admin).stdout)
    assert [b["encrypted"] for b in bundles] == [True, True]


def test_errors_are_one_line_with_a_nonzero_exit(as_admin: dict[str, str], tmp_path: Path) -> None:
    one_line_error(otasim("admin", "apps"), "--server and --api-key are required")
    wrong = {**as_admin, "OTASIM_API_KEY": "nope"}
    one_line_error(otasim("admin", "apps", env=wrong), "401 invalid_api_key")
    one_line_error(otasim("admin", "rollback", "com.none.app", "x", "1.0.0", env=as_admin), "404")
    args = ["publish", "--app-id", "com.cli.err", "--version", "1.0.0", "--channel", "p"]
    one_line_error(otasim(*args, str(tmp_path / "missing"), env=as_admin), "no such file")
    one_line_error(
        otasim(*args, "--key", str(tmp_path / "nokey.pem"), str(tmp_path), env=as_admin),
        "cannot read",
    )
    unreachable = {**as_admin, "OTASIM_SERVER": "http://127.0.0.1:9"}
    one_line_error(otasim("admin", "apps", env=unreachable), "unreachable")


def test_serve_on_a_busy_port_is_one_line(server: RunningServer, tmp_path: Path) -> None:
    port = server.url.rsplit(":", 1)[1]
    one_line_error(otasim("serve", "--port", port, "--data", str(tmp_path)), "cannot start")


def test_help_answers(tmp_path: Path) -> None:
    for command in ("serve", "publish", "admin"):
        result = otasim(command, "--help")
        assert result.returncode == 0 and "usage: otasim" in result.stdout
    assert "rollout-pause" in otasim("admin", "--help").stdout


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_serve_over_tls_prints_url_and_first_start_key(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "simulator.cli",
        "serve",
        "--port",
        "0",
        "--data",
        str(tmp_path / "d"),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        admin_line = proc.stdout.readline()
        assert url.startswith("https://127.0.0.1:")
        assert admin_line.startswith("admin API key (role all, shown once): otasim_")
        assert httpx.get(
            f"{url}/updates", verify=ssl.create_default_context(cafile=cert)
        ).json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    one_line_error(otasim("serve", "--tls-cert", str(cert)), "--tls-cert and --tls-key go together")


def test_public_url_is_the_base_of_download_urls(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "simulator.cli",
        "serve",
        "--port",
        "0",
        "--data",
        str(tmp_path / "data"),
        "--public-url",
        "https://cdn.example.test/ota/",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        key = proc.stdout.readline().split()[-1]
        with AdminClient(url, key) as admin:
            admin.create_app("com.cdn.app")
            add_bundle(admin, "com.cdn.app", "1.0.1", tmp_path)
            admin.set_channel("com.cdn.app", "production", version="1.0.1", public=True)
        answer = httpx.post(f"{url}/updates", json=device("com.cdn.app")).json()
        assert answer["url"].startswith("https://cdn.example.test/ota/files/")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
