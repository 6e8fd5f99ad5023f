"""What the dialect routes share: asking the one decision with a dialect's device description."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from simulator.server import device_api
from simulator.server.model import BUILTIN, Answer, Bundle
from simulator.server.state import ServerState
from simulator.server.validation import BadRequest, parse_update_request

DECIDES_AS_PLUGIN = "8.0.0"
"""The Capgo plugin generation the decision treats every other dialect's device as (current:
manifests and revert-to-builtin allowed)."""


def decide_for(
    request: Request,
    *,
    app_id: str,
    device_id: str,
    platform: str,
    running: str | None,
    native_version: str,
    os_version: str = "",
    channel: str = "",
    custom_id: str | None = None,
) -> Response | tuple[Answer, Bundle | None, str]:
    """The decision for a device described in a dialect's terms (`running`: the bundle it
    runs, None on the one shipped in the binary): the refusal to send as it is, else (the
    decision, its bundle, this server's base URL).

    Raises nothing: a description Capgo's validation refuses is answered 400.
    """
    state: ServerState = request.app.state.server
    body: dict[str, Any] = {
        "app_id": app_id,
        "device_id": device_id,
        "platform": platform,
        "version_name": running or BUILTIN,
        "version_build": native_version,
        "version_os": os_version,
        "plugin_version": DECIDES_AS_PLUGIN,
        "defaultChannel": channel,
    }
    if custom_id:
        body["custom_id"] = custom_id
    try:
        info = parse_update_request(body)
    except BadRequest as exc:
        return device_api.bad_request(exc)
    decision = device_api.check(request, state, info)
    if isinstance(decision, Response):
        return decision
    return (*decision, device_api.base_url(request, state))


def offered(answer: Answer, bundle: Bundle | None, dialect: str) -> dict[str, Any] | None:
    """The dialect's artefacts of the bundle the decision offers, None when it offers none
    (or the bundle was not published for this dialect)."""
    if bundle is None or "url" not in answer.body:
        return None
    data = bundle.dialects.get(dialect)
    return dict(data) if data is not None else None
