"""The Capawesome Live Update dialect: its request, its answers (hostile ones under
hypothesis) and the "file" integrity scheme (checksum / SHA256withRSA signature over the file,
in the answer or in the download's headers): tampered, unsigned, wrongly signed or signed with
another key is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from capgo_peer import Canned, CapgoPeer, make_zip
from device_harness import Driven, Recorder
from hypothesis import given, settings
from hypothesis import strategies as st
from json_strategies import JSON_VALUES

from agent.config import AgentConfig, DeviceIdentity
from agent.errors import ProtocolError, VerificationError
from agent.protocol.base import DeviceInfo, NoUpdate, RateLimitHint, UpdateOffer
from agent.protocol.capawesome import PLUGIN_VERSION, CapawesomeDialect
from agent.security.keys import load_public_key
from agent.security.stream import StreamingVerifier
from agent.security.verify import offer_content_id, plan_offer_verification
from simulator.release import create_keys, sign_file_digest

DIALECT = CapawesomeDialect()
IDENTITY = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "ios", "2.1.0", version_code="21")
CONFIG = AgentConfig(update_url="http://127.0.0.1:9/base/", dialect="capawesome", stats_url="")
KEYS = create_keys()
OTHER_KEYS = create_keys()
ZIP = b"PK\x03\x04 a bundle" * 100
DIGEST = hashlib.sha256(ZIP).hexdigest()


def _info(version: str = "2.1.0", channel: str | None = None, builtin: bool = True) -> DeviceInfo:
    return DeviceInfo(IDENTITY, CONFIG, version, channel, None, on_builtin=builtin)


def test_the_check_is_the_plugins_get_with_its_query_and_header() -> None:
    request = DIALECT.check_request(_info("1.0.3", "beta", builtin=False))
    parts = urlsplit(request.url)
    assert (request.name, request.method, request.body) == ("/updates", "GET", None)
    assert parts.path == "/base/v1/apps/com.example.app/bundles/latest"
    assert {k: v[0] for k, v in parse_qs(parts.query).items()} == {
        "appVersionCode": "21",
        "appVersionName": "2.1.0",
        "bundleId": "1.0.3",
        "channelName": "beta",
        "deviceId": IDENTITY.device_id,
        "osVersion": "17.0",
        "platform": "1",
        "pluginVersion": PLUGIN_VERSION,
    }
    assert request.headers["x-capawesome-device-id"] == IDENTITY.device_id
    on_builtin = parse_qs(urlsplit(DIALECT.check_request(_info()).url).query)
    assert "bundleId" not in on_builtin and "channelName" not in on_builtin


def _answer(**fields: Any) -> bytes:
    body = {"bundleId": "1.0.1", "url": "http://127.0.0.1:9/files/x", "artifactType": "zip"}
    return json.dumps(body | fields).encode()


def test_an_answer_becomes_a_file_scheme_offer() -> None:
    offer = DIALECT.parse_check(200, {}, _answer(checksum=DIGEST.upper(), signature="c2ln"), 0)
    assert isinstance(offer, UpdateOffer)
    assert (offer.version, offer.integrity, offer.checksum, offer.signature) == (
        "1.0.1",
        "file",
        DIGEST,  # an upper-case checksum is tolerated (a harmless variation)
        "c2ln",
    )


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, b'{"error":"no_new_version_available"}', ("up_to_date", "no_bundle")),
        (200, b"", ("up_to_date", "no_bundle")),  # variation: an empty 200
        (200, b"null", ("up_to_date", "no_bundle")),  # variation: null
        (500, b"<html>", ("failed", "http_500")),
    ],
)
def test_no_bundle_answers(status: int, body: bytes, expected: tuple[str, str]) -> None:
    result = DIALECT.parse_check(status, {}, body, 0)
    assert isinstance(result, NoUpdate) and (result.kind, result.error) == expected


def test_429_is_a_rate_limit_with_the_servers_hint() -> None:
    result = DIALECT.parse_check(429, {"retry-after": "30"}, b"", 0)
    assert isinstance(result, RateLimitHint) and result.retry_after_s == 30


@pytest.mark.parametrize(
    "fields",
    [
        {"artifactType": "manifest"},  # per-file downloads of this dialect: refused, clearly
        {"checksum": "abc"},  # not SHA-256 hex
        {"url": "ftp://x/y"},
        {"bundleId": ""},
        {"bundleId": 7},
        {"signature": ["x"]},
    ],
)
def test_unsafe_or_malformed_offers_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        DIALECT.parse_check(200, {}, _answer(**fields), 0)


JSON = JSON_VALUES
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "bundleId": st.text(max_size=12) | JSON,
        "url": st.sampled_from(["http://127.0.0.1/a", "https://h/x.zip", "", "x"]) | JSON,
        "checksum": st.sampled_from([DIGEST, DIGEST.upper(), "", "00"]) | JSON,
        "signature": st.text(max_size=12) | JSON,
        "artifactType": st.sampled_from(["zip", "manifest", ""]) | JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 200, 404, 429, 500]),
    body=FIELDS.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=64),
)
def test_any_answer_parses_or_is_a_protocol_error(status: int, body: bytes) -> None:
    """Never an unhandled exception; an offer always carries the file scheme, so it is
    verified before anything is activated."""
    try:
        result = DIALECT.parse_check(status, {}, body, 0)
    except ProtocolError:
        return
    if isinstance(result, UpdateOffer):
        assert result.integrity == "file" and result.session_key == ""
        with pytest.raises(VerificationError):  # nothing downloaded proves nothing
            _verify(result, b"not the bundle", key=None)


def _verify(offer: UpdateOffer, data: bytes, key: bytes | None, **headers: str) -> None:
    public_key = load_public_key(key.decode()) if key else None
    plan = plan_offer_verification(offer, public_key).with_headers(headers)
    verifier = StreamingVerifier(None)
    verifier.update(data)
    verifier.finish()
    plan.check(verifier)


def _offer(checksum: str | None = None, signature: str | None = None) -> UpdateOffer:
    return UpdateOffer("1.0.1", "http://x/y", checksum, "", integrity="file", signature=signature)


SIGNATURE = sign_file_digest(KEYS[0], DIGEST)


def test_a_signed_bundle_verifies_with_the_apps_key() -> None:
    _verify(_offer(signature=SIGNATURE), ZIP, KEYS[1])
    _verify(_offer(checksum=DIGEST, signature=SIGNATURE), ZIP, KEYS[1])
    _verify(_offer(checksum=DIGEST), ZIP, None)  # no key: the checksum proves it


@pytest.mark.parametrize(
    ("offer", "data", "key", "action"),
    [
        (_offer(signature=SIGNATURE), ZIP + b"x", KEYS[1], "checksum_fail"),  # tampered
        (_offer(checksum=DIGEST), ZIP[:-1], None, "checksum_fail"),  # tampered, no key
        (_offer(signature=sign_file_digest(OTHER_KEYS[0], DIGEST)), ZIP, KEYS[1], "checksum_fail"),
        (_offer(signature=SIGNATURE), ZIP, OTHER_KEYS[1], "checksum_fail"),  # wrong key
        (_offer(checksum=DIGEST), ZIP, KEYS[1], "checksum_required"),  # a key, unsigned
        (_offer(), ZIP, None, "checksum_required"),  # nothing proves it
        (_offer(signature=SIGNATURE), ZIP, None, "checksum_required"),  # unverifiable
        (_offer(signature="!!"), ZIP, KEYS[1], "checksum_fail"),  # not base64
        (_offer(signature=base64.b64encode(b"x" * 10).decode()), ZIP, KEYS[1], "checksum_fail"),
        (_offer(checksum="0" * 64, signature=SIGNATURE), ZIP, KEYS[1], "checksum_fail"),
    ],
)
def test_what_does_not_prove_the_bundle_is_refused(
    offer: UpdateOffer, data: bytes, key: bytes | None, action: str
) -> None:
    with pytest.raises(VerificationError) as caught:
        _verify(offer, data, key)
    assert caught.value.action == action


def test_integrity_may_come_in_the_downloads_headers_but_never_overrides_the_answer() -> None:
    _verify(_offer(), ZIP, None, **{"x-checksum": DIGEST})
    _verify(_offer(signature=SIGNATURE), ZIP, KEYS[1], **{"x-checksum": DIGEST})
    with pytest.raises(VerificationError, match="header's signature is not taken"):
        _verify(_offer(), ZIP, KEYS[1], **{"x-signature": SIGNATURE})  # see with_headers
    with pytest.raises(VerificationError):  # the answer's checksum wins over a header's
        _verify(_offer(checksum="0" * 64), ZIP, None, **{"x-checksum": DIGEST})
    with pytest.raises(VerificationError):
        _verify(_offer(), ZIP + b"!", KEYS[1], **{"x-signature": SIGNATURE})


def test_a_signed_offer_names_its_content_by_its_signature() -> None:
    """Anti-rollback remembers content: one content signed with one key has one identity,
    whatever the label or base64 spelling; another content or key names another one."""
    key = load_public_key(KEYS[1].decode())
    same = offer_content_id(_offer(signature=SIGNATURE), key)
    assert same is not None and same.startswith("sig:")
    relabelled = replace(_offer(signature=" " + SIGNATURE + "\n"), version="9.9.9")
    assert offer_content_id(relabelled, key) == same
    other = sign_file_digest(KEYS[0], hashlib.sha256(b"other").hexdigest())
    assert offer_content_id(_offer(signature=other), key) not in (None, same)
    assert offer_content_id(_offer(checksum=DIGEST), key) is None  # unsigned: names nothing
    assert offer_content_id(_offer(signature="!!"), key) is None


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("header", "installs"), [(DIGEST, True), ("0" * 64, False), (None, False)])
def test_a_checksum_in_the_downloads_header_verifies_the_bundle_end_to_end(
    peer: CapgoPeer, tmp_path: Path, kind: str, header: str | None, installs: bool
) -> None:
    """A server that answers without a checksum and puts it in the download's `X-Checksum`
    (a known Capawesome variation): the device takes it from the head, over loopback, with
    either driver; a wrong one or none at all leaves nothing installed."""
    answer = {"bundleId": "1.0.1", "url": f"{peer.url}/bundles/1.0.1.zip", "artifactType": "zip"}
    peer.canned.append(
        Canned(200, json.dumps(answer).encode(), {"content-type": "application/json"})
    )
    zip_bytes = make_zip("1.0.1")
    headers = (
        {"x-checksum": header.replace(DIGEST, hashlib.sha256(zip_bytes).hexdigest())}
        if header
        else {}
    )
    peer.bundle_canned.append(Canned(200, zip_bytes, headers))
    config = AgentConfig(
        update_url=peer.url, stats_url="", dialect="capawesome", transport_attempts=1
    )
    identity = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "android", "1.0.0")
    device = Driven(kind, tmp_path / "d", config, identity, Recorder())
    try:
        device.launch()
        status = device.status()
        assert (status.next is not None and status.next.version == "1.0.1") is installs
        if not installs:
            failed = [a for a, v in device.observer.stats if v == "1.0.1"]
            assert "checksum_fail" in failed or "checksum_required" in failed, failed
    finally:
        device.close()


def test_an_opaque_app_id_goes_into_the_path_and_an_unsafe_one_is_refused() -> None:
    app = "6e9f2c1a-4b1d-4c36-9f0e-2b7f3c9d8a11"  # Capawesome Cloud app ids are UUIDs
    identity = replace(IDENTITY, app_id=app)
    request = DIALECT.check_request(DeviceInfo(identity, CONFIG, "2.1.0", None, None))
    assert urlsplit(request.url).path == f"/base/v1/apps/{app}/bundles/latest"
    for unsafe in ("a/b", "../etc", "a b", "", "a?x=1", "é"):
        with pytest.raises(ValueError, match="app_id must be"):
            replace(IDENTITY, app_id=unsafe)
