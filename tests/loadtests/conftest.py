"""Fixture of the Locust tests: the embedded reference server with a signed release."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from locust_run import APP_ID, BROKEN_APP_ID, TAMPERED_APP_ID, VERSION, Target

from simulator.app import make_dist
from simulator.publish import publish
from simulator.release import create_keys, zip_dist
from simulator.scenario import Release
from simulator.server.client import AdminClient
from simulator.server.embedded import run_server


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    work = tmp_path_factory.mktemp("target")
    private_pem, public_pem = create_keys()
    (work / "public.pem").write_bytes(public_pem)
    dist = make_dist(Release(VERSION, size_kb=32), work / "dist", seed=7)
    with run_server(work / "server") as server:
        with AdminClient(server.url, server.admin_key) as admin:
            publish(admin, app_id=APP_ID, version=VERSION, channel="production", source=dist,
                    private_pem=private_pem, dialects=("capawesome", "appflow"))  # fmt: skip
            _publish_tampered(admin, work)
            broken = make_dist(Release(VERSION, size_kb=8, boots=False), work / "broken", seed=9)
            publish(admin, app_id=BROKEN_APP_ID, version=VERSION, channel="production",
                    source=broken)  # fmt: skip
        yield Target(server, work / "public.pem")


def _publish_tampered(admin: AdminClient, work: Path) -> None:
    """TAMPERED_APP_ID serves VERSION as a zip whose bytes do not match its checksum."""
    zip_path = work / "tampered.zip"
    zip_dist(make_dist(Release(VERSION, size_kb=8), work / "tampered", seed=8), zip_path)
    admin.create_app(TAMPERED_APP_ID)
    wrong = hashlib.sha256(b"not these bytes").hexdigest()
    admin.upload_bundle(TAMPERED_APP_ID, VERSION, zip_path=zip_path, checksum=wrong)
    admin.set_channel(TAMPERED_APP_ID, "production", version=VERSION, public=True)
