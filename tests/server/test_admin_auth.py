"""Every admin route refuses missing, wrong and under-privileged keys; no route leaks a key."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from simulator.server.admin_api import ROUTES
from simulator.server.auth import ROLES, hash_key
from simulator.server.client import AdminClient, AdminError
from simulator.server.embedded import RunningServer

PARAMS = {
    "app_id": "com.auth.app",
    "channel": "production",
    "action": "pause",
    "device_id": str(uuid.uuid4()),
    "key_id": "999999",
    "version": "1.0.1",
    "dialect": "expo",
}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PARAMS[m.group(1)], path)


@pytest.fixture(scope="module")
def keys(admin: AdminClient) -> dict[str, str]:
    """A secret per role."""
    return {role: admin.create_key(f"test-{role}", role)["key"] for role in ROLES}


@pytest.fixture
def raw(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as client:
        yield client


ROUTE_IDS = [f"{m} {p}" for m, p, _, _ in ROUTES]


@pytest.mark.parametrize(("method", "path", "role"), [r[:3] for r in ROUTES], ids=ROUTE_IDS)
def test_missing_wrong_and_weak_keys_are_refused(
    raw: httpx.Client, keys: dict[str, str], method: str, path: str, role: str
) -> None:
    url = concrete(path)
    headers_for = {
        "missing": {},
        "not bearer": {"Authorization": keys["all"]},
        "wrong": {"Authorization": "Bearer otasim_" + "A" * 43},
        "empty": {"Authorization": "Bearer"},
    }
    for label, headers in headers_for.items():
        response = raw.request(method, url, headers=headers, json={})
        assert response.status_code == 401, (label, response.text)
        assert response.json()["error"] == "invalid_api_key"
    for weaker in ROLES[: ROLES.index(role)]:
        headers = {"Authorization": f"Bearer {keys[weaker]}"}
        response = raw.request(method, url, headers=headers, json={})
        assert response.status_code == 403, (weaker, response.text)
        assert response.json()["error"] == "insufficient_role"
    allowed = raw.request(method, url, headers={"Authorization": f"Bearer {keys[role]}"}, json={})
    assert allowed.status_code not in (401, 403, 500), allowed.text


def test_revoked_key_stops_working(server: RunningServer, admin: AdminClient) -> None:
    created = admin.create_key("short-lived", "read")
    with AdminClient(server.url, created["key"]) as client:
        assert isinstance(client.list_apps(), list)
        admin.revoke_key(created["id"])
        with pytest.raises(AdminError) as refused:
            client.list_apps()
    assert refused.value.status == 401


def test_no_route_leaks_a_key_or_its_hash(
    server: RunningServer, admin: AdminClient, keys: dict[str, str], raw: httpx.Client
) -> None:
    admin.create_app(PARAMS["app_id"])
    secrets = [*keys.values(), server.admin_key]
    forbidden = secrets + [hash_key(s) for s in secrets]
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    for method, path, _, _ in ROUTES:
        if method != "GET":
            continue
        text = raw.get(concrete(path), headers=auth).text
        assert not any(secret in text for secret in forbidden), path
    assert all(
        set(k) == {"id", "name", "role", "created_at", "revoked_at"} for k in admin.list_keys()
    )


def test_every_admin_action_is_audited(admin: AdminClient) -> None:
    before = len(admin.audit())
    admin.create_app("com.auth.audited")
    admin.set_channel("com.auth.audited", "production", public=True)
    admin.create_key("audited", "read")
    actions = [a["action"] for a in admin.audit()[: len(admin.audit()) - before]]
    assert {"app.create", "channel.set", "key.create"} <= set(actions)
