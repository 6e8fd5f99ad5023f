"""Validation of device request bodies, as the Capgo backend's plugin parser does it.

Every failure is a `BadRequest` carrying the exact Capgo error code; the device endpoints
answer it as HTTP 400 `{"error": code, "message": text}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from simulator.server import semver

APP_ID = re.compile(r"^[a-z0-9]+(\.[\w-]+)+$", re.IGNORECASE)
DEVICE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PLATFORMS = frozenset({"ios", "android", "electron"})
SEMVER_HELP = (
    "doesn't follow semver convention, please check https://capgo.app/semver_tester/ "
    "to learn more about semver usage in Capgo"
)


class BadRequest(Exception):
    """A device request the server refuses with HTTP 400 and a Capgo error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DeviceInfo:
    """A validated Capgo "info object" (update check, stats event or channel_self call)."""

    app_id: str
    device_id: str
    platform: str
    version_name: str  # after Capgo's mapping of "builtin" to version_build
    version_build: str  # coerced to semver ("1.2" -> "1.2.0"), or "unknown"
    plugin_version: str
    is_emulator: bool
    is_prod: bool
    default_channel: str = ""
    key_id: str | None = None
    custom_id: str | None = None
    version_os: str = ""
    channel: str | None = None
    raw_version_name: str = ""
    action: str | None = None
    old_version_name: str | None = None


def _invalid() -> BadRequest:
    return BadRequest("invalid_json_body", "Cannot parse body")


def _opt_str(body: dict[str, Any], key: str, max_len: int | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (max_len is not None and len(value) > max_len):
        raise _invalid()
    return value


def _req_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise _invalid()
    return value


def _common(
    body: object, *, allow_empty_versions: bool, build_optional: bool = False
) -> dict[str, Any]:
    """Checks shared by every device body: presence, ids, build coercion, version names."""
    if not isinstance(body, dict) or not body:
        raise _invalid()
    device_id = body.get("device_id")
    if not device_id:
        raise BadRequest("missing_device_id", "Cannot find device_id")
    if not body.get("app_id"):
        raise BadRequest("missing_app_id", "Cannot find app_id")
    if not isinstance(device_id, str) or not isinstance(body["app_id"], str):
        raise _invalid()
    fields = dict(body)
    fields["device_id"] = device_id.lower()
    if build_optional:
        fields.setdefault("version_build", "")
    build = body.get("version_build")
    if isinstance(build, str) and build and build != "unknown":
        coerced = semver.coerce(build)
        if coerced is None:
            raise BadRequest("semver_error", f"Native version: {build} {SEMVER_HELP}")
        fields["version_build"] = coerced
    name, build = fields.get("version_name"), fields.get("version_build")
    for value in (name, build):
        if not isinstance(value, str) or (not value and not allow_empty_versions):
            raise _invalid()
    fields["raw_version_name"] = name
    if name == "builtin":
        fields["version_name"] = build
    if not APP_ID.match(fields["app_id"]) or not DEVICE_ID.match(fields["device_id"]):
        raise _invalid()
    return fields


def _info(fields: dict[str, Any], *, plugin_required: bool) -> DeviceInfo:
    plugin = fields.get("plugin_version")
    if plugin_required and (not isinstance(plugin, str) or semver.parse(plugin) is None):
        raise _invalid()
    if not isinstance(fields.get("platform"), str) or fields["platform"] not in PLATFORMS:
        raise _invalid()
    _opt_str(fields, "install_source", 64)
    _opt_str(fields, "version_code")
    return DeviceInfo(
        app_id=fields["app_id"],
        device_id=fields["device_id"],
        platform=fields["platform"],
        version_name=fields["version_name"],
        version_build=fields["version_build"],
        plugin_version=_opt_str(fields, "plugin_version") or "0.0.0",
        is_emulator=_req_bool(fields, "is_emulator", False),
        is_prod=_req_bool(fields, "is_prod", True),
        default_channel=_opt_str(fields, "defaultChannel") or "",
        key_id=_opt_str(fields, "key_id", 20) or None,
        custom_id=_opt_str(fields, "custom_id", 36),
        version_os=_opt_str(fields, "version_os") or "",
        channel=_opt_str(fields, "channel"),
        raw_version_name=fields["raw_version_name"],
        action=_opt_str(fields, "action"),
        old_version_name=_opt_str(fields, "old_version_name"),
    )


def parse_update_request(body: object) -> DeviceInfo:
    """Validate a POST /updates body.

    Raises:
        BadRequest: `invalid_json_body`, `missing_device_id`, `missing_app_id`, `semver_error`.
    """
    return _info(_common(body, allow_empty_versions=False), plugin_required=True)


def parse_channel_self_request(body: object) -> DeviceInfo:
    """Validate a /channel_self POST/PUT/DELETE body (version strings may be empty).

    Raises:
        BadRequest: as `parse_update_request`.
    """
    return _info(_common(body, allow_empty_versions=True), plugin_required=False)


def parse_stats_event(body: object, allowed_actions: frozenset[str]) -> DeviceInfo:
    """Validate one /stats event (`version_os` required, `action` from the allowed list).

    Raises:
        BadRequest: as `parse_update_request`.
    """
    fields = _common(body, allow_empty_versions=True, build_optional=True)
    if not isinstance(fields.get("version_os"), str):
        raise _invalid()
    metadata = fields.get("metadata")
    if metadata is not None and not _valid_metadata(metadata):
        raise _invalid()
    info = _info(fields, plugin_required=False)
    if info.action is not None and info.action not in allowed_actions:
        raise _invalid()
    return info


def _valid_metadata(metadata: object) -> bool:
    if not isinstance(metadata, dict) or len(metadata) > 30:
        return False
    return all(len(k) <= 64 and isinstance(v, str) and len(v) <= 2048 for k, v in metadata.items())
