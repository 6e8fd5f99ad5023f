"""The admin API under /api/: apps, files, bundles, channels, rollouts, rollback, device
overrides, stats, API keys and the audit log. Every route needs `Authorization: Bearer <key>`
with a role of at least the one listed in `ROUTES`; answers are JSON, errors
`{"error", "message"}` with 400/401/403/404/409/413."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.server import admin_store as store
from simulator.server import channel_store as channels
from simulator.server import rollout, semver
from simulator.server.auth import ROLES, ApiKey, authenticate, create_key
from simulator.server.db import transaction
from simulator.server.dialects import SERVER_DIALECTS
from simulator.server.model import BUILTIN, DISABLE_AUTO_UPDATE
from simulator.server.state import ServerState
from simulator.server.stats_query import app_stats
from simulator.server.validation import APP_ID, DEVICE_ID
from simulator.server.web import ApiError, JSONResponse, read_json, refuse_declared_excess

ADMIN_BODY_LIMIT = 4 << 20
Handler = Callable[[Request, ServerState, ApiKey], Awaitable[Any]]
_MISSING = object()
CHANNEL_BOOLS = [
    "public",
    "allow_device_self_set",
    "ios",
    "android",
    "electron",
    "disable_auto_update_under_native",
    "allow_prod",
    "allow_dev",
    "allow_device",
    "allow_emulator",
]


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


async def body_of(request: Request) -> dict[str, Any]:
    """Raises: ApiError 400/413."""
    body = await read_json(request, ADMIN_BODY_LIMIT)
    if not isinstance(body, dict):
        raise bad("Body must be a JSON object")
    return body


def text(
    body: dict[str, Any],
    name: str,
    default: object = _MISSING,
    max_len: int = 256,
    allow_empty: bool = False,
) -> Any:
    """A string field (or `default` when absent). Raises: ApiError 400."""
    value = body.get(name, default)
    if value is _MISSING:
        raise bad(f"Missing field {name}")
    if value is default:
        return value
    if not isinstance(value, str) or len(value) > max_len or not (value or allow_empty):
        raise bad(f"Field {name} must be a non-empty string of at most {max_len} characters")
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    """Raises: ApiError 400."""
    value = body[name]
    if not isinstance(value, bool):
        raise bad(f"Field {name} must be true or false")
    return value


def number(body: dict[str, Any], name: str, low: float, high: float) -> float:
    """Raises: ApiError 400."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"Field {name} must be a number within {low}..{high}")
    if not math.isfinite(value) or not low <= value <= high:
        raise bad(f"Field {name} must be a number within {low}..{high}")
    return float(value)


def path_app(request: Request) -> str:
    app_id: str = request.path_params["app_id"]
    if not APP_ID.match(app_id):
        raise ApiError(404, "app_not_found", f"No app {app_id}")
    return app_id


def version_field(body: dict[str, Any], allow_builtin: bool) -> str:
    version = text(body, "version", max_len=64)
    if not (allow_builtin and version == BUILTIN) and semver.parse(version) is None:
        raise bad("Field version must be semver (X.Y.Z)" + (" or builtin" if allow_builtin else ""))
    return str(version)


async def apps_list(request: Request, state: ServerState, key: ApiKey) -> Any:
    return {"apps": store.list_apps(state)}


async def app_create(request: Request, state: ServerState, key: ApiKey) -> Any:
    body = await body_of(request)
    app_id = text(body, "app_id", max_len=128)
    if not APP_ID.match(app_id):
        raise bad("app_id must be a reverse-domain id such as com.example.app")
    names = ("expose_metadata", "allow_device_custom_id")
    options: dict[str, bool] = {n: flag(body, n) for n in names if n in body}
    return store.create_app(state, key, app_id, options)


async def app_show(request: Request, state: ServerState, key: ApiKey) -> Any:
    return store.app_info(state, path_app(request))


async def signing_key_set(request: Request, state: ServerState, key: ApiKey) -> Any:
    """The app's private key for a dialect whose reference server signs its answers (Expo:
    directives, and manifests re-dated at answer time); never shown again."""
    dialect = _path_name(request, "dialect", "dialect names")
    check = SERVER_DIALECTS.get(dialect)
    if check is None or check.signing_key is None:
        signing = ", ".join(n for n, d in SERVER_DIALECTS.items() if d.signing_key is not None)
        raise bad(f"only these dialects take a server signing key: {signing}")
    pem = text(await body_of(request), "private_pem", max_len=16384)
    try:
        check.signing_key(pem.encode())
    except ValueError as exc:
        raise bad(f"private_pem: {exc}") from None
    return store.set_signing_key(state, key, path_app(request), dialect, pem)


async def file_upload(request: Request, state: ServerState, key: ApiKey) -> Any:
    app_id = path_app(request)
    store.require_app(state, app_id)
    refuse_declared_excess(request, state.config.max_upload_bytes)
    file_id, size = await state.blobs.save(request.stream(), state.config.max_upload_bytes)
    return store.record_blob(state, key, app_id, file_id, size)


def _manifest(body: dict[str, Any]) -> list[dict[str, str]]:
    entries = body.get("manifest") or []
    if not isinstance(entries, list) or len(entries) > 20_000:
        raise bad("manifest must be a list of {file_name, file_hash, file_id}")
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise bad("manifest entries must be objects")
        out.append({k: text(entry, k, max_len=1024) for k in ("file_name", "file_hash", "file_id")})
    if len({e["file_name"] for e in out}) != len(out):
        raise bad("manifest file names must be unique")
    return out


def _release(body: dict[str, Any]) -> str | None:
    """The signed release document (strict mode), kept as the JSON the devices get."""
    release = body.get("release")
    if release is None:
        return None
    if not isinstance(release, dict) or set(release) != {"signed", "signature"}:
        raise bad("release must be an object with signed and signature")
    return json.dumps({k: text(release, k, max_len=1 << 20) for k in ("signed", "signature")})


def _dialects(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Other dialects' artefacts, checked by each dialect: ({name: data}, blob ids named)."""
    given = body.get("dialects") or {}
    if not isinstance(given, dict):
        raise bad("dialects must be an object {dialect: artefacts}")
    kept, files = {}, []
    for name, data in given.items():
        dialect = SERVER_DIALECTS.get(name)
        if dialect is None or dialect.artefacts is None:
            raise bad(f"dialects: {name!r} takes no artefacts here")
        try:
            kept[name], named = dialect.artefacts(data)
        except ValueError as exc:
            raise bad(f"dialects.{name}: {exc}") from None
        files += named
    return kept, files


async def bundle_create(request: Request, state: ServerState, key: ApiKey) -> Any:
    body = await body_of(request)
    dialects, dialect_files = _dialects(body)
    spec = {
        "version": version_field(body, allow_builtin=False),
        "file_id": text(body, "file_id", None, 64),
        "manifest": _manifest(body),
        "checksum": text(body, "checksum", None, 1024, allow_empty=True),
        "session_key": text(body, "session_key", None, 2048, allow_empty=True) or "",
        "key_id": text(body, "key_id", None, 20),
        "min_update_version": text(body, "min_update_version", None, 64),
        "link": text(body, "link", None, 2048),
        "comment": text(body, "comment", None, 2048),
        "release": _release(body),
        "dialects": dialects,
        "dialect_files": dialect_files,
    }
    if spec["file_id"] is None and not spec["manifest"]:
        raise bad("A bundle needs file_id (the zip) and/or a manifest")
    if spec["min_update_version"] is not None and semver.parse(spec["min_update_version"]) is None:
        raise bad("min_update_version must be semver")
    return store.create_bundle(state, key, path_app(request), spec)


def _path_name(request: Request, param: str, what: str) -> str:
    name: str = request.path_params[param]
    if not name or len(name) > 64:
        raise bad(f"{what} are 1..64 characters")
    return name


def _version(request: Request) -> str:
    return _path_name(request, "version", "versions")


async def release_show(request: Request, state: ServerState, key: ApiKey) -> Any:
    return store.release_of(state, path_app(request), _version(request))


async def release_replace(request: Request, state: ServerState, key: ApiKey) -> Any:
    release = _release(await body_of(request))
    if release is None:
        raise bad("release is required: the re-signed document")
    return store.replace_release(state, key, path_app(request), _version(request), release)


async def bundles_list(request: Request, state: ServerState, key: ApiKey) -> Any:
    return {"bundles": store.list_bundles(state, path_app(request))}


def _channel_name(request: Request) -> str:
    return _path_name(request, "channel", "channel names")


async def channel_set(request: Request, state: ServerState, key: ApiKey) -> Any:
    body = await body_of(request)
    unknown = set(body) - {*CHANNEL_BOOLS, "version", "disable_auto_update"}
    if unknown:
        raise bad(f"Unknown channel fields: {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {n: flag(body, n) for n in CHANNEL_BOOLS if n in body}
    if "version" in body:
        fields["version"] = version_field(body, allow_builtin=True)
    if "disable_auto_update" in body:
        if body["disable_auto_update"] not in DISABLE_AUTO_UPDATE:
            raise bad(f"disable_auto_update must be one of {', '.join(DISABLE_AUTO_UPDATE)}")
        fields["disable_auto_update"] = body["disable_auto_update"]
    return channels.set_channel(state, key, path_app(request), _channel_name(request), fields)


async def rollout_set(request: Request, state: ServerState, key: ApiKey) -> Any:
    body = await body_of(request)
    bps = rollout.percent_to_bps(number(body, "percent", 0, 100))
    auto: dict[str, Any] = {}
    if body.get("auto_pause_fail_ratio") is not None:
        auto["auto_pause_fail_ratio"] = number(body, "auto_pause_fail_ratio", 0, 1)
    if "auto_pause_min_samples" in body:
        auto["auto_pause_min_samples"] = int(number(body, "auto_pause_min_samples", 1, 1e9))
    version = version_field(body, allow_builtin=True)
    app_id, name = path_app(request), _channel_name(request)
    return channels.set_rollout(state, key, app_id, name, version, bps, auto)


async def rollout_do(request: Request, state: ServerState, key: ApiKey) -> Any:
    action = request.path_params["action"]
    if action not in ("pause", "resume", "complete"):
        raise ApiError(404, "not_found", "Rollout actions are pause, resume and complete")
    return channels.rollout_action(state, key, path_app(request), _channel_name(request), action)


async def rollback(request: Request, state: ServerState, key: ApiKey) -> Any:
    version = version_field(await body_of(request), allow_builtin=True)
    return channels.rollback(state, key, path_app(request), _channel_name(request), version)


def _device(request: Request) -> str:
    device_id = request.path_params["device_id"].lower()
    if not DEVICE_ID.match(device_id):
        raise bad("device ids are UUIDs")
    return str(device_id)


async def override_set(request: Request, state: ServerState, key: ApiKey) -> Any:
    channel = text(await body_of(request), "channel", max_len=64)
    return channels.set_override(state, key, path_app(request), _device(request), channel)


async def overrides_list(request: Request, state: ServerState, key: ApiKey) -> Any:
    return {"overrides": channels.list_overrides(state, path_app(request))}


async def override_delete(request: Request, state: ServerState, key: ApiKey) -> Any:
    return channels.set_override(state, key, path_app(request), _device(request), None)


async def stats(request: Request, state: ServerState, key: ApiKey) -> Any:
    return app_stats(state, path_app(request), request.query_params.get("version"))


async def keys_list(request: Request, state: ServerState, key: ApiKey) -> Any:
    rows = state.conn.execute(
        "SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY id"
    ).fetchall()
    return {"keys": [dict(r) for r in rows]}


async def key_create(request: Request, state: ServerState, key: ApiKey) -> Any:
    body = await body_of(request)
    name, role = text(body, "name", max_len=64), text(body, "role", max_len=16)
    if role not in ROLES:
        raise bad(f"role must be one of {', '.join(ROLES)}")
    with transaction(state.conn) as conn:
        record, secret = create_key(conn, name, role)
        store.audit(conn, key, "key.create", f"key/{record.id}", name=name, role=role)
    return {"id": record.id, "name": name, "role": role, "key": secret}


async def key_revoke(request: Request, state: ServerState, key: ApiKey) -> Any:
    key_id = request.path_params["key_id"]
    with transaction(state.conn) as conn:
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (time.time(), key_id),
        )
        if cur.rowcount == 0:
            raise ApiError(404, "key_not_found", f"No active key {key_id}")
        store.audit(conn, key, "key.revoke", f"key/{key_id}")
    return {"id": key_id, "revoked": True}


async def audit_list(request: Request, state: ServerState, key: ApiKey) -> Any:
    rows = state.conn.execute(
        "SELECT id, at, api_key_id, action, target, detail FROM audit ORDER BY id DESC LIMIT 1000"
    ).fetchall()
    return {"audit": [dict(r) for r in rows]}


def _guarded(role: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state: ServerState = request.app.state.server
        key = authenticate(state.conn, request, role)
        return JSONResponse(await handler(request, state, key))

    return endpoint


A = "/api/apps/{app_id}"
C = A + "/channels/{channel}"
# (method, path, role, handler): the whole admin surface, also used by the auth tests.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("GET", "/api/apps", "read", apps_list),
    ("POST", "/api/apps", "write", app_create),
    ("GET", A, "read", app_show),
    ("PUT", A + "/files", "upload", file_upload),
    ("PUT", A + "/signing-keys/{dialect}", "all", signing_key_set),
    ("POST", A + "/bundles", "upload", bundle_create),
    ("GET", A + "/bundles", "read", bundles_list),
    ("GET", A + "/bundles/{version}/release", "read", release_show),
    ("PUT", A + "/bundles/{version}/release", "upload", release_replace),
    ("PUT", C, "write", channel_set),
    ("POST", C + "/rollout", "write", rollout_set),
    ("POST", C + "/rollout/{action}", "write", rollout_do),
    ("POST", C + "/rollback", "write", rollback),
    ("GET", A + "/devices", "read", overrides_list),
    ("PUT", A + "/devices/{device_id}", "write", override_set),
    ("DELETE", A + "/devices/{device_id}", "write", override_delete),
    ("GET", A + "/stats", "read", stats),
    ("GET", "/api/keys", "all", keys_list),
    ("POST", "/api/keys", "all", key_create),
    ("DELETE", "/api/keys/{key_id:int}", "all", key_revoke),
    ("GET", "/api/audit", "all", audit_list),
)


def routes() -> list[Route]:
    return [Route(path, _guarded(role, h), methods=[m]) for m, path, role, h in ROUTES]
