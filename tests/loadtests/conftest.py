"""Fixture of the Locust tests: the embedded reference server with a signed release."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from locust_run import APP_ID, VERSION, Target

from simulator.device import make_dist
from simulator.publish import publish
from simulator.release import create_keys
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
                    private_pem=private_pem)  # fmt: skip
        yield Target(server, work / "public.pem")
