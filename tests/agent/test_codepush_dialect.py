"""The CodePush dialect's answers and package checks: the protocol's shapes, the known server
variations, the package hash against a hand-computed vector, and hostile answers and packages
under hypothesis."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig, DeviceIdentity
from agent.errors import ProtocolError, VerificationError
from agent.protocol.base import (
    UPDATE_CONFIRMED,
    DeviceInfo,
    NoUpdate,
    RevertToBuiltin,
    StatEvent,
    UpdateOffer,
)
from agent.protocol.codepush import CodePushDialect
from agent.security.codepush import package_hash, verify_package

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
HASH = "ab" * 32
DIALECT = CodePushDialect(KEY.public_key())


def answer(**info: Any) -> bytes:
    base = {
        "is_available": True,
        "download_url": "http://127.0.0.1:1/files/x",
        "package_hash": HASH,
        "label": "v7",
        "package_size": 10,
    }
    return json.dumps({"update_info": base | info}).encode()


def test_an_available_update_is_an_offer_checked_by_its_package_hash() -> None:
    result = DIALECT.parse_check(200, {}, answer(description="fix"), 0)
    assert isinstance(result, UpdateOffer)
    assert (result.version, result.url, result.package_hash) == (
        "v7",
        "http://127.0.0.1:1/files/x",
        HASH,
    )
    assert result.checksum is None and result.message == "fix"


@pytest.mark.parametrize(
    ("body", "kind", "error"),
    [
        ({"is_available": False}, "up_to_date", "no_update_available"),
        ({"update_app_version": True}, "blocked", "update_app_version"),
        ({"is_disabled": True}, "blocked", "update_disabled"),  # a server variation
    ],
)
def test_no_update_answers(body: dict[str, Any], kind: str, error: str) -> None:
    result = DIALECT.parse_check(200, {}, answer(**body), 0)
    assert isinstance(result, NoUpdate) and (result.kind, result.error) == (kind, error)


def test_should_run_binary_version_goes_back_to_the_binary() -> None:
    body = answer(is_available=False, should_run_binary_version=True)
    assert isinstance(DIALECT.parse_check(200, {}, body, 0), RevertToBuiltin)


def test_legacy_camel_case_answers_are_read() -> None:
    legacy = {
        "updateInfo": {
            "isAvailable": True,
            "downloadURL": "https://cdn.example/p.zip",
            "packageHash": HASH.upper(),
            "label": "v3",
        }
    }
    result = DIALECT.parse_check(200, {}, json.dumps(legacy).encode(), 0)
    assert isinstance(result, UpdateOffer) and result.package_hash == HASH


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        answer(package_hash="zz" * 32),
        answer(package_hash="abc"),
        answer(download_url="ftp://x/y"),
        answer(label=""),
    ],
)
def test_malformed_answers_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        DIALECT.parse_check(200, {}, body, 0)


def test_the_package_hash_matches_the_sdk_rule(tmp_path: Path) -> None:
    """The rule written out by hand: sorted "path:sha256" entries, JSON, SHA-256; signature and
    macOS litter left out."""
    (tmp_path / "b").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    files = {"index.html": b"<html>", "b/app.js": b"x=1", "b/.DS_Store": b"junk"}
    files |= {".codepushrelease": b"jwt", "__MACOSX/._a": b"fork"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    entries = [
        "b/app.js:" + hashlib.sha256(b"x=1").hexdigest(),
        "index.html:" + hashlib.sha256(b"<html>").hexdigest(),
    ]
    expected = hashlib.sha256(('["' + '","'.join(entries) + '"]').encode()).hexdigest()
    assert package_hash(tmp_path) == expected


def signed_folder(tmp_path: Path, key: rsa.RSAPrivateKey, **claims: Any) -> Path:
    (tmp_path / "index.html").write_bytes(b"<html>")
    token = jwt.encode({"claimVersion": "1.0.0", "contentHash": package_hash(tmp_path)} | claims,
                       key, algorithm="RS256")  # fmt: skip
    (tmp_path / ".codepushrelease").write_text(token)
    return tmp_path


@pytest.mark.parametrize(
    ("case", "action"),
    [
        ("good", None),
        ("other_key", "signature_fail"),
        ("other_hash", "signature_fail"),
        ("hs256", "signature_fail"),
        ("none_alg", "signature_fail"),
        ("missing", "signature_required"),
        ("tampered", "checksum_fail"),
    ],
)
def test_package_signature(tmp_path: Path, case: str, action: str | None) -> None:
    folder = signed_folder(tmp_path, OTHER if case == "other_key" else KEY)
    expected = package_hash(folder)
    token_file = folder / ".codepushrelease"
    if case == "other_hash":
        token_file.write_text(jwt.encode({"contentHash": "00" * 32}, KEY, algorithm="RS256"))
    elif case == "hs256":  # the public key used as an HMAC secret: the classic confusion
        secret = KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token_file.write_text(
            jwt.encode({"contentHash": expected}, secret.decode()[:32], algorithm="HS256")
        )
    elif case == "none_alg":
        token_file.write_text(jwt.encode({"contentHash": expected}, None, algorithm="none"))
    elif case == "missing":
        token_file.unlink()
    elif case == "tampered":
        (folder / "index.html").write_bytes(b"<html>owned")
    if action is None:
        verify_package(folder, expected, KEY.public_key())
        return
    with pytest.raises(VerificationError) as caught:
        verify_package(folder, expected, KEY.public_key())
    assert caught.value.action == action


def test_reports_go_to_report_status_for_the_deployment() -> None:
    identity = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "ios", "2.0.0")
    base = "http://127.0.0.1:1/v0.1/public/codepush/report_status"
    config = AgentConfig(update_url="http://127.0.0.1:1/u", stats_url=base, dialect="codepush")
    info = DeviceInfo(identity, config, "1.0.2", "beta", None, HASH)
    deploy = DIALECT.stats_request(info, [StatEvent(1, UPDATE_CONFIRMED, "1.0.2", 0, "1.0.1")])
    body = json.loads(deploy.body or b"")
    assert deploy.url == base + "/deploy" and body["status"] == "DeploymentSucceeded"
    assert body["deployment_key"] == "com.example.app/ios/beta"
    assert body["previous_label_or_app_version"] == "1.0.1"
    failed = json.loads(
        DIALECT.stats_request(info, [StatEvent(2, "update_fail", "1.0.2", 0)]).body or b""
    )
    assert failed["status"] == "DeploymentFailed"
    assert (
        DIALECT.stats_request(info, [StatEvent(3, "download_complete", "1.0.2", 0)]).url
        == base + "/download"
    )
    for action in ("app_moved_to_foreground", "set"):  # activation alone reports nothing
        with pytest.raises(ValueError):
            DIALECT.stats_request(info, [StatEvent(4, action, "1.0.2", 0)])
    check = DIALECT.check_request(info)
    assert f"package_hash={HASH}" in check.url and "label=1.0.2" in check.url


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "update_info",
                            "updateInfo",
                            "is_available",
                            "isAvailable",
                            "download_url",
                            "package_hash",
                            "label",
                            "should_run_binary_version",
                            "update_app_version",
                        ]
                    ),
                    inner,
                    max_size=6,
                )
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    ),
    status=st.sampled_from([200, 204, 404, 429, 500]),
)
def test_arbitrary_answers_never_raise_anything_but_protocol_errors(
    body: bytes, status: int
) -> None:
    try:
        result = DIALECT.parse_check(status, {}, body, 0)
    except ProtocolError:
        return
    if isinstance(result, UpdateOffer):  # only with a hash the unzipped files must match
        assert result.package_hash is not None and len(result.package_hash) == 64


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(edit=st.binary(min_size=1, max_size=8), position=st.integers(min_value=0, max_value=400))
def test_edited_signature_files_never_verify(
    tmp_path_factory: Any, edit: bytes, position: int
) -> None:
    folder = signed_folder(tmp_path_factory.mktemp("pkg"), KEY)
    token_file = folder / ".codepushrelease"
    token = token_file.read_bytes()
    edited = token[:position] + edit + token[position + len(edit) :]
    if edited == token:
        return
    token_file.write_bytes(edited)
    with pytest.raises(VerificationError):
        verify_package(folder, package_hash(folder), KEY.public_key())
