"""The Expo dialect's answer parsing: the protocol's shapes, the known server variations
(accepted where harmless, refused where unsafe), and hostile answers under hypothesis."""

from __future__ import annotations

import base64
import datetime
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig, DeviceIdentity
from agent.errors import ProtocolError
from agent.protocol.base import DeviceInfo, NoUpdate, RevertToBuiltin, UpdateOffer
from agent.protocol.expo import ExpoDialect
from agent.security.expo import load_certificate
from simulator.expo_release import SigningPair, create_signing_pair, sign_manifest

NOW = datetime.datetime.now(datetime.UTC).timestamp()
PAIR = create_signing_pair()
OTHER = create_signing_pair()
HASH = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
HEX = bytes(range(32)).hex()


def manifest(asset_hash: str = HASH, **changes: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "7b8a4b3c-4b8e-4a4e-9c1c-2f4f4b8a9a10",
        "createdAt": "2026-01-02T03:04:05.678Z",
        "runtimeVersion": "1.0.0",
        "launchAsset": {
            "hash": asset_hash,
            "key": "index",
            "fileExtension": ".html",
            "contentType": "text/html",
            "url": "http://127.0.0.1:1/files/a",
        },
        "assets": [
            {"hash": HASH, "key": "assets/app", "fileExtension": "js", "url": "http://x.test/b"}
        ],
        "metadata": {"version": "1.0.1"},
        "extra": {},
    }
    body.update(changes)
    return json.dumps(body).encode()


def multipart(
    parts: list[tuple[str, bytes, dict[str, str]]], disposition: str = "inline"
) -> tuple[dict[str, str], bytes]:
    chunks = []
    for name, body, extra in parts:
        head = ["--b0und", f'content-disposition: {disposition}; name="{name}"']
        head += ["content-type: application/json", *(f"{k}: {v}" for k, v in extra.items())]
        chunks.append("\r\n".join(head).encode() + b"\r\n\r\n" + body + b"\r\n")
    chunks.append(b"--b0und--\r\n")
    return {"content-type": "multipart/mixed; boundary=b0und"}, b"".join(chunks)


def signed(body: bytes, pair: SigningPair = PAIR) -> dict[str, str]:
    return {"expo-signature": sign_manifest(body, pair.private_pem)}


def dialect(pair: SigningPair | None = PAIR) -> ExpoDialect:
    return ExpoDialect(load_certificate(pair.certificate_pem.decode()) if pair else None)


def parse(answer: tuple[dict[str, str], bytes], d: ExpoDialect | None = None) -> Any:
    headers, body = answer
    return (d or dialect()).parse_check(200, headers, body, NOW)


def test_signed_multipart_manifest_is_an_offer_of_its_assets() -> None:
    body = manifest()
    result = parse(multipart([("manifest", body, signed(body)), ("extensions", b"{}", {})]))
    assert isinstance(result, UpdateOffer)
    assert result.version == "1.0.1" and result.checksum == "7b8a4b3c-4b8e-4a4e-9c1c-2f4f4b8a9a10"
    assert result.manifest is not None
    assert [(e.file_name, e.file_hash) for e in result.manifest] == [
        ("index.html", HEX),
        ("assets/app.js", HEX),
    ]
    assert result.release.counter == 1767323045678  # createdAt orders updates


def test_label_is_the_update_id_without_metadata_version() -> None:
    body = manifest(metadata={})
    result = parse(multipart([("manifest", body, signed(body))]))
    assert result.version == "7b8a4b3c-4b8e-4a4e-9c1c-2f4f4b8a9a10"


def test_the_offer_names_the_runtime_version_it_was_made_for() -> None:
    body = manifest(runtimeVersion="exposdk:50.0.0")
    assert parse(multipart([("manifest", body, signed(body))])).native_build == "exposdk:50.0.0"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("unsigned", "signature_required"),
        ("other_key", "signature_fail"),
        ("one_byte_changed", "signature_fail"),
        ("keyid", "signature_fail"),
        ("alg", "signature_fail"),
        ("not_sfv", "signature_fail"),
        ("hex_hash", "checksum_fail"),
        ("no_hash", "checksum_required"),
    ],
)
def test_refused_manifests(case: str, error: str) -> None:
    body = manifest(HEX) if case == "hex_hash" else manifest()
    if case == "no_hash":
        data = json.loads(body)
        del data["assets"][0]["hash"]
        body = json.dumps(data).encode()
    headers = signed(body, OTHER if case == "other_key" else PAIR)
    if case == "unsigned":
        headers = {}
    elif case == "keyid":
        headers["expo-signature"] = headers["expo-signature"].replace('"main"', '"other"')
    elif case == "alg":
        headers["expo-signature"] = headers["expo-signature"].replace("rsa-v1_5", "rsa-pss")
    elif case == "not_sfv":
        headers["expo-signature"] = 'sig="unterminated'
    served = body.replace(b"1.0.1", b"1.0.9") if case == "one_byte_changed" else body
    result = parse(multipart([("manifest", served, headers)]))
    assert isinstance(result, NoUpdate) and (result.kind, result.error) == ("failed", error)


def test_hex_hash_is_refused_even_without_code_signing() -> None:
    result = parse(multipart([("manifest", manifest(HEX), {})]), dialect(None))
    assert isinstance(result, NoUpdate) and result.error == "checksum_fail"


def test_expired_certificate_is_refused() -> None:
    body = manifest()
    headers, raw = multipart([("manifest", body, signed(body))])
    later = NOW + 11 * 365 * 86400
    result = dialect().parse_check(200, headers, raw, later)
    assert isinstance(result, NoUpdate) and result.error == "signature_fail"


@pytest.mark.parametrize(
    "variation", ["form_data", "duplicate_content_type", "json_signed_in_headers", "padded_hash"]
)
def test_harmless_variations_are_accepted(variation: str) -> None:
    body = manifest(HASH + "=" if variation == "padded_hash" else HASH)
    if variation == "json_signed_in_headers":
        answer = ({"content-type": "application/json"} | signed(body), body)
    elif variation == "form_data":
        answer = multipart([("manifest", body, signed(body))], disposition="form-data")
    elif variation == "duplicate_content_type":
        extra = signed(body) | {"Content-Type": "application/expo+json"}
        answer = multipart([("manifest", body, extra)])
    else:
        answer = multipart([("manifest", body, signed(body))])
    assert isinstance(parse(answer), UpdateOffer)


def test_nothing_to_do_answers() -> None:
    d = dialect()
    assert d.parse_check(204, {}, b"", NOW).kind == "up_to_date"  # also a per-IP rate limit
    assert parse(multipart([])).kind == "up_to_date"
    no_update = b'{"type":"noUpdateAvailable"}'
    assert parse(multipart([("directive", no_update, {})])).kind == "up_to_date"  # harmless
    assert d.parse_check(406, {}, b"", NOW).kind == "failed"
    assert d.parse_check(429, {"retry-after": "30"}, b"", NOW).retry_after_s == 30.0


def test_roll_back_to_embedded_needs_the_signature() -> None:
    directive = b'{"type":"rollBackToEmbedded","parameters":{"commitTime":"2026-01-02T00:00:00Z"}}'
    assert isinstance(
        parse(multipart([("directive", directive, signed(directive))])), RevertToBuiltin
    )
    unsigned = parse(multipart([("directive", directive, {})]))
    assert isinstance(unsigned, NoUpdate) and unsigned.error == "signature_required"
    assert isinstance(
        parse(multipart([("directive", directive, {})]), dialect(None)), RevertToBuiltin
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'--b0und\r\ncontent-disposition: inline; name="manifest"\r\n\r\n{}',  # not closed
        manifest(id="not-a-uuid"),
        manifest(createdAt="yesterday"),
        manifest(runtimeVersion=None),
        manifest(runtimeVersion=""),
        manifest(runtimeVersion=1),
        manifest(assets="none"),
        manifest(launchAsset={"hash": HASH, "key": "x", "url": "file:///etc/passwd"}),
        manifest(
            launchAsset={"hash": HASH, "key": "x", "fileExtension": ".br", "url": "http://a.b/"}
        ),
    ],
)
def test_malformed_answers_are_protocol_errors(raw: bytes) -> None:
    content_type = (
        "multipart/mixed; boundary=b0und" if raw.startswith(b"--") else "application/json"
    )
    with pytest.raises(ProtocolError):
        dialect(None).parse_check(200, {"content-type": content_type}, raw, NOW)


def test_check_request_carries_the_protocol_headers() -> None:
    identity = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "ios", "2.1.0")
    config = AgentConfig(update_url="http://127.0.0.1:1/expo/com.example.app", stats_url="")
    info = DeviceInfo(
        identity, config, "1.0.1", "beta", None, "7b8a4b3c-4b8e-4a4e-9c1c-2f4f4b8a9a10"
    )
    request = dialect().check_request(info)
    assert request.method == "GET" and request.url == config.update_url
    headers = request.headers
    assert headers["expo-protocol-version"] == "1" and headers["expo-platform"] == "ios"
    assert headers["expo-runtime-version"] == "2.1.0" and headers["expo-channel-name"] == "beta"
    assert headers["expo-current-update-id"] == "7b8a4b3c-4b8e-4a4e-9c1c-2f4f4b8a9a10"
    assert headers["expo-expect-signature"] == 'sig, keyid="main", alg="rsa-v1_5-sha256"'
    assert "expo-expect-signature" not in dialect(None).check_request(info).headers


GOOD = manifest()
GOOD_ANSWER = multipart([("manifest", GOOD, signed(GOOD))])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    position=st.integers(min_value=0, max_value=len(GOOD_ANSWER[1]) - 1),
    replacement=st.binary(min_size=0, max_size=8),
    cut=st.booleans(),
)
def test_mutated_answers_never_raise_and_never_offer_unsigned_content(
    position: int, replacement: bytes, cut: bool
) -> None:
    """Any byte edit of a signed answer: a ProtocolError or a typed result, and an offer only
    when the manifest the device would install is exactly the signed one."""
    headers, raw = GOOD_ANSWER
    mutated = raw[:position] if cut else raw[:position] + replacement + raw[position + 1 :]
    try:
        result = dialect().parse_check(200, headers, mutated, NOW)
    except ProtocolError:
        return
    if isinstance(result, UpdateOffer):
        assert result == parse(GOOD_ANSWER)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=400),
    content_type=st.sampled_from(
        ["multipart/mixed; boundary=b0und", "application/json", "multipart/mixed", ""]
    ),
    status=st.sampled_from([200, 204, 304, 404, 406, 429, 500]),
    signature=st.none() | st.text(max_size=60),
)
def test_arbitrary_answers_never_raise_anything_but_protocol_errors(
    body: bytes, content_type: str, status: int, signature: str | None
) -> None:
    headers = {"content-type": content_type}
    if signature is not None:
        headers["expo-signature"] = signature
    for d in (dialect(), dialect(None)):
        try:
            result = d.parse_check(status, headers, body, NOW)
        except ProtocolError:
            continue
        if d.certificate is not None:
            assert not isinstance(result, UpdateOffer)  # nothing here is signed by the key


def test_asset_request_headers_are_sent_with_their_asset(tmp_path: Any) -> None:
    """The extensions part's headers ride on that asset's request; headers that would change
    where or how a file is fetched are dropped (the part is unsigned)."""
    from agent.drivers.delta import ManifestFetch
    from agent.store import DeviceStore

    asked = {
        "assetRequestHeaders": {
            "index": {"Authorization": "Bearer t", "Host": "evil.test", "Range": "bytes=9-"},
            "assets/app": {"x-asset": "2", "bad\nname": "x"},
        }
    }
    body = manifest()
    answer = multipart(
        [("manifest", body, signed(body)), ("extensions", json.dumps(asked).encode(), {})]
    )
    offer = parse(answer)
    assert [dict(e.headers) for e in offer.manifest] == [
        {"authorization": "Bearer t"},
        {"x-asset": "2"},
    ]
    store, _, _ = DeviceStore.open(tmp_path / "device")
    fetch = ManifestFetch(
        store, "b1", offer, AgentConfig(), None, now=lambda: 0.0, progress=lambda _: None
    )
    fetch.prepare()
    requests = []
    for transfer in fetch.transfers():
        requests.append(transfer.start())
        transfer.close()
    assert [dict(r.headers) for r in requests] == [{"authorization": "Bearer t"}, {"x-asset": "2"}]
