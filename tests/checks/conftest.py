"""Servers for the checker tests: the reference server as is, and behind switchable defects."""

from __future__ import annotations

import json
import ssl
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from defect_server import DefectLayer, self_signed, serve_defective

from simulator import release
from simulator.cli import main
from simulator.publish import publish
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server

APP = "com.example.app"
SIGNED, PLAIN, ROLLOUT = "com.check.signed", "com.check.plain", "com.check.rollout"
DOWNGRADE, EVIL, ZIP = "com.check.downgrade", "com.check.evil", "com.check.zip"
PRIVATE_CHANNEL = "internal"


@dataclass(frozen=True)
class Checked:
    code: int
    report: dict[str, Any]
    out: str

    def status(self, check_id: str) -> str:
        return next(c["status"] for c in self.report["checks"] if c["id"] == check_id)

    def not_passing(self) -> dict[str, str]:
        """check id -> status, for every check that neither passed nor skipped."""
        return {
            c["id"]: c["status"]
            for c in self.report["checks"]
            if c["status"] not in ("pass", "skip")
        }


def run_check(tmp: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Checked:
    """`otasim check ARGS --json FILE` in this process.

    The latency budget is the plugin's 20 s responseTimeout unless ARGS sets one: a shared,
    noisy machine must not decide the suite (the `slow` defect case sets a tight one)."""
    out = tmp / "check.json"
    out.unlink(missing_ok=True)
    code = main(["check", "--max-p99-ms", "20000", *args, "--json", str(out)])
    printed = capsys.readouterr().out
    return Checked(code, json.loads(out.read_text()) if out.exists() else {}, printed)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """(private PEM, path of the public PEM)."""
    private, public = release.create_keys()
    path = tmp_path_factory.mktemp("keys") / "public.pem"
    path.write_bytes(public)
    return private, path


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    (folder / "index.html").write_text("<html><body>release</body></html>")
    (folder / "app.js").write_text("console.log('release')\n" * 50)
    return folder


@pytest.fixture(scope="session")
def reference(keys: tuple[bytes, Path], dist: Path) -> Iterator[RunningServer]:
    """The reference server with com.example.app 1.0.1 on production: signed, encrypted,
    with a delta manifest."""
    with run_server() as server, AdminClient(server.url, server.admin_key) as admin:
        publish(admin, app_id=APP, version="1.0.1", channel="production", source=dist,
                private_pem=keys[0], delta=True)  # fmt: skip
        yield server


@dataclass(frozen=True)
class Defective:
    url: str
    ca_file: Path
    layer: DefectLayer


def _evil_zip(folder: Path) -> Path:
    path = folder / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("index.html", "<html></html>")
        archive.writestr("../outside.js", "escape()")
    return path


def _publish_apps(admin: AdminClient, keys: tuple[bytes, Path], dist: Path, tmp: Path) -> None:
    publish(admin, app_id=SIGNED, version="1.0.1", channel="production", source=dist,
            private_pem=keys[0])  # fmt: skip
    admin.set_channel(SIGNED, PRIVATE_CHANNEL, version="1.0.1", public=False)
    publish(admin, app_id=PLAIN, version="1.0.1", channel="production", source=dist, delta=True)
    for app in (ROLLOUT, DOWNGRADE, ZIP):
        publish(admin, app_id=app, version="1.0.1", channel="production", source=dist)
    publish(admin, app_id=ROLLOUT, version="1.0.2", channel="production", source=dist,
            rollout_percent=50)  # fmt: skip
    admin.set_channel(DOWNGRADE, "production", disable_auto_update_under_native=False)
    evil = _evil_zip(tmp)
    admin.create_app(EVIL)
    admin.upload_bundle(EVIL, "1.0.1", zip_path=evil, checksum=release.file_sha256(evil))
    admin.set_channel(EVIL, "production", version="1.0.1", public=True)


@pytest.fixture(scope="module")
def defective(
    tmp_path_factory: pytest.TempPathFactory, keys: tuple[bytes, Path], dist: Path
) -> Iterator[Defective]:
    """The reference app over HTTPS behind a `DefectLayer`, with the apps above published,
    and a plain-http server holding the same plain zip (for the http-bundle-url defect)."""
    tmp = tmp_path_factory.mktemp("defective")
    cert = self_signed(tmp)
    (tmp / "data").mkdir()
    tls = ssl.create_default_context(cafile=str(cert[0]))
    with serve_defective(tmp / "data", cert) as (url, admin_key, layer), run_server() as plain:
        with AdminClient(url, admin_key, verify=tls) as admin:
            _publish_apps(admin, keys, dist, tmp)
        with AdminClient(plain.url, plain.admin_key) as other:
            publish(other, app_id=PLAIN, version="1.0.1", channel="production", source=dist,
                    delta=True)  # fmt: skip
        layer.plain_base = plain.url
        layer.real_app_id = PLAIN
        yield Defective(url, cert[0], layer)
