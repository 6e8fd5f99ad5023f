"""The Appflow Deploy dialect: its check, its answers and file lists (hostile ones under
hypothesis), SRI hashes turned into the per-file SHA-256 the pipeline verifies (the plugin
only diffs with them), and the known server variations accepted or refused."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from capgo_peer import Canned, CapgoPeer
from device_harness import Driven, Recorder
from hypothesis import given, settings
from hypothesis import strategies as st
from json_strategies import JSON_VALUES

from agent.bundles.manifest import DeltaFileVerifier
from agent.config import AgentConfig, DeviceIdentity
from agent.core.rollback import plain_content_id
from agent.errors import ProtocolError, VerificationError
from agent.protocol.appflow import PLUGIN_VERSION, AppflowDialect, sri_sha256_hex
from agent.protocol.base import DeviceInfo, NoUpdate, RateLimitHint, UpdateOffer

DIALECT = AppflowDialect()
IDENTITY = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "android", "3.0.0")
CONFIG = AgentConfig(update_url="http://127.0.0.1:9", stats_url="", dialect="appflow")
FILE = b"console.log('hello');"
SRI = "sha256-" + base64.b64encode(hashlib.sha256(FILE).digest()).decode()
LIST_URL = "http://127.0.0.1:9/apps/a/snapshots/1.0.1/pro-manifest.json"


def test_the_check_is_the_plugins_post() -> None:
    info = DeviceInfo(IDENTITY, CONFIG, "1.0.0", None, None, on_builtin=False)
    request = DIALECT.check_request(info)
    assert (request.name, request.method) == ("/updates", "POST")
    assert request.url == "http://127.0.0.1:9/apps/com.example.app/channels/check-device"
    assert json.loads(request.body or b"") == {
        "channel_name": "production",
        "app_id": "com.example.app",
        "device": {
            "binary_version": "3.0.0",
            "device_id": IDENTITY.device_id,
            "platform": "android",
            "platform_version": "17.0",
            "snapshot": "1.0.0",
            "build": None,
        },
        "plugin_version": PLUGIN_VERSION,
        "manifest": True,
    }
    on_builtin = DeviceInfo(IDENTITY, CONFIG, "3.0.0", "beta", None, on_builtin=True)
    body = json.loads(DIALECT.check_request(on_builtin).body or b"")
    assert body["device"]["snapshot"] is None and body["channel_name"] == "beta"


def _answer(**data: Any) -> bytes:
    base = {"available": True, "compatible": True, "partial": False, "snapshot": "1.0.1",
            "build": 7, "url": LIST_URL, "incompatibleUpdateAvailable": False}  # fmt: skip
    return json.dumps({"data": base | data, "meta": {"status": 200}}).encode()


def test_an_available_snapshot_is_an_offer_whose_files_come_next() -> None:
    offer = DIALECT.parse_check(200, {}, _answer(), 0)
    assert isinstance(offer, UpdateOffer) and offer.listing_url == LIST_URL
    assert offer.manifest is None  # the core fetches the list as the check's second exchange
    request = DIALECT.listing_request(DeviceInfo(IDENTITY, CONFIG, "3.0.0", None, None), offer)
    assert (request.name, request.method, request.url) == ("/updates", "GET", LIST_URL)
    files = [{"href": "index.html", "size": 3, "integrity": SRI},
             {"href": "js/app.js", "size": 3, "integrity": f"sha512-AAAA {SRI}"}]  # fmt: skip
    full = DIALECT.parse_listing(offer, 200, {}, json.dumps(files).encode())
    assert isinstance(full, UpdateOffer) and full.manifest is not None
    assert [(e.file_name, e.download_url) for e in full.manifest] == [
        ("index.html", "http://127.0.0.1:9/apps/a/snapshots/1.0.1/index.html"),
        ("js/app.js", "http://127.0.0.1:9/apps/a/snapshots/1.0.1/js/app.js"),
    ]
    assert {e.file_hash for e in full.manifest} == {hashlib.sha256(FILE).hexdigest()}
    assert plain_content_id(full) is not None and plain_content_id(full).startswith("files:")


@pytest.mark.parametrize(
    ("data", "status", "expected"),
    [
        ({"available": False}, 200, ("up_to_date", "no_update_available")),
        ({"available": False, "incompatibleUpdateAvailable": True}, 200,
         ("blocked", "incompatible_update_available")),
        ({"compatible": False}, 200, ("blocked", "incompatible")),
        ({}, 400, ("failed", "http_400")),  # variation: a differential manifest refused
        ({"build": "seven", "extra": [1]}, 200, None),  # variation: build a string, extras
        ({"build": None}, 200, None),
    ],
)  # fmt: skip
def test_answers_and_tolerated_variations(
    data: dict[str, Any], status: int, expected: tuple[str, str] | None
) -> None:
    result = DIALECT.parse_check(status, {}, _answer(**data), 0)
    if expected is None:
        assert isinstance(result, UpdateOffer)
    else:
        assert isinstance(result, NoUpdate) and (result.kind, result.error) == expected


def test_429_and_a_missing_meta() -> None:
    assert isinstance(DIALECT.parse_check(429, {"retry-after": "5"}, b"", 0), RateLimitHint)
    no_meta = json.dumps({"data": {"available": False}}).encode()
    assert isinstance(DIALECT.parse_check(200, {}, no_meta, 0), NoUpdate)


@pytest.mark.parametrize(
    "files",
    [
        [],  # installs nothing
        [{"href": "a", "integrity": SRI}, {"href": "a", "integrity": SRI}],  # twice
        [{"href": "a", "integrity": "sha512-" + "A" * 88}],  # no sha256 to check
        [{"href": "a", "integrity": "sha256-" + hashlib.sha256(FILE).hexdigest()}],  # hex
        [{"href": "a", "integrity": "sha256-AAAA"}],  # too short
        [{"href": 3, "integrity": SRI}],
        [{"href": "a", "size": -1, "integrity": SRI}],
        [{"href": "a"}],
        {"files": []},
    ],
)
def test_unsafe_file_lists_are_refused(files: object) -> None:
    offer = DIALECT.parse_check(200, {}, _answer(), 0)
    assert isinstance(offer, UpdateOffer)
    with pytest.raises(ProtocolError):
        DIALECT.parse_listing(offer, 200, {}, json.dumps(files).encode())


def test_a_listed_hash_is_verified_on_the_bytes() -> None:
    """The SRI hash becomes the file's SHA-256: a tampered file fails the per-file check."""
    offer = DIALECT.parse_check(200, {}, _answer(), 0)
    assert isinstance(offer, UpdateOffer)
    listing = json.dumps([{"href": "index.html", "size": 1, "integrity": SRI}]).encode()
    full = DIALECT.parse_listing(offer, 200, {}, listing)
    assert isinstance(full, UpdateOffer) and full.manifest is not None
    for data, ok in ((FILE, True), (FILE + b"!", False)):
        verifier = DeltaFileVerifier(full.manifest[0], None, None)
        verifier.update(data)
        if ok:
            verifier.finish()
        else:
            with pytest.raises(VerificationError):
                verifier.finish()


def test_sri_forms() -> None:
    digest = hashlib.sha256(FILE).hexdigest()
    assert sri_sha256_hex(SRI) == digest
    assert sri_sha256_hex(f"sha384-xyz {SRI}?opt") == digest
    for bad in ("", "md5-abc", None, "sha256-!!"):
        with pytest.raises(ProtocolError):
            sri_sha256_hex(bad)


JSON = JSON_VALUES
DATA = st.fixed_dictionaries(
    {},
    optional={
        "available": st.booleans() | JSON,
        "compatible": st.booleans() | JSON,
        "snapshot": st.text(max_size=12) | JSON,
        "url": st.sampled_from([LIST_URL, "x", ""]) | JSON,
        "incompatibleUpdateAvailable": st.booleans() | JSON,
    },
)
FILES = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "href": st.sampled_from(["index.html", "../x", "a/b.js", ""]) | JSON,
            "size": st.integers(-2, 9) | JSON,
            "integrity": st.sampled_from([SRI, "sha256-", "sha512-x"]) | JSON,
        },
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 200, 400, 429, 503]),
    answer=st.builds(lambda d: {"data": d}, DATA) | JSON,
    files=FILES | JSON,
)
def test_any_answer_and_list_parse_or_are_a_protocol_error(
    status: int, answer: object, files: object
) -> None:
    """Never an unhandled exception; every offer that reaches a download has a SHA-256 for
    each of its files (checked on the bytes before anything is installed)."""
    try:
        result = DIALECT.parse_check(status, {}, json.dumps(answer).encode(), 0)
        if isinstance(result, UpdateOffer):
            result = DIALECT.parse_listing(result, 200, {}, json.dumps(files).encode())
    except ProtocolError:
        return
    if isinstance(result, UpdateOffer):
        assert result.manifest, "an offer without files would install nothing verified"
        assert all(len(e.file_hash) == 64 for e in result.manifest)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_hrefs_resolve_against_where_a_redirected_file_list_came_from(
    peer: CapgoPeer, tmp_path: Path, kind: str
) -> None:
    """Appflow's `data.url` redirects to storage; the files are relative to the list's final
    URL (`/files/`), not to `data.url` (`/go/`, which serves nothing else): over loopback,
    with either driver, every file is fetched from there and the snapshot installs."""
    index = b"<html>1.0.1</html>"
    sri = "sha256-" + base64.b64encode(hashlib.sha256(index).digest()).decode()
    peer.files["pro-manifest.json"] = json.dumps(
        [{"href": "index.html", "size": len(index), "integrity": sri}]
    ).encode()
    peer.files["index.html"] = index
    answer = json.loads(_answer(url=f"{peer.url}/go/pro-manifest.json"))
    peer.canned.append(
        Canned(200, json.dumps(answer).encode(), {"content-type": "application/json"})
    )
    config = AgentConfig(update_url=peer.url, stats_url="", dialect="appflow", transport_attempts=1)
    device = Driven(kind, tmp_path / "d", config, IDENTITY, Recorder())
    try:
        device.launch()
        status = device.status()
        assert status.next is not None and status.next.version == "1.0.1", device.observer.events
        assert "/files/index.html" in peer.paths() and "/go/index.html" not in peer.paths()
    finally:
        device.close()
