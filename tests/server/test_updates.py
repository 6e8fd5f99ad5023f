"""Every /updates rule of reference §3.3, over loopback HTTP, with Capgo's exact bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.server.client import AdminClient
from simulator.server.embedded import run_server

from .conftest import add_bundle, device


def check(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/updates", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.fixture
def published(admin: AdminClient, app_id: str, tmp_path: Path) -> str:
    """App with a public `production` channel serving bundle 1.0.1."""
    add_bundle(admin, app_id, "1.0.1", tmp_path)
    admin.set_channel(app_id, "production", version="1.0.1", public=True)
    return app_id


def test_offer_body_is_capgo_shaped_and_downloads(http: httpx.Client, published: str) -> None:
    answer = check(http, device(published))
    assert set(answer) == {"version", "url", "session_key", "checksum"}
    assert answer["version"] == "1.0.1" and answer["session_key"] == ""
    assert len(answer["checksum"]) == 64
    assert http.get(answer["url"]).status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"device_id": "", "app_id": "com.a.b"}, "missing_device_id"),
        ({"app_id": ""}, "missing_app_id"),
        ({"platform": "windows"}, "invalid_json_body"),
        ({"plugin_version": "8.x"}, "invalid_json_body"),
        ({"is_prod": "yes"}, "invalid_json_body"),
        ({"device_id": "not-a-uuid"}, "invalid_json_body"),
        ({"app_id": "no_dots"}, "invalid_json_body"),
        ({"version_name": ""}, "invalid_json_body"),
        ({"key_id": "x" * 21}, "invalid_json_body"),
        ({"version_build": "1.2.3.4.5"}, "semver_error"),
    ],
)
def test_request_validation_answers_400_with_capgo_codes(
    http: httpx.Client, body: dict[str, Any], code: str
) -> None:
    response = http.post("/updates", json={**device("com.a.b"), **body})
    assert response.status_code == 400
    assert response.json()["error"] == code


def test_unparsable_and_non_object_bodies(http: httpx.Client) -> None:
    assert http.post("/updates", content=b"{nope").json()["error"] == "invalid_json_parse_body"
    assert http.post("/updates", json=[1, 2]).json()["error"] == "invalid_json_body"
    assert http.post("/updates", json={}).json()["error"] == "invalid_json_body"


def test_builds_are_coerced_to_semver(http: httpx.Client, published: str) -> None:
    assert check(http, device(published, version_build="1"))["version"] == "1.0.1"


def test_unknown_app_is_on_premise_429(http: httpx.Client) -> None:
    response = http.post("/updates", json=device("com.not.known"))
    assert response.status_code == 429
    assert response.json() == {"error": "on_premise_app", "message": "On-premise app detected"}


def test_enumeration_guard_trips_after_five_unknown_apps(tmp_path: Path) -> None:
    with run_server(enumeration_limit=5) as server, httpx.Client(base_url=server.url) as http:
        bodies = [http.post("/updates", json=device(f"com.probe.a{i}")).json() for i in range(7)]
    assert bodies[:5] == [{"error": "on_premise_app", "message": "On-premise app detected"}] * 5
    assert bodies[5:] == [{"error": "on_premise_app"}] * 2


def test_health_answers(http: httpx.Client) -> None:
    assert http.get("/updates").json() == {"status": "ok"}
    assert http.get("/stats").json() == {"status": "ok"}


def refusal(answer: dict[str, Any], code: str, kind: str) -> dict[str, Any]:
    assert answer["error"] == code, answer
    assert answer["kind"] == kind
    return answer


def test_unknown_build_and_plugin_v4(http: httpx.Client, published: str) -> None:
    refusal(
        check(http, device(published, version_build="unknown")), "unknown_version_build", "failed"
    )
    answer = check(http, device(published, plugin_version="4.9.0"))
    refusal(answer, "unsupported_plugin_version", "failed")
    assert "Please upgrade to v5.10.0 or later." in answer["message"]


def test_no_channel_and_no_fallback_from_a_bad_default(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    body = refusal(check(http, device(app_id)), "no_channel", "failed")
    assert body["message"] == "no default channel or override"
    add_bundle(admin, app_id, "1.0.1", tmp_path)
    admin.set_channel(app_id, "production", version="1.0.1", public=True)
    refusal(check(http, device(app_id, defaultChannel="nope")), "no_channel", "failed")


def test_channel_resolution_order(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    for version in ("1.0.1", "1.0.2", "1.0.3", "1.0.4"):
        add_bundle(admin, app_id, version, tmp_path)
    admin.set_channel(app_id, "zeta", version="1.0.1", public=True)
    admin.set_channel(app_id, "alpha", version="1.0.2", public=True, android=False)
    admin.set_channel(app_id, "beta", version="1.0.3", allow_device_self_set=True)
    admin.set_channel(app_id, "private", version="1.0.4")
    # first public channel for the platform, by name: alpha is iOS-only here
    assert check(http, device(app_id))["version"] == "1.0.1"
    assert check(http, device(app_id, platform="ios"))["version"] == "1.0.2"
    assert check(http, device(app_id, defaultChannel="beta"))["version"] == "1.0.3"
    refusal(check(http, device(app_id, defaultChannel="private")), "no_channel", "failed")
    pinned = device(app_id, defaultChannel="beta")
    admin.set_device_channel(app_id, pinned["device_id"], "private")
    assert check(http, pinned)["version"] == "1.0.4"  # an override beats the named channel
    assert admin.device_channels(app_id) == [
        {"device_id": pinned["device_id"], "channel": "private"}
    ]
    admin.set_device_channel(app_id, pinned["device_id"], None)
    assert check(http, pinned)["version"] == "1.0.3"


def test_key_id_mismatch_only_for_plugins_after_8_40_7(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    add_bundle(admin, app_id, "1.0.1", tmp_path, key_id="BUNDLEKEY")
    admin.set_channel(app_id, "production", version="1.0.1", public=True)
    answer = refusal(check(http, device(app_id, key_id="DEVICEKEY")), "key_id_mismatch", "blocked")
    assert answer["deviceKeyId"] == "DEVICEKEY" and answer["bundleKeyId"] == "BUNDLEKEY"
    old = device(app_id, key_id="DEVICEKEY", plugin_version="8.40.7")
    assert check(http, old)["version"] == "1.0.1"
    assert check(http, device(app_id, key_id="BUNDLEKEY"))["version"] == "1.0.1"


def test_no_new_version(http: httpx.Client, published: str) -> None:
    assert check(http, device(published, version_name="1.0.1")) == {
        "error": "no_new_version_available",
        "message": "No new version available",
        "kind": "up_to_date",
    }


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        ("ios", "Cannot update, ios it's disabled"),
        ("android", "Cannot update, android is disabled"),
        ("electron", "Cannot update, electron is disabled"),
    ],
)
def test_platform_disabled(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path, platform: str, message: str
) -> None:
    add_bundle(admin, app_id, "1.0.1", tmp_path)
    admin.set_channel(
        app_id, "beta", version="1.0.1", allow_device_self_set=True, **{platform: False}
    )
    body = device(app_id, platform=platform, defaultChannel="beta", version_name="1.0.0")
    # the named channel must be enabled for the platform to be found at all, so pin the device
    admin.set_device_channel(app_id, body["device_id"], "beta")
    assert check(http, body) == {
        "error": f"disabled_platform_{platform}",
        "message": message,
        "version": "1.0.1",
        "old": "1.0.0",
        "kind": "blocked",
    }


def channel_with(
    admin: AdminClient, app_id: str, folder: Path, version: str, **policy: Any
) -> None:
    add_bundle(admin, app_id, version, folder, **policy.pop("bundle", {}))
    admin.set_channel(app_id, "production", version=version, public=True, **policy)


@pytest.mark.parametrize(
    ("version", "policy", "build", "code", "extra"),
    [
        ("2.0.0", {}, "1.0.0", "disable_auto_update_to_major", {"major": True, "old": "1.0.0"}),
        (
            "1.1.0",
            {"disable_auto_update": "minor"},
            "1.0.0",
            "disable_auto_update_to_minor",
            {"major": True, "old": "1.0.0"},
        ),
        (
            "1.0.1",
            {"disable_auto_update": "patch"},
            "1.0.0",
            "disable_auto_update_to_patch",
            {"major": True, "old": "1.0.0"},
        ),
        (
            "1.0.1",
            {"disable_auto_update": "version_number", "bundle": {"min_update_version": "1.0.5"}},
            "1.0.0",
            "disable_auto_update_to_metadata",
            {"major": True, "old": "1.0.0"},
        ),
        ("0.9.0", {}, "1.0.0", "disable_auto_update_under_native", {"old": "1.0.0"}),
        ("1.0.1", {"allow_prod": False}, "1.0.0", "disable_prod_build", {"old": "1.0.0"}),
    ],
)
def test_channel_policy_blocks(
    http: httpx.Client,
    admin: AdminClient,
    app_id: str,
    tmp_path: Path,
    version: str,
    policy: dict[str, Any],
    build: str,
    code: str,
    extra: dict[str, Any],
) -> None:
    channel_with(admin, app_id, tmp_path, version, **policy)
    answer = refusal(check(http, device(app_id, version_build=build)), code, "blocked")
    assert answer["version"] == version
    assert {k: answer[k] for k in extra} == extra


def test_version_number_mode_without_min_version_is_misconfigured(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    channel_with(admin, app_id, tmp_path, "1.0.1", disable_auto_update="version_number")
    answer = refusal(check(http, device(app_id)), "misconfigured_channel", "failed")
    assert answer["message"] == "Channel production is misconfigured"


def test_policy_passes_when_inside_the_allowed_range(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    channel_with(admin, app_id, tmp_path, "1.0.7", disable_auto_update="minor")
    assert check(http, device(app_id, version_build="1.0.3"))["version"] == "1.0.7"


@pytest.mark.parametrize(
    ("policy", "flags", "code"),
    [
        ({"allow_dev": False}, {"is_prod": False}, "disable_dev_build"),
        ({"allow_device": False}, {"is_emulator": False}, "disable_device"),
        ({"allow_emulator": False}, {"is_emulator": True}, "disable_emulator"),
    ],
)
def test_build_and_device_blocks(
    http: httpx.Client,
    admin: AdminClient,
    app_id: str,
    tmp_path: Path,
    policy: dict[str, bool],
    flags: dict[str, bool],
    code: str,
) -> None:
    channel_with(admin, app_id, tmp_path, "1.0.1", **policy)
    refusal(check(http, device(app_id, **flags)), code, "blocked")


def test_builtin_target(http: httpx.Client, admin: AdminClient, app_id: str) -> None:
    admin.set_channel(app_id, "production", version="builtin", public=True)
    assert check(http, device(app_id, version_name="1.0.3")) == {
        "error": "already_on_builtin",
        "message": "Already on builtin",
        "version": "builtin",
        "kind": "up_to_date",
    }
    answer = check(http, device(app_id, version_name="builtin"))
    assert answer == {
        "error": "already_on_builtin",
        "message": "Already on builtin",
        "kind": "up_to_date",
    }
    old = check(http, device(app_id, version_name="1.0.3", plugin_version="6.1.0"))
    refusal(old, "revert_to_builtin_plugin_version_too_old", "failed")


def test_manifest_only_bundle_and_old_plugins(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<html>delta</html>")
    file_id = admin.upload_file(app_id, tmp_path / "index.html")
    admin._call(
        "POST",
        f"/api/apps/{app_id}/bundles",
        json={
            "version": "1.0.1",
            "checksum": "",
            "manifest": [{"file_name": "index.html", "file_hash": "ab" * 32, "file_id": file_id}],
        },
    )
    admin.set_channel(app_id, "production", version="1.0.1", public=True)
    answer = check(http, device(app_id))
    assert answer["manifest"][0]["file_name"] == "index.html"
    assert http.get(answer["manifest"][0]["download_url"]).text == "<html>delta</html>"
    assert http.get(answer["url"]).status_code == 404  # Capgo's placeholder zip URL
    old = check(http, device(app_id, plugin_version="7.0.34"))  # before manifest support
    assert refusal(old, "no_bundle_url", "failed")["message"] == "Cannot get bundle url"


def test_metadata_only_when_exposed(http: httpx.Client, admin: AdminClient, tmp_path: Path) -> None:
    admin.create_app("com.test.meta", expose_metadata=True)
    add_bundle(admin, "com.test.meta", "1.0.1", tmp_path, link="https://x.test/n", comment="fix")
    admin.set_channel("com.test.meta", "production", version="1.0.1", public=True)
    answer = check(http, device("com.test.meta"))
    assert (answer["link"], answer["comment"]) == ("https://x.test/n", "fix")
    assert "link" not in check(http, device("com.test.meta", plugin_version="8.34.0"))
