"""The Expo Updates (protocol v1) device endpoint: `GET /expo/{app_id}`.

The same apps, channels, rollouts and rollbacks as the Capgo endpoints: the request's headers
are read as a Capgo info object (`expo-platform`, `expo-runtime-version` as the native build,
`expo-channel-name` as the default channel, `eas-client-id` as the device id, the bundle whose
manifest id is `expo-current-update-id` as the running version) and decided by the same
`decide()`. An offer is answered with the bundle's stored manifest, byte for byte, and its
`expo-signature` (signed by the publisher: this server holds no key); no update with a
`noUpdateAvailable` directive, a channel at builtin with a `rollBackToEmbedded` directive
(unsigned, for the same reason: a device with code signing refuses it). `multipart/mixed` is
answered when the device accepts it, else a bare JSON manifest with the signature in the
response headers; 406 when it accepts neither.
"""

from __future__ import annotations

import datetime
import json
import secrets
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.server import rollout
from simulator.server.decide import decide
from simulator.server.device_api import bad_request, unknown_app
from simulator.server.model import BUILTIN, Answer, Bundle
from simulator.server.state import ServerState
from simulator.server.validation import BadRequest, parse_update_request

PROTOCOL_HEADERS: Final = {
    "expo-protocol-version": "1",
    "expo-sfv-version": "0",
    "cache-control": "private, max-age=0",
}
PLUGIN_VERSION: Final = "8.0.0"
"""The Capgo plugin generation the decision treats an Expo device as (manifests allowed)."""


def routes() -> list[Route]:
    return [Route("/expo/{app_id}", manifest, methods=["GET"])]


def _capgo_body(request: Request, app_id: str, state: ServerState) -> dict[str, object]:
    headers = request.headers
    runtime = headers.get("expo-runtime-version", "")
    current = headers.get("expo-current-update-id")
    running = state.catalog.bundle_name_of_update(app_id, current) if current else None
    return {
        "app_id": app_id,
        "device_id": headers.get("eas-client-id", ""),
        "platform": headers.get("expo-platform", ""),
        "version_build": runtime,
        "version_name": running or BUILTIN,
        "plugin_version": PLUGIN_VERSION,
        "defaultChannel": headers.get("expo-channel-name", ""),
    }


async def manifest(request: Request) -> Response:
    """GET /expo/{app_id}: the manifest or directive for this device (module docstring)."""
    state: ServerState = request.app.state.server
    app_id = request.path_params["app_id"]
    accept = request.headers.get("accept", "*/*").lower()
    multipart = "multipart/mixed" in accept or "*/*" in accept
    if not multipart and "json" not in accept:
        return JSONResponse({"error": "not_acceptable"}, 406, headers=PROTOCOL_HEADERS)
    if request.headers.get("expo-protocol-version", "1") != "1":
        return JSONResponse({"error": "unsupported_protocol_version"}, 400)
    app = state.catalog.app(app_id)
    if app is None:
        return unknown_app(request, state)
    try:
        info = parse_update_request(_capgo_body(request, app_id, state))
    except BadRequest as exc:
        return bad_request(exc)
    channel, overridden = state.catalog.resolve(info)
    bundle: Bundle | None = None
    if channel is not None:
        target = rollout.target_version(channel, info.device_id, info.version_name)
        if target is not None:
            bundle = state.catalog.bundle(app_id, target) or Bundle(app_id, target)
    answer = decide(info, app, channel, overridden, bundle, lambda file_id: file_id)
    state.recorder.device_seen(info, info.version_name, app.allow_device_custom_id)
    offered = answer.body.get("url") is not None and bundle is not None
    if offered and bundle is not None and bundle.expo_manifest is None:
        answer = Answer(200, {}, "missingBundle", bundle.name)  # no Expo manifest
        offered = False
    if answer.stat is not None:
        state.recorder.count(app_id, answer.stat_version or info.version_name, answer.stat)
    if offered and bundle is not None and bundle.expo_manifest is not None:
        return _manifest_answer(bundle, multipart)
    if answer.body.get("error") == "already_on_builtin" and answer.body.get("version") == BUILTIN:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        directive = {"type": "rollBackToEmbedded", "parameters": {"commitTime": now}}
        return _directive_answer(directive, multipart)
    return _directive_answer({"type": "noUpdateAvailable"}, multipart)


def _manifest_answer(bundle: Bundle, multipart: bool) -> Response:
    assert bundle.expo_manifest is not None
    body = bundle.expo_manifest.encode()
    signature = {"expo-signature": bundle.expo_signature} if bundle.expo_signature else {}
    if not multipart:
        headers = PROTOCOL_HEADERS | signature
        return Response(body, 200, headers=headers, media_type="application/json")
    parts = [("manifest", body, signature), ("extensions", b'{"assetRequestHeaders":{}}', {})]
    return _multipart(parts)


def _directive_answer(directive: dict[str, object], multipart: bool) -> Response:
    body = json.dumps(directive, separators=(",", ":")).encode()
    if not multipart:  # a protocol v1 directive needs multipart: say "nothing" instead
        return Response(status_code=204, headers=PROTOCOL_HEADERS)
    return _multipart([("directive", body, {})])


def _multipart(parts: list[tuple[str, bytes, dict[str, str]]]) -> Response:
    boundary = "otasim-" + secrets.token_hex(12)
    chunks = []
    for name, body, extra in parts:
        head = [
            f"--{boundary}",
            "content-type: application/json; charset=utf-8",
            f'content-disposition: inline; name="{name}"',
            *(f"{k}: {v}" for k, v in extra.items()),
        ]
        chunks.append("\r\n".join(head).encode() + b"\r\n\r\n" + body + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return Response(
        b"".join(chunks),
        200,
        headers=PROTOCOL_HEADERS,
        media_type=f"multipart/mixed; boundary={boundary}",
    )
