"""The `@capgo/capacitor-updater` dialect: /updates, /stats and /channel_self.

Request bodies carry the plugin's "info object" field for field (reference §2); answers are
parsed as the plugin generation of the dialect's `PluginProfile` reads them (§3.4): an error
or a `kind` means no update; plugin 8 sorts it by `kind` (a missing or unknown `kind` is
`failed`), plugins 6 and 7 take only `no_new_version_available` as up to date and every other
error as `failed`. Stats go as one JSON array (plugin 8) or one object per POST (6, 7).
`version: "builtin"` alone means revert, HTTP 429 carries a
rate-limit hint (`Retry-After`, `moreInfo.retryAfterSeconds`, `retryAfterSeconds` or
`rateLimitResetAt` in epoch ms), capped at 24 h.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from agent.bundles.manifest import parse_manifest
from agent.errors import ProtocolError
from agent.protocol.answers import KINDS
from agent.protocol.base import (
    MAX_RATE_LIMIT_S,
    RELEASE_FIELD,
    ChannelAnswer,
    ChannelListing,
    CheckKind,
    CheckResult,
    DeviceInfo,
    NoUpdate,
    OutgoingRequest,
    RateLimitHint,
    RevertToBuiltin,
    StatEvent,
    StatsOutcome,
    UpdateOffer,
    WithoutListing,
)
from agent.protocol.bounds import (
    check_label,
    label_problem,
    load_json,
    load_json_lenient,
    url_problem,
)
from agent.protocol.profiles import PluginProfile, get_profile

NO_NEW_VERSION = "no_new_version_available"
STATS_BATCH_SIZE = 100
PRIVATE_CHANNEL_ERRORS = frozenset(
    {"channel_self_set_not_allowed", "cannot_update_via_private_channel"}
)


def user_agent(info: DeviceInfo) -> str:
    """`CapacitorUpdater/<plugin> (<appId>) <platform>/<os>`, cleaned as the plugin does."""
    ident = info.identity
    return _user_agent(ident.plugin_version, ident.app_id, ident.platform, ident.version_os)


@functools.lru_cache(maxsize=1024)
def _user_agent(plugin_version: str, app_id: str, platform: str, version_os: str) -> str:
    return (
        f"CapacitorUpdater/{_clean(plugin_version)} ({_clean(app_id)}) "
        f"{platform}/{_clean(version_os)}"
    )


def _clean(value: str) -> str:
    kept = "".join(c for c in value if 0x20 <= ord(c) < 0x7F or 0xA0 <= ord(c) <= 0xFF)
    return kept.strip() or "unknown"


def info_object(info: DeviceInfo) -> dict[str, Any]:
    """The body fields shared by every request (reference §2)."""
    ident = info.identity
    body: dict[str, Any] = {
        "platform": ident.platform,
        "device_id": ident.device_id,
        "app_id": ident.app_id,
        "custom_id": ident.custom_id,
        "version_build": ident.version_build,
        "version_code": ident.version_code,
        "version_os": ident.version_os,
        "version_name": info.version_name,
        "plugin_version": ident.plugin_version,
        "is_emulator": ident.is_emulator,
        "is_prod": ident.is_prod,
        "install_source": ident.install_source,
        "defaultChannel": info.channel or "",
    }
    if info.key_id:
        body["key_id"] = info.key_id
    return body


def _json_request(name: str, method: str, url: str, info: DeviceInfo, body: Any) -> OutgoingRequest:
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "user-agent": user_agent(info),
    }
    return OutgoingRequest(name, method, url, headers, json.dumps(body).encode())


def _load(body: bytes) -> Any:
    return load_json(body)


def _str_field(data: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def retry_hint(headers: Mapping[str, str], data: Any, now: float) -> float | None:
    """Seconds to stay quiet after a 429, from the header or body hints; None when none."""
    seconds: float | None = None
    header = headers.get("retry-after")
    if header:
        try:
            seconds = float(header)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(header).timestamp() - now
            except (TypeError, ValueError):
                seconds = None
    if seconds is None and isinstance(data, dict):
        more = data.get("moreInfo")
        candidates = [
            more.get("retryAfterSeconds") if isinstance(more, dict) else None,
            data.get("retryAfterSeconds"),
        ]
        for value in candidates:
            if isinstance(value, int | float) and not isinstance(value, bool):
                seconds = float(value)
                break
        reset_at = data.get("rateLimitResetAt")
        if seconds is None and isinstance(reset_at, int | float) and not isinstance(reset_at, bool):
            seconds = reset_at / 1000.0 - now
    if seconds is None or seconds != seconds or seconds <= 0:
        return None
    return min(seconds, MAX_RATE_LIMIT_S)


def failed_check(
    status: int, headers: Mapping[str, str], body: bytes, now: float
) -> RateLimitHint | NoUpdate:
    """A non-200 check answer of a dialect without Capgo's error bodies: 429 is a rate limit
    (with the server's hint), anything else a failed check named `http_<status>` (with a JSON
    `message`, or `error.message`, when the body has one)."""
    data = _load_lenient(body)
    if status == 429:
        return RateLimitHint("too_many_requests", retry_hint(headers, data, now))
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if message is None and isinstance(data, dict):
        message = data.get("message")
    return NoUpdate("failed", f"http_{status}", str(message or ""), status=status)


def stats_outcome(
    status: int, headers: Mapping[str, str], body: bytes, now: float
) -> tuple[StatsOutcome, float | None]:
    """What a report's answer means for the batch: sent (2xx), put back (429 with its hint,
    408, 5xx) or dropped (any other 4xx: the server will never take it)."""
    if 200 <= status < 300:
        return StatsOutcome.SENT, None
    if status == 429:
        return StatsOutcome.REQUEUE, retry_hint(headers, _load_lenient(body), now)
    if status == 408 or status >= 500:
        return StatsOutcome.REQUEUE, None
    return StatsOutcome.DROP, None


class CapgoDialect(WithoutListing):
    """Builders and parsers for the Capgo plugin protocol. Pure; see `Dialect`."""

    name = "capgo"

    def __init__(self, profile: PluginProfile | None = None) -> None:
        self.profile = profile or get_profile()
        self.stats_batch_size = STATS_BATCH_SIZE if self.profile.stats_batched else 1
        self.stores_channel_locally = self.profile.channel_stored_locally

    def check_request(self, info: DeviceInfo) -> OutgoingRequest:
        return _json_request("/updates", "POST", info.config.update_url, info, info_object(info))

    def parse_check(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> CheckResult:
        """Classify an /updates answer.

        Raises:
            ProtocolError: a 200 answer that is not a JSON object, or an offer with missing or
                mistyped fields.
        """
        if status == 429:
            data = _load_lenient(body)
            error = data.get("error") if isinstance(data, dict) else None
            return RateLimitHint(str(error or "too_many_requests"), retry_hint(headers, data, now))
        if status != 200:
            data = _load_lenient(body)
            error = data.get("error") if isinstance(data, dict) else None
            message = data.get("message") if isinstance(data, dict) else None
            return NoUpdate(
                "failed", str(error or f"http_{status}"), str(message or ""), status=status
            )
        data = _load(body)
        if not isinstance(data, dict):
            raise ProtocolError("an /updates answer must be a JSON object")
        if "error" in data or "kind" in data:
            return _no_update(data, self.profile.reads_kind)
        return _offer(data, self.profile.accepts_manifest)

    def stats_request(self, info: DeviceInfo, events: Sequence[StatEvent]) -> OutgoingRequest:
        """A JSON array of events (plugin 8), or one event object (plugins 6 and 7).

        Raises:
            ValueError: several events for a profile that sends one per POST.
        """
        batch = []
        for event in events:
            item = info_object(info)
            item.update(version_name=event.version_name, action=event.action)
            item["timestamp"] = event.timestamp_ms
            if event.old_version_name is not None:
                item["old_version_name"] = event.old_version_name
            if event.metadata:
                item["metadata"] = dict(event.metadata)
            batch.append(item)
        if self.profile.stats_batched:
            return _json_request("/stats", "POST", info.config.stats_url, info, batch)
        if len(batch) != 1:
            raise ValueError(f"{self.profile.name} sends one stats event per POST")
        return _json_request("/stats", "POST", info.config.stats_url, info, batch[0])

    def parse_stats(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> tuple[StatsOutcome, float | None]:
        return stats_outcome(status, headers, body, now)

    def channel_set_request(self, info: DeviceInfo, channel: str) -> OutgoingRequest:
        body = info_object(info) | {"channel": channel}
        return _json_request("/channel_self", "POST", info.config.channel_url, info, body)

    def channel_get_request(self, info: DeviceInfo) -> OutgoingRequest:
        return _json_request(
            "/channel_self", "PUT", info.config.channel_url, info, info_object(info)
        )

    def channel_unset_request(self, info: DeviceInfo) -> OutgoingRequest | None:
        """`DELETE <channelUrl>?<info object>` for plugins before 7.34.0; None for current
        ones, which only forget the channel they keep."""
        if not self.profile.unset_channel_delete:
            return None
        return self._query_request("DELETE", info)

    def channel_list_request(self, info: DeviceInfo) -> OutgoingRequest:
        """GET the channel list.

        Raises:
            ProtocolError: the profile's plugin has no listChannels (before 7.5.0).
        """
        if not self.profile.lists_channels:
            raise ProtocolError(f"{self.profile.name} has no listChannels (plugin >= 7.5.0)")
        return self._query_request("GET", info)

    def _query_request(self, method: str, info: DeviceInfo) -> OutgoingRequest:
        query = {
            k: str(v).lower() if isinstance(v, bool) else v for k, v in info_object(info).items()
        }
        url = info.config.channel_url + "?" + urlencode(query)
        return OutgoingRequest("/channel_self", method, url, {"user-agent": user_agent(info)})

    def parse_channel(self, status: int, body: bytes) -> ChannelAnswer:
        """Parse a channel_self POST/PUT answer.

        Raises:
            ProtocolError: the body is not a JSON object or has mistyped fields.
        """
        data = _load(body) if status == 200 else _load_lenient(body)
        if not isinstance(data, dict):
            if status != 200:
                return ChannelAnswer(False, error=f"http_{status}")
            raise ProtocolError("a channel_self answer must be a JSON object")
        error = _str_field(data, "error")
        if error or status != 200:
            message = data.get("message")
            return ChannelAnswer(
                False,
                error=error or f"http_{status}",
                message=str(message or ""),
                private=error in PRIVATE_CHANNEL_ERRORS,
            )
        allowed = data.get("allowSet", True) is not False
        return ChannelAnswer(
            allowed, channel=_str_field(data, "channel"), status=_str_field(data, "status")
        )

    def parse_channel_list(self, status: int, body: bytes) -> list[ChannelListing]:
        """Parse the GET channel_self listing (a bare JSON array).

        Raises:
            ProtocolError: a non-200 status, or a body that is not a list of channels.
        """
        if status != 200:
            raise ProtocolError(f"channel list answered HTTP {status}")
        data = _load(body)
        if not isinstance(data, list):
            raise ProtocolError("a channel list must be a JSON array")
        listing = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ProtocolError("each channel must be an object with a name")
            listing.append(
                ChannelListing(
                    item["id"] if isinstance(item.get("id"), int | str) else item["name"],
                    item["name"],
                    item.get("public") is True,
                    item.get("allow_self_set") is True,
                )
            )
        return listing


def _load_lenient(body: bytes) -> Any:
    return load_json_lenient(body)


def _breaking(data: Mapping[str, Any]) -> bool:
    return (
        data.get("breaking") is True
        or data.get("major") is True
        or data.get("error") == "disable_auto_update_to_major"
        or data.get("message") == "store_update_required"
    )


def _device_kind(data: Mapping[str, Any], reads_kind: bool) -> CheckKind:
    """How the plugin sorts a no-update answer (see `agent.protocol.answers` for what it means)."""
    kind = data.get("kind")
    if reads_kind:
        return kind if isinstance(kind, str) and kind in KINDS else "failed"  # type: ignore[return-value]
    return "up_to_date" if data.get("error") == NO_NEW_VERSION else "failed"


def _no_update(data: Mapping[str, Any], reads_kind: bool) -> NoUpdate:
    error = data.get("error")
    version = data.get("version")
    message = data.get("message")
    return NoUpdate(
        _device_kind(data, reads_kind),
        error if isinstance(error, str) and error else "unknown_error",
        message if isinstance(message, str) else "",
        version if isinstance(version, str) and not label_problem(version) else None,
        _breaking(data),
        release=data.get(RELEASE_FIELD),
    )


def _offer(data: Mapping[str, Any], accepts_manifest: bool) -> CheckResult:
    """An offer; a plugin without delta support (plugin 6) ignores a `manifest`."""
    version = check_label(_str_field(data, "version", required=True) or "", "an offer's version")
    if version == "builtin":
        return RevertToBuiltin()
    url = _str_field(data, "url") or ""
    raw_manifest = data.get("manifest") if accepts_manifest else None
    manifest = tuple(parse_manifest(raw_manifest)) if raw_manifest is not None else None
    problem = url_problem(url) if url or not manifest else None
    if problem:
        raise ProtocolError(f"offer {version!r}: {problem}")
    return UpdateOffer(
        version=version,
        url=url,
        checksum=_str_field(data, "checksum") or None,
        session_key=_str_field(data, "session_key") or "",
        manifest=manifest,
        breaking=_breaking(data),
        message=_str_field(data, "message"),
        link=_str_field(data, "link"),
        comment=_str_field(data, "comment"),
        release=data.get(RELEASE_FIELD),
    )
