"""Servers for the checker tests: the reference server as is, and behind switchable defects."""

from __future__ import annotations

import ssl
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from check_harness import (
    APP,
    BETA,
    DOWNGRADE,
    EVIL,
    PLAIN,
    PRIVATE_CHANNEL,
    ROLLOUT,
    SIGNED,
    ZIP,
    Defective,
)
from defect_server import self_signed, serve_defective

from simulator import release
from simulator.publish import publish
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server


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
        _self_set_beta(admin, APP, dist, keys[0])
        yield server


def _self_set_beta(admin: AdminClient, app: str, dist: Path, private: bytes | None) -> None:
    """Channel `beta` (devices may set it themselves) serving 1.0.2, production on 1.0.1."""
    publish(admin, app_id=app, version="1.0.2", channel=BETA, source=dist, private_pem=private)
    admin.set_channel(app, BETA, allow_device_self_set=True)


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
    _self_set_beta(admin, PLAIN, dist, None)
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
