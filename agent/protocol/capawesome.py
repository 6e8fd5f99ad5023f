"""The Capawesome Live Update dialect (`@capawesome/capacitor-live-update`).

Check: `GET <server>/v1/apps/{appId}/bundles/latest` with the query the plugin sends
(`appVersionCode`, `appVersionName`, `bundleId` when a bundle runs, `channelName`, `customId`,
`deviceId`, `osVersion`, `platform` 0 Android / 1 iOS, `pluginVersion`) and the
`X-Capawesome-Device-Id` header. The plugin hard-codes https; otasim takes the server URL as
given (`AgentConfig.update_url`, the base), so loopback tests can use http.

Answer: `{bundleId, url, checksum?, signature?, artifactType}`; 404 means no bundle. The offer
uses the "file" integrity scheme (`agent.security.file_integrity`): the checksum or signature
may also come as `X-Checksum` / `X-Signature` headers of the download. Known variations,
tolerated: a missing `artifactType` (a zip), an upper-case checksum, a 200 answer with an empty
body or `null` for "no bundle", extra fields. Refused: `artifactType: "manifest"` (per-file
downloads of this dialect are not built yet: a clear failure, never a partial install), a
checksum that is not SHA-256 hex. There is no open report or channel API: devices of this
dialect send no stats and keep their channel locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from agent.errors import ProtocolError
from agent.protocol.base import (
    CheckResult,
    DeviceInfo,
    NoUpdate,
    OutgoingRequest,
    UpdateOffer,
    WithoutListing,
    WithoutReports,
)
from agent.protocol.bounds import check_label, load_json, url_problem
from agent.protocol.capgo import failed_check
from agent.protocol.nochannel import NoChannelApi
from agent.security.file_integrity import checksum_problem

PLUGIN_VERSION = "7.2.0"  # the @capawesome/capacitor-live-update release reproduced
PLATFORMS = {"android": "0", "ios": "1"}
NO_BUNDLE = "no_bundle"


def check_url(info: DeviceInfo) -> str:
    """`<server>/v1/apps/{appId}/bundles/latest?<query>` for this device."""
    ident = info.identity
    query = {
        "appVersionCode": ident.version_code,
        "appVersionName": ident.version_build,
        "bundleId": None if info.on_builtin else info.version_name,
        "channelName": info.channel,
        "customId": ident.custom_id or None,
        "deviceId": ident.device_id,
        "osVersion": ident.version_os,
        "platform": PLATFORMS[ident.platform],
        "pluginVersion": PLUGIN_VERSION,
    }
    kept = {k: v for k, v in query.items() if v is not None}
    base = info.config.update_url.rstrip("/")
    return f"{base}/v1/apps/{quote(ident.app_id, safe='')}/bundles/latest?{urlencode(kept)}"


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


class CapawesomeDialect(WithoutListing, WithoutReports, NoChannelApi):
    """Builders and parsers for Capawesome Live Update. Pure; see `Dialect`."""

    name = "capawesome"
    no_channel_api = "Capawesome keeps the channel on the device (channelName): no channel API"

    def check_request(self, info: DeviceInfo) -> OutgoingRequest:
        headers = {
            "accept": "application/json",
            "x-capawesome-device-id": info.identity.device_id,
        }
        return OutgoingRequest("/updates", "GET", check_url(info), headers)

    def parse_check(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> CheckResult:
        """Classify a bundles/latest answer.

        Raises:
            ProtocolError: a 200 answer that is not a bundle object, or a bundle with a
                missing or mistyped field, an unusable URL, a non-SHA-256 checksum or a
                manifest artefact.
        """
        if status == 404:
            return NoUpdate("up_to_date", NO_BUNDLE, "no bundle for this device", status=404)
        if status != 200:
            return failed_check(status, headers, body, now)
        data = load_json(body) if body.strip() else None
        if data is None:
            return NoUpdate("up_to_date", NO_BUNDLE, "empty answer")
        if not isinstance(data, dict):
            raise ProtocolError("a bundles/latest answer must be a JSON object")
        bundle_id = check_label(_optional_text(data, "bundleId") or "", "bundleId")
        url = _optional_text(data, "url") or ""
        problem = url_problem(url)
        if problem:
            raise ProtocolError(f"bundle {bundle_id!r}: {problem}")
        kind = _optional_text(data, "artifactType") or "zip"
        if kind != "zip":
            raise ProtocolError(f"bundle {bundle_id!r}: artifactType {kind!r} is not supported")
        checksum = _optional_text(data, "checksum")
        if checksum is not None and checksum_problem(checksum):
            raise ProtocolError(f"bundle {bundle_id!r}: {checksum_problem(checksum)}")
        return UpdateOffer(
            version=bundle_id,
            url=url,
            checksum=checksum.lower() if checksum else None,
            session_key="",
            integrity="file",
            signature=_optional_text(data, "signature"),
        )
