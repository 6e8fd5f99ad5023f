"""The Capgo dialect: request bodies, and every answer shape of reference §3 (plus bad ones)."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import AgentConfig, DeviceIdentity
from agent.errors import ProtocolError
from agent.protocol.base import (
    DeviceInfo,
    NoUpdate,
    RateLimitHint,
    RevertToBuiltin,
    StatEvent,
    StatsOutcome,
    UpdateOffer,
)
from agent.protocol.capgo import CapgoDialect, user_agent

NOW = 1_800_000_000.0
DIALECT = CapgoDialect()
IDENTITY = DeviceIdentity(
    device_id=str(uuid.UUID(int=7)),
    app_id="com.example.app",
    platform="android",
    version_build="1.2.0",
    version_code="42",
    version_os="14",
    install_source="google_play",
    custom_id="qa-7",
)
INFO = DeviceInfo(IDENTITY, AgentConfig(), "1.2.3", "beta", "MIIBCgKCAQEAx1y2z3w4")


def check(body: object, status: int = 200, **headers: str) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return DIALECT.parse_check(status, headers, raw, NOW)


def test_update_request_carries_every_info_field() -> None:
    request = DIALECT.check_request(INFO)
    assert (request.method, request.url, request.name) == (
        "POST",
        "https://plugin.capgo.app/updates",
        "/updates",
    )
    body = json.loads(request.body or b"")
    assert body == {
        "platform": "android",
        "device_id": "00000000-0000-0000-0000-000000000007",
        "app_id": "com.example.app",
        "custom_id": "qa-7",
        "version_build": "1.2.0",
        "version_code": "42",
        "version_os": "14",
        "version_name": "1.2.3",
        "plugin_version": "8.51.14",
        "is_emulator": False,
        "is_prod": True,
        "install_source": "google_play",
        "defaultChannel": "beta",
        "key_id": "MIIBCgKCAQEAx1y2z3w4",
    }
    assert request.headers["user-agent"] == "CapacitorUpdater/8.51.14 (com.example.app) android/14"
    assert request.headers["content-type"] == "application/json"


def test_user_agent_cleans_values_and_names_unknown() -> None:
    odd = DeviceInfo(
        DeviceIdentity(str(uuid.uuid4()), "com.example.app", "ios", "1.0.0", version_os="\x01\x02"),
        AgentConfig(),
        "1.0.0",
        None,
        None,
    )
    assert user_agent(odd).endswith("ios/unknown")
    assert "key_id" not in json.loads(DIALECT.check_request(odd).body or b"")


def test_offer_is_parsed_with_every_field() -> None:
    result = check(
        {
            "version": "1.3.0",
            "url": "https://cdn.test/b.zip",
            "checksum": "ab" * 32,
            "session_key": "",
            "link": "https://x.test",
            "comment": "hi",
        }
    )
    assert result == UpdateOffer(
        "1.3.0", "https://cdn.test/b.zip", "ab" * 32, "", None, False, None, "https://x.test", "hi"
    )


def test_offer_with_a_manifest() -> None:
    entry = {"file_name": "index.html", "file_hash": "cd" * 32, "download_url": "https://c.test/i"}
    result = check(
        {
            "version": "1.3.0",
            "url": "https://404.capgo.app/no.zip",
            "checksum": None,
            "session_key": "",
            "manifest": [entry],
        }
    )
    assert isinstance(result, UpdateOffer)
    assert result.manifest is not None and result.manifest[0].file_name == "index.html"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (
            {
                "error": "no_new_version_available",
                "message": "No new version available",
                "kind": "up_to_date",
            },
            "up_to_date",
        ),
        ({"error": "already_on_builtin", "kind": "up_to_date", "version": "builtin"}, "up_to_date"),
        (
            {
                "error": "disabled_platform_ios",
                "kind": "blocked",
                "version": "2.0.0",
                "old": "1.0.0",
            },
            "blocked",
        ),
        (
            {"error": "key_id_mismatch", "kind": "blocked", "deviceKeyId": "a", "bundleKeyId": "b"},
            "blocked",
        ),
        ({"error": "no_channel", "kind": "failed"}, "failed"),
        ({"error": "semver_error", "message": "bad"}, "failed"),  # no kind: failed
        ({"error": "no_bundle", "kind": "weird"}, "failed"),  # unknown kind: failed
    ],
)
def test_every_no_update_kind(body: dict[str, object], kind: str) -> None:
    result = check(body)
    assert isinstance(result, NoUpdate)
    assert (result.kind, result.error) == (kind, body["error"])


@pytest.mark.parametrize(
    "body",
    [
        {
            "error": "disable_auto_update_to_major",
            "kind": "blocked",
            "major": True,
            "version": "2.0.0",
            "old": "1.0.0",
        },
        {"error": "x", "kind": "blocked", "breaking": True},
        {"error": "x", "kind": "failed", "message": "store_update_required"},
    ],
)
def test_breaking_answers(body: dict[str, object]) -> None:
    result = check(body)
    assert isinstance(result, NoUpdate) and result.breaking


def test_builtin_without_error_means_revert() -> None:
    assert check({"version": "builtin"}) == RevertToBuiltin()


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"retry-after": "120"}, {"error": "too_many_requests"}, 120.0),
        ({}, {"error": "too_many_requests", "moreInfo": {"retryAfterSeconds": 30}}, 30.0),
        ({}, {"error": "too_many_requests", "retryAfterSeconds": 45}, 45.0),
        ({}, {"error": "x", "rateLimitResetAt": (NOW + 90) * 1000}, 90.0),
        ({"retry-after": "999999"}, {}, 86400.0),  # capped at 24 h
        ({}, {"error": "on_premise_app", "message": "On-premise app detected"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, {}, None),  # a date in the past
    ],
)
def test_429_hints(
    headers: dict[str, str], body: dict[str, object], expected: float | None
) -> None:
    result = check(body, 429, **headers)
    assert isinstance(result, RateLimitHint)
    assert (
        result.retry_after_s == pytest.approx(expected)
        if expected
        else result.retry_after_s is None
    )


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_error_statuses_are_failed_checks(status: int) -> None:
    result = check({"error": "unknown_error", "message": "boom"}, status)
    assert isinstance(result, NoUpdate) and result.kind == "failed" and result.status == status
    plain = check(b"<html>bad gateway</html>", status)
    assert isinstance(plain, NoUpdate) and plain.error == f"http_{status}"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        json.dumps({"url": "https://x.test/b.zip"}).encode(),  # no version
        json.dumps({"version": 3, "url": "https://x.test/b.zip"}).encode(),
        json.dumps({"version": "", "url": "https://x.test/b.zip"}).encode(),
        json.dumps({"version": "1.0.1"}).encode(),  # neither url nor manifest
        json.dumps({"version": "1.0.1", "url": "ftp://x.test/b.zip"}).encode(),
        json.dumps({"version": "1.0.1", "url": "https://x", "checksum": 5}).encode(),
        json.dumps({"version": "1.0.1", "url": "", "manifest": [{"file_name": 1}]}).encode(),
    ],
)
def test_malformed_offers_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        DIALECT.parse_check(200, {}, body, NOW)


@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_no_body_crashes_the_parser(body: bytes) -> None:
    try:
        result = DIALECT.parse_check(200, {}, body, NOW)
    except ProtocolError:
        return
    assert isinstance(result, UpdateOffer | NoUpdate | RevertToBuiltin)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["version", "url", "error", "kind", "checksum", "manifest", "session_key"]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=12,
    )
)
def test_no_json_shape_crashes_the_parser(data: object) -> None:
    try:
        result = DIALECT.parse_check(200, {}, json.dumps(data).encode(), NOW)
    except ProtocolError:
        return
    assert isinstance(result, UpdateOffer | NoUpdate | RevertToBuiltin)


def test_stats_batch_is_a_json_array_with_the_event_versions() -> None:
    events = [
        StatEvent(0, "set", "1.3.0", 1000, "1.2.3"),
        StatEvent(1, "download_fail", "1.3.0", 2000, metadata={"why": "x"}),
    ]
    request = DIALECT.stats_request(INFO, events)
    batch = json.loads(request.body or b"")
    assert [e["action"] for e in batch] == ["set", "download_fail"]
    assert batch[0]["old_version_name"] == "1.2.3" and batch[0]["version_name"] == "1.3.0"
    assert batch[1]["metadata"] == {"why": "x"} and batch[1]["timestamp"] == 2000
    assert all(e["device_id"] == IDENTITY.device_id for e in batch)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, StatsOutcome.SENT),
        (429, StatsOutcome.REQUEUE),
        (408, StatsOutcome.REQUEUE),
        (500, StatsOutcome.REQUEUE),
        (503, StatsOutcome.REQUEUE),
        (400, StatsOutcome.DROP),
        (404, StatsOutcome.DROP),
    ],
)
def test_stats_outcomes(status: int, outcome: StatsOutcome) -> None:
    assert DIALECT.parse_stats(status, {}, b"{}", NOW)[0] is outcome


def test_channel_self_requests_and_answers() -> None:
    set_request = DIALECT.channel_set_request(INFO, "beta")
    assert set_request.method == "POST" and json.loads(set_request.body or b"")["channel"] == "beta"
    assert DIALECT.channel_get_request(INFO).method == "PUT"
    listing = DIALECT.channel_list_request(INFO)
    assert listing.method == "GET" and "app_id=com.example.app" in listing.url
    assert DIALECT.parse_channel(200, b'{"status":"ok","allowSet":true}').allowed
    refused = DIALECT.parse_channel(200, b'{"error":"channel_not_found","message":"no"}')
    assert not refused.allowed and refused.error == "channel_not_found" and not refused.private
    private = DIALECT.parse_channel(200, b'{"error":"channel_self_set_not_allowed"}')
    assert private.private and not private.allowed
    got = DIALECT.parse_channel(200, b'{"channel":"production","status":"default"}')
    assert (got.channel, got.status) == ("production", "default")
    channels = DIALECT.parse_channel_list(
        200, b'[{"id":1,"name":"beta","public":false,"allow_self_set":true}]'
    )
    assert channels[0].name == "beta" and channels[0].allow_self_set
    with pytest.raises(ProtocolError):
        DIALECT.parse_channel_list(200, b'{"name":"x"}')
    with pytest.raises(ProtocolError):
        DIALECT.parse_channel(200, b"[]")
