"""Device endpoints: POST /updates, POST /stats and their GET health answers (reference §2-§4)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.server import channel_store, rollout, semver
from simulator.server.decide import decide
from simulator.server.model import BUILTIN, Answer, Bundle
from simulator.server.state import ServerState
from simulator.server.validation import (
    APP_ID,
    BadRequest,
    DeviceInfo,
    parse_stats_event,
    parse_update_request,
)
from simulator.server.web import JSONResponse, read_json

OK = {"status": "ok"}
ON_PREM = {"error": "on_premise_app", "message": "On-premise app detected"}
_DEVICE_ACTIONS = """
app_moved_to_foreground app_moved_to_background app_launch_start app_launch_ready
app_launch_timeout download_0 download_10 download_20 download_30 download_40 download_50
download_60 download_70 download_80 download_90 download_complete download_zip_start
download_zip_complete download_manifest_start download_manifest_complete download_fail
download_manifest_file_fail download_manifest_checksum_fail download_manifest_brotli_fail
manifest_path_fail checksum_fail checksum_required decrypt_fail unzip_fail windows_path_fail
canonical_path_fail directory_path_fail finish_download_fail low_mem_fail
insufficient_disk_space set set_fail set_next reset delete update_fail rate_limit_reached
blocked_by_server_url os_version_changed native_app_version_changed app_crash
app_crash_native app_anr app_killed_low_memory app_killed_excessive_resource_usage
app_initialization_failure app_memory_warning webview_javascript_error
webview_unhandled_rejection webview_resource_error webview_security_policy_violation
webview_unclean_restart webview_render_process_gone webview_content_process_terminated
webview_dom_content_loaded webview_page_loaded get noNew NoChannelOrOverride missingBundle
keyMismatch disablePlatformIos disablePlatformAndroid disablePlatformElectron
disableAutoUpdateToMajor disableAutoUpdateToMinor disableAutoUpdateToPatch
disableAutoUpdateMetadata disableAutoUpdateUnderNative channelMisconfigured
cannotUpdateViaPrivateChannel disableProdBuild disableDevBuild disableDevice disableEmulator
cannotGetBundle needPlanUpgrade backend_refusal setChannel getChannel customIdBlocked
uninstall ping rateLimited disableAutoUpdate InvalidIp
"""
ALLOWED_ACTIONS = frozenset(_DEVICE_ACTIONS.split())
DOWNLOAD_FAIL_FIXED = {6: "6.14.25", 7: "7.17.0"}


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bad_request(exc: BadRequest) -> JSONResponse:
    return JSONResponse({"error": exc.code, "message": exc.message}, 400)


_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::[0-9]{1,5})?"
)


def base_url(request: Request, state: ServerState) -> str:
    """Where devices reach this server: the configured public URL, else the Host header when
    it is only a host and port, else the address the request came in on (a Host such as
    `a@evil.example/x?` never shapes a download URL)."""
    if state.config.public_url:
        return state.config.public_url.rstrip("/")
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        address, port = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return f"{request.scope.get('scheme', 'http')}://{host}"  # `request.url` parses it all


async def health(request: Request) -> Response:
    """GET /updates and GET /stats."""
    return JSONResponse(OK)


def unknown_app(request: Request, state: ServerState) -> JSONResponse:
    """429 on_premise_app; the short body once the IP's enumeration guard trips."""
    if state.guard.miss(_client_ip(request)):
        return JSONResponse({"error": "on_premise_app"}, 429)
    return JSONResponse(ON_PREM, 429)


async def updates(request: Request) -> Response:
    """POST /updates: validate, resolve the channel, draw the rollout, decide (§3.3)."""
    state = _state(request)
    try:
        info = parse_update_request(await read_json(request))
    except BadRequest as exc:
        return bad_request(exc)
    decision = check(request, state, info)
    if isinstance(decision, Response):
        return decision
    answer, _ = decision
    return JSONResponse(answer.body, answer.status)


def check(
    request: Request, state: ServerState, info: DeviceInfo
) -> Response | tuple[Answer, Bundle | None]:
    """One update check, whatever dialect asked: the app, the guard, channel resolution, the
    rollout draw and the Capgo decision (§3.3), recorded. Returns the refusal to send as it
    is (unknown app, rate limit), else the decision and the bundle it is about (for a dialect
    route to answer in its own shape)."""
    app = state.catalog.app(info.app_id)
    if app is None:
        return unknown_app(request, state)
    if state.guard.limited(_client_ip(request)):
        return JSONResponse({"error": "on_premise_app"}, 429)
    channel, overridden = state.catalog.resolve(info)
    bundle: Bundle | None = None
    if channel is not None:
        target = rollout.target_version(channel, info.device_id, info.version_name)
        if target is not None:
            bundle = state.catalog.bundle(info.app_id, target) or Bundle(info.app_id, target)
    prefix = f"{base_url(request, state)}/files/"
    answer = decide(info, app, channel, overridden, bundle, lambda file_id: prefix + file_id)
    state.recorder.device_seen(info, info.version_name, app.allow_device_custom_id)
    if answer.stat is not None:
        state.recorder.count(info.app_id, answer.stat_version or info.version_name, answer.stat)
    return answer, bundle


def _stats_app_id(events: list[Any]) -> str:
    """The batch's app id, checked like Capgo does on the first event.

    Raises:
        BadRequest: `invalid_app_id`.
    """
    first = events[0].get("app_id") if isinstance(events[0], dict) else None
    if not first or not isinstance(first, str):
        raise BadRequest("invalid_app_id", "App ID is required")
    if not APP_ID.match(first):
        raise BadRequest("invalid_app_id", "App ID must be a reverse domain string")
    return first


def _batch_refusal(events: list[Any], app_id: str) -> JSONResponse | None:
    for event in events[1:]:
        other = event.get("app_id") if isinstance(event, dict) else None
        if not other or not isinstance(other, str):
            return JSONResponse({"error": "invalid_app_id", "message": "App ID is required"})
        if not APP_ID.match(other):
            message = "App ID must be a reverse domain string"
            return JSONResponse({"error": "invalid_app_id", "message": message})
        if other != app_id:
            message = "All events in a batch must have the same app_id"
            return JSONResponse({"error": "mixed_app_ids", "message": message})
    return None


async def stats(request: Request) -> Response:
    """POST /stats: one event or a batch; per-event results for a batch (§4)."""
    state = _state(request)
    body = await read_json(request)
    is_batch = isinstance(body, list)
    events: list[Any] = body if is_batch else [body]
    if not events:
        return JSONResponse({"status": "ok", "results": []})
    try:
        app_id = _stats_app_id(events)
    except BadRequest as exc:
        return bad_request(exc)
    refused = _batch_refusal(events, app_id) if is_batch else None
    if refused is not None:
        return refused
    if state.catalog.app(app_id) is None:
        return JSONResponse(ON_PREM, 429)
    if not is_batch:
        try:
            info = parse_stats_event(events[0], ALLOWED_ACTIONS)
        except BadRequest as exc:
            return bad_request(exc)
        error = record_event(state, info)
        after_stats(state, app_id)
        return JSONResponse(OK if error is None else error)
    results = [_batch_item(state, event, index) for index, event in enumerate(events)]
    after_stats(state, app_id)
    return JSONResponse({"status": "ok", "results": results})


def _batch_item(state: ServerState, event: object, index: int) -> dict[str, object]:
    try:
        info = parse_stats_event(event, ALLOWED_ACTIONS)
    except BadRequest as exc:
        return {"status": "error", "error": exc.code, "message": exc.message, "index": index}
    error = record_event(state, info)
    if error is None:
        return {"status": "ok", "index": index}
    more = {k: error.pop(k) for k in ("app_id", "version_name")}
    return {"status": "error", **error, "index": index, "moreInfo": more}


def _known_version(state: ServerState, info: DeviceInfo, version: str) -> bool:
    if info.raw_version_name in (BUILTIN, "unknown") or version in (BUILTIN, "unknown"):
        return True
    # The native bundle the app shipped with is "builtin" under its own version name.
    return version == info.version_build or state.catalog.bundle(info.app_id, version) is not None


def record_event(state: ServerState, info: DeviceInfo) -> dict[str, object] | None:
    """Count one stats event; None when accepted, else Capgo's `version_not_found` body."""
    action = info.action
    if action is None:
        return None
    if action == "download_fail" and not semver.at_least(info.plugin_version, DOWNLOAD_FAIL_FIXED):
        return None
    version = info.version_name.split(":", 1)[0] if ":" in info.version_name else info.version_name
    if not _known_version(state, info, version):
        return {
            "error": "version_not_found",
            "message": "Version not found",
            "app_id": info.app_id,
            "version_name": info.version_name,
        }
    app = state.catalog.app(info.app_id)
    rec = state.recorder
    rec.count(info.app_id, version, action)
    if action == "set" and info.is_prod and not info.is_emulator:
        # Capgo's version counters: installs (and uninstalls) only from real production devices
        rec.count(info.app_id, version, "install")
        old = info.old_version_name
        if old and old != version and _known_version(state, info, old):
            rec.count(info.app_id, old, "uninstall")
    if not action.endswith("_fail"):
        rec.device_seen(info, version, app is not None and app.allow_device_custom_id)
    return None


def after_stats(state: ServerState, app_id: str) -> None:
    """Pause any rollout whose failure ratio passed its threshold (writing the counts first
    when the app has such a rollout; otherwise they are written behind)."""
    channel_store.auto_pause(state, app_id)
