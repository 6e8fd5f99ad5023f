"""The Expo Updates (protocol v1) device endpoint: `GET /expo`.

The app is named by the `otasim-app-id` request header (an Expo app's configured
`requestHeaders`; a real Expo server names the project in its URL). The other headers are read
as a Capgo device description (`expo-platform`, `expo-runtime-version` as the native build,
`expo-channel-name` as the default channel, `eas-client-id` as the device id, the bundle whose
manifest id is `expo-current-update-id` as the running version) and decided by
`device_api.check`. An update whose manifest's `runtimeVersion` is not the device's
`expo-runtime-version` is not offered (`noUpdateAvailable`). An offer is answered with the
bundle's stored manifest, byte for byte, and its `expo-signature` (signed by the publisher); no
update with a `noUpdateAvailable` directive;
a channel at builtin with a `rollBackToEmbedded` directive whose `commitTime` is the answer's
time. Without a key the directive is unsigned (a device with code signing refuses it). When
the app's private key is registered (`PUT /api/apps/{app}/signing-keys/expo`, as Expo custom
servers hold it), the server signs at answer time: the directive, and each manifest re-dated
(`createdAt` = the answer's time, same id and assets), so that a channel moved back to an
older update or to builtin outranks what the device took before. The trade-off: the order
devices enforce is then the server's decision order, not the publisher's (a captured answer
replays only until the device takes a later one), and the server's key can sign anything the
app will install. `multipart/mixed` is
answered when the device accepts it, else a bare JSON manifest with the signature in the
response headers (204 for a directive); 406 when it accepts neither.

The artefacts `otasim publish --dialect expo` stores: `{update_id, manifest, signature}`.
"""

from __future__ import annotations

import datetime
import json
import secrets
import uuid
from collections.abc import Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.expo_release import sign_manifest
from simulator.release import ReleaseError, load_private_key
from simulator.server.device_api import bad_request, check
from simulator.server.dialects.decision import offered, to_builtin
from simulator.server.model import BUILTIN
from simulator.server.state import ServerState
from simulator.server.validation import BadRequest, parse_update_request
from simulator.server.web import JSONResponse

APP_HEADER: Final = "otasim-app-id"
PROTOCOL_HEADERS: Final = {
    "expo-protocol-version": "1",
    "expo-sfv-version": "0",
    "cache-control": "private, max-age=0",
}
PLUGIN_VERSION: Final = "8.0.0"
"""The Capgo plugin generation the decision treats an Expo device as."""
MAX_MANIFEST: Final = 1 << 20


def routes() -> list[Route]:
    return [Route("/expo", manifest, methods=["GET"])]


def artefacts(data: Any) -> tuple[dict[str, Any], list[str]]:
    """Check what the Expo publish step stores: the manifest text (kept byte for byte), the id
    it carries, and its signature header (None: unsigned).

    Raises:
        ValueError: a malformed record.
    """
    if not isinstance(data, dict) or set(data) - {"manifest", "signature"}:
        raise ValueError("expected {manifest, signature}")
    text, signature = data.get("manifest"), data.get("signature")
    if not isinstance(text, str) or len(text) > MAX_MANIFEST:
        raise ValueError("manifest must be the manifest's JSON text")
    if signature is not None and (not isinstance(signature, str) or len(signature) > 4096):
        raise ValueError("signature must be the expo-signature header value")
    try:
        update_id = str(uuid.UUID(str(json.loads(text)["id"])))
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ValueError("manifest must be a JSON object whose id is a UUID") from None
    return {"update_id": update_id, "manifest": text, "signature": signature}, []


def signing_key(private_pem: bytes) -> object:
    """Check a key the server may sign answers with.

    Raises:
        ValueError: not an RSA-2048 private key PEM.
    """
    try:
        return load_private_key(private_pem)
    except ReleaseError as exc:
        raise ValueError(str(exc)) from None


def _device(request: Request, state: ServerState) -> dict[str, object]:
    headers = request.headers
    app_id = headers.get(APP_HEADER, "")
    current = headers.get("expo-current-update-id", "").lower()
    running = state.catalog.bundle_of_update(app_id, current) if current else None
    return {
        "app_id": app_id,
        "device_id": headers.get("eas-client-id", ""),
        "platform": headers.get("expo-platform", ""),
        "version_build": headers.get("expo-runtime-version", ""),
        "version_name": running or BUILTIN,
        "plugin_version": PLUGIN_VERSION,
        "defaultChannel": headers.get("expo-channel-name", ""),
    }


async def manifest(request: Request) -> Response:
    """GET /expo: the manifest or directive for this device (module docstring)."""
    state: ServerState = request.app.state.server
    accept = request.headers.get("accept", "*/*").lower()
    multipart = "multipart/mixed" in accept or "*/*" in accept
    if not multipart and "json" not in accept:
        return JSONResponse({"error": "not_acceptable"}, 406, headers=PROTOCOL_HEADERS)
    if request.headers.get("expo-protocol-version", "1") != "1":
        return JSONResponse({"error": "unsupported_protocol_version"}, 400)
    try:
        info = parse_update_request(_device(request, state))
    except BadRequest as exc:
        return bad_request(exc)
    decision = check(request, state, info)
    if isinstance(decision, Response):
        return decision
    answer, bundle = decision
    key = state.catalog.signing_key(info.app_id, "expo")
    moment = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    now = moment.replace("+00:00", "Z")
    stored = offered(answer, bundle, "expo")
    runtime = request.headers.get("expo-runtime-version", "")
    if stored is not None and _runtime(stored) != runtime:
        stored = None  # made for another runtime: as Expo servers, offer nothing
    if stored is not None:
        return _manifest_answer(_signed_manifest(stored, key, now), multipart)
    if to_builtin(answer):
        directive = {"type": "rollBackToEmbedded", "parameters": {"commitTime": now}}
        return _directive_answer(directive, key, multipart)
    return _directive_answer({"type": "noUpdateAvailable"}, None, multipart)


def _runtime(stored: Mapping[str, Any]) -> object:
    return json.loads(stored["manifest"]).get("runtimeVersion")


def _signed_manifest(
    stored: Mapping[str, Any], key: bytes | None, now: str
) -> tuple[bytes, str | None]:
    """The manifest bytes and signature to serve: as published, or with a server key
    re-dated to `now` and signed (module docstring)."""
    if key is None:
        return str(stored["manifest"]).encode(), stored.get("signature")
    manifest = json.loads(stored["manifest"])
    manifest["createdAt"] = now
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return body, sign_manifest(body, key)


def _manifest_answer(signed: tuple[bytes, str | None], multipart: bool) -> Response:
    body, value = signed
    signature = {"expo-signature": value} if value else {}
    if not multipart:
        headers = PROTOCOL_HEADERS | signature
        return Response(body, 200, headers=headers, media_type="application/json")
    parts = [("manifest", body, signature), ("extensions", b'{"assetRequestHeaders":{}}', {})]
    return _multipart(parts)


def _directive_answer(directive: dict[str, object], key: bytes | None, multipart: bool) -> Response:
    body = json.dumps(directive, separators=(",", ":")).encode()
    if not multipart:  # a protocol v1 directive needs multipart: say "nothing" instead
        return Response(status_code=204, headers=PROTOCOL_HEADERS)
    signature = {"expo-signature": sign_manifest(body, key)} if key is not None else {}
    return _multipart([("directive", body, signature)])


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
