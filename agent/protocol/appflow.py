"""The Ionic Appflow Deploy dialect (`cordova-plugin-ionic`, the Live Updates SDK), as spoken
by Appflow and the self-hosted servers replacing it.

Check: `POST <server>/apps/{appId}/channels/check-device` with `{channel_name, app_id, device:
{binary_version, device_id, platform, platform_version, snapshot, build}, plugin_version,
manifest: true}`. Answer: `{"data": {available, compatible, partial, snapshot, build, url,
incompatibleUpdateAvailable}, "meta": {...}}`.

An available snapshot's `url` gives its file list (`pro-manifest.json`: `[{href, size,
integrity}]`, SRI hashes): the agent fetches it as the second exchange of the same check
(`listing_request`), then every file through the verified per-file pipeline
(`agent.drivers.delta`): each file's SHA-256 must match its SRI `sha256-` hash. The plugin
only diffs with those hashes and relies on TLS; otasim verifies them, and refuses a list
without a usable `sha256` hash for every file. `href`s resolve against the URL the list came
from after redirects (`data.url` usually redirects to storage), as the plugin does.

Known variations, tolerated: a 400 answer to the differential-manifest request for a zip build
(a failed check, the device keeps going), `build` as a number, a string or null, extra fields
in `data`, `meta` missing, SRI strings listing several hashes (the `sha256` one is used).
Refused: a list that is empty, has duplicate or non-string hrefs, or hashes otasim cannot check
(only sha384/sha512, hex instead of base64). No report or channel API: devices send no stats
and keep their channel locally.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urljoin

from agent.errors import ProtocolError
from agent.protocol.base import (
    CheckResult,
    DeviceInfo,
    ManifestEntry,
    NoUpdate,
    OutgoingRequest,
    UpdateOffer,
    WithoutReports,
)
from agent.protocol.bounds import check_label, load_json, url_problem
from agent.protocol.capgo import failed_check
from agent.protocol.nochannel import NoChannelApi

PLUGIN_VERSION = "5.5.3"  # the cordova-plugin-ionic release reproduced
DEFAULT_CHANNEL = "production"  # the plugin's CHANNEL_NAME when the device sets none
MAX_FILES = 20_000
SHA256_BYTES = 32


def check_url(info: DeviceInfo) -> str:
    base = info.config.update_url.rstrip("/")
    return f"{base}/apps/{quote(info.identity.app_id, safe='')}/channels/check-device"


def check_body(info: DeviceInfo) -> dict[str, Any]:
    ident = info.identity
    return {
        "channel_name": info.channel or DEFAULT_CHANNEL,
        "app_id": ident.app_id,
        "device": {
            "binary_version": ident.version_build,
            "device_id": ident.device_id,
            "platform": ident.platform,
            "platform_version": ident.version_os,
            "snapshot": None if info.on_builtin else info.version_name,
            "build": None,
        },
        "plugin_version": PLUGIN_VERSION,
        "manifest": True,
    }


def sri_sha256_hex(integrity: object) -> str:
    """The SHA-256 (hex) an SRI string names (`sha256-<base64>`, among others).

    Raises:
        ProtocolError: no `sha256` hash, or one that is not base64 of 32 bytes.
    """
    if not isinstance(integrity, str):
        raise ProtocolError("a file's integrity must be an SRI string")
    for token in integrity.split():
        algorithm, _, value = token.partition("-")
        if algorithm.lower() != "sha256":
            continue
        try:
            digest = base64.b64decode(value.split("?", 1)[0], validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != SHA256_BYTES:
            raise ProtocolError(f"integrity {token[:80]!r} is not base64 of a SHA-256 digest")
        return digest.hex()
    raise ProtocolError(f"integrity {integrity[:80]!r} has no sha256 hash otasim can check")


def parse_file_list(body: bytes, base_url: str) -> tuple[ManifestEntry, ...]:
    """The entries of a `pro-manifest.json` (hrefs resolved against `base_url`).

    Raises:
        ProtocolError: not a list of `{href, size, integrity}`, empty, too long, duplicate
            hrefs, an unusable URL or hash.
    """
    data = load_json(body)
    if not isinstance(data, list) or not data or len(data) > MAX_FILES:
        raise ProtocolError(f"a file list must be a JSON array of 1 to {MAX_FILES} files")
    entries, seen = [], set()
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("href"), str):
            raise ProtocolError("each file must be an object with an href")
        href = check_label(item["href"], "a file's href")
        if href in seen:
            raise ProtocolError(f"file {href!r} is listed twice")
        seen.add(href)
        size = item.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ProtocolError(f"file {href!r}: size must be a non-negative integer")
        url = urljoin(base_url, href)
        problem = url_problem(url)
        if problem:
            raise ProtocolError(f"file {href!r}: {problem}")
        entries.append(ManifestEntry(href, sri_sha256_hex(item.get("integrity")), url))
    return tuple(entries)


def _data(body: bytes) -> Mapping[str, Any]:
    answer = load_json(body)
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict):
        raise ProtocolError("a check-device answer must be an object with a `data` object")
    return data


class AppflowDialect(WithoutReports, NoChannelApi):
    """Builders and parsers for Appflow Deploy. Pure; see `Dialect`."""

    name = "appflow"
    no_channel_api = "Appflow keeps the channel in the plugin config (channel_name): no channel API"

    def check_request(self, info: DeviceInfo) -> OutgoingRequest:
        headers = {"content-type": "application/json", "accept": "application/json"}
        body = json.dumps(check_body(info)).encode()
        return OutgoingRequest("/updates", "POST", check_url(info), headers, body)

    def parse_check(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> CheckResult:
        """Classify a check-device answer.

        Raises:
            ProtocolError: a 200 answer without a `data` object, or an available snapshot
                without a usable label or URL.
        """
        if status != 200:
            return failed_check(status, headers, body, now)
        data = _data(body)
        if data.get("available") is not True:
            if data.get("incompatibleUpdateAvailable") is True:
                return NoUpdate(
                    "blocked", "incompatible_update_available", "a native update is needed",
                    breaking=True,
                )  # fmt: skip
            return NoUpdate("up_to_date", "no_update_available")
        if data.get("compatible") is False:
            return NoUpdate("blocked", "incompatible", "the snapshot does not fit this binary")
        snapshot = data.get("snapshot")
        url = data.get("url")
        if not isinstance(snapshot, str) or not isinstance(url, str):
            raise ProtocolError("an available snapshot needs a string `snapshot` and `url`")
        version = check_label(snapshot, "snapshot")
        problem = url_problem(url)
        if problem:
            raise ProtocolError(f"snapshot {version!r}: {problem}")
        return UpdateOffer(version=version, url=url, checksum=None, session_key="", listing_url=url)

    def listing_request(self, info: DeviceInfo, offer: UpdateOffer) -> OutgoingRequest:
        assert offer.listing_url is not None
        return OutgoingRequest("/updates", "GET", offer.listing_url, {"accept": "application/json"})

    def parse_listing(
        self, offer: UpdateOffer, status: int, headers: Mapping[str, str], body: bytes
    ) -> CheckResult:
        """`offer` with the files of its `pro-manifest.json`.

        Raises:
            ProtocolError: the list is malformed or unsafe (see `parse_file_list`).
        """
        if status != 200:
            return NoUpdate("failed", f"http_{status}", "the snapshot's file list", status=status)
        assert offer.listing_url is not None
        return replace(offer, manifest=parse_file_list(body, offer.listing_url))
