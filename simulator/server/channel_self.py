"""/channel_self: a device asks to join a channel (POST), reads its channel (PUT), leaves it
(DELETE, old plugins) or lists the channels it may join (GET). Reference §5.

Plugins from 5.34.0 / 6.34.0 / 7.34.0 / 8.x keep the chosen channel on the device: the server
only validates. Older plugins get a server-side device override (`channel_devices`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.server import semver
from simulator.server.db import transaction
from simulator.server.device_api import OK, ON_PREM, bad_request
from simulator.server.model import Channel
from simulator.server.state import ServerState
from simulator.server.validation import APP_ID, PLATFORMS, BadRequest, parse_channel_self_request
from simulator.server.web import JSONResponse, read_json

LOCAL_CHANNEL_MIN = {5: "5.34.0", 6: "6.34.0", 7: "7.34.0", 8: "8.0.0"}
_QUERY_FIELDS = [
    "version_name",
    "version_build",
    "platform",
    "app_id",
    "device_id",
    "plugin_version",
    "defaultChannel",
    "channel",
    "custom_id",
    "install_source",
    "version_os",
    "key_id",
]


def _error(code: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra})


def query_to_body(query: dict[str, str]) -> dict[str, Any]:
    """Capgo's `convertQueryToBody` for DELETE (fields from the query string)."""
    if not query:
        return {}
    body: dict[str, Any] = {k: query[k] for k in _QUERY_FIELDS if k in query}
    body["is_emulator"] = query.get("is_emulator", "false") == "true"
    body["is_prod"] = query.get("is_prod", "true") == "true"
    return body


def _override(state: ServerState, app_id: str, device_id: str) -> Channel | None:
    return state.catalog.override(app_id, device_id)


def _set_override(state: ServerState, app_id: str, device_id: str, channel: Channel | None) -> None:
    with transaction(state.conn) as conn:
        conn.execute(
            "DELETE FROM channel_devices WHERE app_id = ? AND device_id = ?", (app_id, device_id)
        )
        if channel is not None:
            conn.execute(
                "INSERT INTO channel_devices (app_id, device_id, channel_id) VALUES (?, ?, ?)",
                (app_id, device_id, channel.id),
            )
    state.changed()


def _self_set_refusal(channel: Channel | None, name: str, app_id: str) -> JSONResponse | None:
    if channel is None:
        return _error("channel_not_found", "Cannot find channel", channel=name, app_id=app_id)
    if channel.allow_device_self_set:
        return None
    if channel.public:
        return _error(
            "public_channel_self_set_not_allowed",
            "This channel is public and does not allow device self-assignment. Unset the "
            "channel and the device will automatically use the public channel.",
            channel=name,
            app_id=app_id,
        )
    return _error(
        "channel_self_set_not_allowed",
        "This channel does not allow devices to self associate",
        channel=name,
        app_id=app_id,
    )


async def _device_call(request: Request, body: object) -> tuple[ServerState, Any] | Response:
    state: ServerState = request.app.state.server
    try:
        info = parse_channel_self_request(body)
    except BadRequest as exc:
        if request.method == "DELETE" and exc.code == "invalid_json_body":
            exc = BadRequest("invalid_query_parameters", exc.message)
        return bad_request(exc)
    if state.catalog.app(info.app_id) is None:
        return JSONResponse(ON_PREM, 429)
    return state, info


async def post(request: Request) -> Response:
    """POST /channel_self: setChannel."""
    call = await _device_call(request, await read_json(request))
    if isinstance(call, Response):
        return call
    state, info = call
    if not info.channel:
        return _error("missing_channel", "Cannot find channel in body")
    local = semver.at_least(info.plugin_version, LOCAL_CHANNEL_MIN)
    current = None if local else _override(state, info.app_id, info.device_id)
    if current is not None and not current.allow_device_self_set:
        return _error(
            "cannot_override", "Cannot change device override current channel don't allow it"
        )
    wanted = state.catalog.channel(info.app_id, info.channel)
    refused = _self_set_refusal(wanted, info.channel, info.app_id)
    if refused is not None or wanted is None:
        return refused or _error("channel_not_found", "Cannot find channel")
    state.recorder.count(info.app_id, info.version_name, "setChannel")
    if local:
        return JSONResponse({"status": "ok", "allowSet": True})
    main = state.catalog.first_public(info.app_id, info.platform)
    _set_override(state, info.app_id, info.device_id, None if main == wanted else wanted)
    return JSONResponse(OK)


async def put(request: Request) -> Response:
    """PUT /channel_self: getChannel (a read)."""
    call = await _device_call(request, await read_json(request))
    if isinstance(call, Response):
        return call
    state, info = call
    state.recorder.count(info.app_id, info.version_name, "getChannel")
    if semver.at_least(info.plugin_version, LOCAL_CHANNEL_MIN):
        if info.channel:
            return JSONResponse({"channel": info.channel, "status": "override", "allowSet": True})
        return JSONResponse({"channel": info.default_channel or "production", "status": "default"})
    current = _override(state, info.app_id, info.device_id)
    if current is not None:
        return JSONResponse(
            {
                "channel": current.name,
                "status": "override",
                "allowSet": current.allow_device_self_set,
            }
        )
    if info.default_channel:
        found = state.catalog.channel(info.app_id, info.default_channel)
    else:
        found = state.catalog.first_public(info.app_id, info.platform)
    if found is None:
        return _error("channel_not_found", "Cannot find channel")
    return JSONResponse({"channel": found.name, "status": "default"})


async def delete(request: Request) -> Response:
    """DELETE /channel_self: unsetChannel of plugins before 7.34.0 (query-string fields)."""
    call = await _device_call(request, query_to_body(dict(request.query_params)))
    if isinstance(call, Response):
        return call
    state, info = call
    if semver.at_least(info.plugin_version, LOCAL_CHANNEL_MIN):
        return JSONResponse(OK)
    current = _override(state, info.app_id, info.device_id)
    if current is None or not current.allow_device_self_set:
        return _error(
            "cannot_override", "Cannot change device override current channel don't allow it"
        )
    _set_override(state, info.app_id, info.device_id, None)
    return JSONResponse(OK)


def _compatible(channel: Channel, platform: str, is_emulator: bool, is_prod: bool) -> bool:
    return (
        channel.allows_platform(platform)
        and (channel.allow_emulator if is_emulator else channel.allow_device)
        and (channel.allow_prod if is_prod else channel.allow_dev)
        and (channel.public or channel.allow_device_self_set)
    )


async def list_channels(request: Request) -> Response:
    """GET /channel_self: the channels this device may use (listChannels)."""
    state: ServerState = request.app.state.server
    query = request.query_params
    app_id, platform = query.get("app_id", ""), query.get("platform", "")
    if not app_id:
        return bad_request(BadRequest("missing_app_id", "Cannot find app_id"))
    if not APP_ID.match(app_id) or platform not in PLATFORMS:
        return bad_request(BadRequest("invalid_query_parameters", "Cannot parse body"))
    if state.catalog.app(app_id) is None:
        return JSONResponse(ON_PREM, 429)
    is_emulator = query.get("is_emulator", "false") == "true"
    is_prod = query.get("is_prod", "true") == "true"
    return JSONResponse(
        [
            {
                "id": c.id,
                "name": c.name,
                "public": c.public,
                "allow_self_set": c.allow_device_self_set,
            }
            for c in state.catalog.channels(app_id)
            if _compatible(c, platform, is_emulator, is_prod)
        ]
    )
