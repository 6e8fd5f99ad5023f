"""POST /stats (single, batch, per-event results) and /channel_self (reference §4-§5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.server.client import AdminClient

from .conftest import add_bundle, device


@pytest.fixture
def app(admin: AdminClient, app_id: str, tmp_path: Path) -> str:
    for version in ("1.0.1", "1.0.2"):
        add_bundle(admin, app_id, version, tmp_path)
    admin.set_channel(app_id, "production", version="1.0.1", public=True)
    admin.set_channel(app_id, "beta", version="1.0.2", allow_device_self_set=True)
    admin.set_channel(app_id, "internal", version="1.0.2")
    return app_id


def event(app_id: str, action: str, version: str, **extra: Any) -> dict[str, Any]:
    return device(app_id, action=action, version_name=version, **extra)


def test_single_event_and_version_not_found(http: httpx.Client, app: str) -> None:
    assert http.post("/stats", json=event(app, "set", "1.0.1")).json() == {"status": "ok"}
    assert (
        http.post("/stats", json=event(app, "app_launch_start", "builtin")).json()["status"] == "ok"
    )
    assert http.post("/stats", json=event(app, "set", "9.9.9")).json() == {
        "error": "version_not_found",
        "message": "Version not found",
        "app_id": app,
        "version_name": "9.9.9",
    }


def test_batch_results_per_event(http: httpx.Client, app: str) -> None:
    batch = [
        event(app, "download_complete", "1.0.1"),
        event(app, "download_manifest_file_fail", "1.0.2:assets/app.js"),
        event(app, "set", "7.7.7"),
        {**event(app, "set", "1.0.1"), "platform": 3},
        event(app, "not_an_action", "1.0.1"),
    ]
    answer = http.post("/stats", json=batch).json()
    assert answer["status"] == "ok"
    results = answer["results"]
    assert [r["status"] for r in results] == ["ok", "ok", "error", "error", "error"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert results[2]["error"] == "version_not_found"
    assert results[2]["moreInfo"] == {"app_id": app, "version_name": "7.7.7"}
    assert results[3]["error"] == results[4]["error"] == "invalid_json_body"
    assert http.post("/stats", json=[]).json() == {"status": "ok", "results": []}


def test_batch_app_id_rules(http: httpx.Client, app: str) -> None:
    mixed = [event(app, "set", "1.0.1"), event("com.other.app", "set", "1.0.1")]
    assert http.post("/stats", json=mixed).json()["error"] == "mixed_app_ids"
    first_bad = http.post("/stats", json=[{"app_id": "nodots"}])
    assert (first_bad.status_code, first_bad.json()["error"]) == (400, "invalid_app_id")
    later_bad = http.post("/stats", json=[event(app, "set", "1.0.1"), {"x": 1}])
    assert (later_bad.status_code, later_bad.json()["error"]) == (200, "invalid_app_id")
    unknown = http.post("/stats", json=event("com.nobody.app", "set", "1.0.1"))
    assert unknown.status_code == 429


def test_counters_installs_fails_rollbacks_and_adoption(
    http: httpx.Client, admin: AdminClient, app: str
) -> None:
    events = [event(app, "set", "1.0.2", old_version_name="1.0.1") for _ in range(3)]
    events += [event(app, "download_complete", "1.0.2"), event(app, "checksum_fail", "1.0.2")]
    events += [event(app, "update_fail", "1.0.2")]
    events += [
        event(app, "set", "1.0.2", is_emulator=True),
        event(app, "set", "1.0.2", is_prod=False),
    ]
    old_plugin = event(app, "download_fail", "1.0.2", plugin_version="7.16.0")
    http.post("/stats", json=[*events, old_plugin])
    http.post("/updates", json=device(app))  # a backend "get" for 1.0.1
    stats = admin.stats(app)["versions"]
    new = stats["1.0.2"]
    assert (new["installs"], new["downloads"], new["fails"], new["rollbacks"]) == (3, 1, 2, 1)
    assert "download_fail" not in new["actions"]  # ignored from plugins before 7.17.0
    assert new["actions"]["set"] == 5  # installs count only real production devices
    assert stats["1.0.1"]["uninstalls"] == 3 and stats["1.0.1"]["gets"] == 1
    assert new["timeline"][-1]["net_installs"] == 3
    assert admin.stats(app, "1.0.2")["versions"].keys() == {"1.0.2"}


def channel_call(http: httpx.Client, method: str, body: dict[str, Any]) -> Any:
    if method == "DELETE":
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()}
        return http.delete("/channel_self", params=params).json()
    return http.request(method, "/channel_self", json=body).json()


def test_set_channel_new_plugins_only_validate(http: httpx.Client, app: str) -> None:
    body = device(app)
    assert channel_call(http, "POST", {**body, "channel": "beta"}) == {
        "status": "ok",
        "allowSet": True,
    }
    refused = channel_call(http, "POST", {**body, "channel": "internal"})
    assert refused["error"] == "channel_self_set_not_allowed"
    public = channel_call(http, "POST", {**body, "channel": "production"})
    assert public["error"] == "public_channel_self_set_not_allowed"
    assert channel_call(http, "POST", {**body, "channel": "zzz"})["error"] == "channel_not_found"
    assert channel_call(http, "POST", body)["error"] == "missing_channel"
    # nothing stored server-side: the device still gets the public channel
    assert http.post("/updates", json=body).json()["version"] == "1.0.1"


def test_get_channel_new_plugins(http: httpx.Client, app: str) -> None:
    body = device(app)
    assert channel_call(http, "PUT", body) == {"channel": "production", "status": "default"}
    named = channel_call(http, "PUT", {**body, "defaultChannel": "beta"})
    assert named == {"channel": "beta", "status": "default"}
    sent = channel_call(http, "PUT", {**body, "channel": "beta"})
    assert sent == {"channel": "beta", "status": "override", "allowSet": True}
    assert channel_call(http, "DELETE", body) == {"status": "ok"}


def test_old_plugins_keep_an_override_on_the_server(http: httpx.Client, app: str) -> None:
    body = device(app, plugin_version="7.33.0")
    assert channel_call(http, "POST", {**body, "channel": "beta"}) == {"status": "ok"}
    assert http.post("/updates", json=body).json()["version"] == "1.0.2"
    assert channel_call(http, "PUT", body) == {
        "channel": "beta",
        "status": "override",
        "allowSet": True,
    }
    assert channel_call(http, "DELETE", body) == {"status": "ok"}
    assert http.post("/updates", json=body).json()["version"] == "1.0.1"
    assert channel_call(http, "DELETE", body)["error"] == "cannot_override"
    assert channel_call(http, "PUT", body) == {"channel": "production", "status": "default"}


def test_list_channels(http: httpx.Client, app: str) -> None:
    listed = http.get(
        "/channel_self",
        params={"app_id": app, "platform": "ios", "is_emulator": "false", "is_prod": "true"},
    ).json()
    assert sorted(c["name"] for c in listed) == ["beta", "production"]
    assert set(listed[0]) == {"id", "name", "public", "allow_self_set"}
    bad = http.get("/channel_self", params={"app_id": app, "platform": "windows"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_query_parameters")
    assert http.get("/channel_self", params={"platform": "ios"}).json()["error"] == "missing_app_id"
