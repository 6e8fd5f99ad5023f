"""Hypothesis-generated bad input to every endpoint: a 4xx (or a Capgo 200 refusal), never a
500, and the database stays consistent."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.server.admin_api import ROUTES
from simulator.server.client import AdminClient
from simulator.server.db import DB_NAME
from simulator.server.embedded import RunningServer

from .conftest import add_bundle, device

APP = "com.fuzz.app"
FIELDS = [*device(APP), "channel", "key_id", "custom_id", "action", "metadata", "old_version_name"]
ADMIN_FIELDS = [
    "app_id",
    "release",
    "version",
    "percent",
    "file_id",
    "manifest",
    "checksum",
    "channel",
    "public",
    "name",
    "role",
    "session_key",
    "auto_pause_fail_ratio",
    "disable_auto_update",
    "min_update_version",
    "private_pem",
]

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers() | finite | st.text(max_size=40)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def mutated(fields: list[str], base: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Mostly well-formed bodies with some fields replaced, dropped or added; sometimes junk."""
    changes = st.dictionaries(st.sampled_from(fields), values, max_size=4)
    return st.one_of(
        changes.map(lambda c: {**base, **c}),
        st.lists(changes.map(lambda c: {**base, **c}), max_size=3),
        values,
    )


@pytest.fixture(scope="module")
def fuzz_app(admin: AdminClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    admin.create_app(APP)
    add_bundle(admin, APP, "1.0.1", tmp_path_factory.mktemp("fuzz"))
    admin.set_channel(APP, "production", version="1.0.1", public=True)
    return APP


@pytest.fixture(scope="module")
def raw(server: RunningServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


def assert_consistent(data_dir: Path) -> None:
    with sqlite3.connect(data_dir / DB_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        dangling = db.execute(
            "SELECT c.name FROM channels c WHERE (c.version IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM bundles b WHERE b.app_id = c.app_id AND b.name = c.version)) "
            "OR (c.rollout_version IS NOT NULL AND NOT EXISTS (SELECT 1 FROM bundles b "
            "WHERE b.app_id = c.app_id AND b.name = c.rollout_version)) "
            "OR c.rollout_bps NOT BETWEEN 0 AND 10000"
        ).fetchall()
        assert dangling == []
        empty = db.execute(
            "SELECT name FROM bundles b WHERE file_id IS NULL AND NOT EXISTS "
            "(SELECT 1 FROM manifest_files m WHERE m.bundle_id = b.id)"
        ).fetchall()
        assert empty == []
        for (file_id,) in db.execute("SELECT file_id FROM blobs"):
            assert (data_dir / "files" / file_id).is_file()


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEVICE_PATHS = [
    ("POST", "/updates"),
    ("POST", "/stats"),
    ("POST", "/channel_self"),
    ("PUT", "/channel_self"),
]


@FUZZ
@given(data=st.data())
def test_device_endpoints_never_500(data: st.DataObject, raw: httpx.Client, fuzz_app: str) -> None:
    method, path = data.draw(st.sampled_from(DEVICE_PATHS))
    body = data.draw(mutated(FIELDS, device(fuzz_app, action="set", channel="production")))
    response = raw.request(method, path, json=body)
    assert response.status_code in (200, 400, 413, 429), response.text
    assert isinstance(response.json(), dict | list)


@FUZZ
@given(
    query=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=40), max_size=6),
    method=st.sampled_from(["GET", "DELETE"]),
)
def test_query_endpoints_never_500(
    query: dict[str, str], method: str, raw: httpx.Client, fuzz_app: str
) -> None:
    response = raw.request(method, "/channel_self", params={"app_id": fuzz_app, **query})
    assert response.status_code in (200, 400, 429), response.text


@FUZZ
@given(data=st.data())
def test_admin_routes_never_500(data: st.DataObject, raw: httpx.Client, fuzz_app: str) -> None:
    method, path, _, _ = data.draw(st.sampled_from([r for r in ROUTES if r[0] != "DELETE"]))
    params = {
        "app_id": fuzz_app,
        "channel": "production",
        "action": "pause",
        "device_id": "0f673663-459a-44c0-a7f5-613f2a4af3ab",
        "key_id": "77",
        "version": "1.0.1",
        "dialect": "expo",
    }
    url = path.replace("{key_id:int}", "{key_id}").format(**params)
    base = {"version": "1.0.1", "percent": 10, "channel": "production", "name": "k", "role": "read"}
    body = data.draw(mutated(ADMIN_FIELDS, base))
    response = raw.request(method, url, json=body)
    assert response.status_code < 500, response.text
    assert isinstance(response.json(), dict | list)


@pytest.mark.parametrize(
    "payload", [b"", b"{", b"\xff\xfe", b"[" * 100_000, b'{"a": NaN}', b"1e999999"]
)
@pytest.mark.parametrize(("method", "path"), [*DEVICE_PATHS, ("POST", "/api/apps")])
def test_malformed_bytes(raw: httpx.Client, method: str, path: str, payload: bytes) -> None:
    response = raw.request(method, path, content=payload)
    assert 400 <= response.status_code < 500, response.text


def test_huge_bodies_are_refused(raw: httpx.Client, fuzz_app: str) -> None:
    big = [device(fuzz_app, action="set", metadata={"k": "v" * 2000})] * 600
    response = raw.post("/stats", json=big)
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")


def test_database_is_consistent_after_the_fuzzing(server: RunningServer, raw: httpx.Client) -> None:
    raw.get(f"/api/apps/{APP}/stats")  # flushes buffered writes
    assert_consistent(server.data_dir)
