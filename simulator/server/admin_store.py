"""Admin writes and queries for apps, files and bundles (channels: `channel_store`).

Each write is one transaction with its audit row, then the device-side cache is dropped.
Arguments arrive validated in type; this module checks them against the database and raises
`ApiError` (404/409/400) before changing anything."""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from simulator.server.auth import ApiKey
from simulator.server.db import transaction
from simulator.server.model import BUILTIN, Channel
from simulator.server.state import ServerState
from simulator.server.web import ApiError


def audit(
    conn: sqlite3.Connection, key: ApiKey | None, action: str, target: str, **detail: object
) -> None:
    """Record an admin action (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO audit (at, api_key_id, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        (time.time(), key.id if key else None, action, target, json.dumps(detail, sort_keys=True)),
    )


def require_app(state: ServerState, app_id: str) -> None:
    """Raises: ApiError 404 `app_not_found`."""
    if state.catalog.app(app_id) is None:
        raise ApiError(404, "app_not_found", f"No app {app_id}")


def require_channel(state: ServerState, app_id: str, name: str) -> Channel:
    """Raises: ApiError 404 `app_not_found` / `channel_not_found`."""
    require_app(state, app_id)
    channel = state.catalog.channel(app_id, name)
    if channel is None:
        raise ApiError(404, "channel_not_found", f"No channel {name} in {app_id}")
    return channel


def require_bundle(state: ServerState, app_id: str, version: str) -> None:
    """`builtin` always exists. Raises: ApiError 404 `bundle_not_found`."""
    if version != BUILTIN and state.catalog.bundle(app_id, version) is None:
        raise ApiError(404, "bundle_not_found", f"No bundle {version} in {app_id}")


def create_app(
    state: ServerState, key: ApiKey, app_id: str, options: dict[str, bool]
) -> dict[str, Any]:
    """Raises: ApiError 409 `app_exists`."""
    if state.catalog.app(app_id) is not None:
        raise ApiError(409, "app_exists", f"App {app_id} already exists")
    with transaction(state.conn) as conn:
        conn.execute(
            "INSERT INTO apps (app_id, expose_metadata, allow_device_custom_id, created_at) "
            "VALUES (?, ?, ?, ?)",
            (
                app_id,
                options.get("expose_metadata", False),
                options.get("allow_device_custom_id", True),
                time.time(),
            ),
        )
        audit(conn, key, "app.create", app_id, **options)
    state.changed()
    return app_info(state, app_id)


def app_info(state: ServerState, app_id: str) -> dict[str, Any]:
    """Raises: ApiError 404 `app_not_found`."""
    require_app(state, app_id)
    app = state.catalog.app(app_id)
    assert app is not None
    return {
        "app_id": app_id,
        "expose_metadata": app.expose_metadata,
        "allow_device_custom_id": app.allow_device_custom_id,
        "channels": [c.to_json() for c in state.catalog.channels(app_id)],
    }


def set_signing_key(
    state: ServerState, key: ApiKey, app_id: str, dialect: str, private_pem: str
) -> dict[str, Any]:
    """Register (or replace) the key `dialect`'s answers of this app are signed with.

    Raises: ApiError 404 `app_not_found`."""
    require_app(state, app_id)
    with transaction(state.conn) as conn:
        conn.execute(
            "INSERT INTO signing_keys (app_id, dialect, private_pem) VALUES (?, ?, ?) "
            "ON CONFLICT (app_id, dialect) DO UPDATE SET private_pem = excluded.private_pem",
            (app_id, dialect, private_pem),
        )
        audit(conn, key, "signing_key.set", app_id, dialect=dialect)
    state.changed()
    return {"app_id": app_id, "dialect": dialect, "signs_answers": True}


def list_apps(state: ServerState) -> list[str]:
    return [r[0] for r in state.conn.execute("SELECT app_id FROM apps ORDER BY app_id")]


def record_blob(
    state: ServerState, key: ApiKey, app_id: str, file_id: str, size: int
) -> dict[str, Any]:
    with transaction(state.conn) as conn:
        conn.execute(
            "INSERT OR IGNORE INTO blobs (file_id, size, created_at) VALUES (?, ?, ?)",
            (file_id, size, time.time()),
        )
        audit(conn, key, "file.upload", app_id, file_id=file_id, size=size)
    return {"file_id": file_id, "size": size}


def _require_blobs(conn: sqlite3.Connection, file_ids: Iterable[str]) -> None:
    for file_id in file_ids:
        if conn.execute("SELECT 1 FROM blobs WHERE file_id = ?", (file_id,)).fetchone() is None:
            raise ApiError(400, "unknown_file", f"File {file_id} was not uploaded")


def create_bundle(
    state: ServerState, key: ApiKey, app_id: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Store a bundle's metadata; its files must be uploaded first.

    Raises:
        ApiError: 404 `app_not_found`, 409 `bundle_exists`, 400 `unknown_file`.
    """
    require_app(state, app_id)
    version = spec["version"]
    if state.catalog.bundle(app_id, version) is not None:
        raise ApiError(409, "bundle_exists", f"Bundle {version} already exists in {app_id}")
    manifest = spec["manifest"]
    with transaction(state.conn) as conn:
        _require_blobs(
            conn,
            [f["file_id"] for f in manifest]
            + [spec["file_id"]] * bool(spec["file_id"])
            + spec["dialect_files"],
        )
        cur = conn.execute(
            "INSERT INTO bundles (app_id, name, checksum, session_key, key_id, file_id, "
            "min_update_version, link, comment, created_at, release_doc, dialects) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                app_id,
                version,
                spec["checksum"],
                spec["session_key"],
                spec["key_id"],
                spec["file_id"],
                spec["min_update_version"],
                spec["link"],
                spec["comment"],
                time.time(),
                spec["release"],
                json.dumps(spec["dialects"]) if spec["dialects"] else None,
            ),
        )
        conn.executemany(
            "INSERT INTO manifest_files (bundle_id, file_name, file_hash, file_id) "
            "VALUES (?, ?, ?, ?)",
            [(cur.lastrowid, f["file_name"], f["file_hash"], f["file_id"]) for f in manifest],
        )
        audit(
            conn,
            key,
            "bundle.create",
            f"{app_id}@{version}",
            file_id=spec["file_id"],
            manifest_files=len(manifest),
            encrypted=bool(spec["session_key"]),
            dialects=sorted(spec["dialects"]),
        )
    state.changed()
    return {
        "app_id": app_id,
        "version": version,
        "file_id": spec["file_id"],
        "manifest_files": len(manifest),
    }


def _release_bundle(state: ServerState, app_id: str, version: str) -> dict[str, str]:
    """The stored release document of a bundle. Raises: ApiError 404, 409 `no_release`."""
    require_app(state, app_id)
    bundle = state.catalog.bundle(app_id, version)
    if bundle is None:
        raise ApiError(404, "bundle_not_found", f"No bundle {version} in {app_id}")
    if bundle.release is None:
        raise ApiError(409, "no_release", f"Bundle {version} has no release document (--strict)")
    return bundle.release


def release_of(state: ServerState, app_id: str, version: str) -> dict[str, Any]:
    """Raises: ApiError 404 `app_not_found` / `bundle_not_found`, 409 `no_release`."""
    release = _release_bundle(state, app_id, version)
    return {"app_id": app_id, "version": version, "release": release}


def _signed_body(release: dict[str, str]) -> dict[str, Any]:
    """The signed fields of a release document, read without checking the signature (the
    server holds no app key: devices check it)."""
    try:
        body = json.loads(base64.b64decode(release["signed"], validate=True))
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_request", "release.signed is not base64 JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("expires"), int):
        raise ApiError(400, "bad_request", "release.signed is not a release document")
    return body


def replace_release(
    state: ServerState, key: ApiKey, app_id: str, version: str, release: str
) -> dict[str, Any]:
    """Replace a strict release's document with a re-signed one (a later expiry): every other
    signed field must be the stored document's, so a refresh cannot change what it vouches for.

    Raises:
        ApiError: 404 `app_not_found` / `bundle_not_found`, 409 `no_release` /
            `release_mismatch`, 400 a document that is not one.
    """
    old = _signed_body(_release_bundle(state, app_id, version))
    new = _signed_body(json.loads(release))
    expires = new.pop("expires")
    old.pop("expires")
    if new != old:
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        raise ApiError(
            409,
            "release_mismatch",
            f"A refreshed document may change only expires, not {', '.join(changed)}",
        )
    with transaction(state.conn) as conn:
        conn.execute(
            "UPDATE bundles SET release_doc = ? WHERE app_id = ? AND name = ?",
            (release, app_id, version),
        )
        audit(conn, key, "bundle.release", f"{app_id}@{version}", expires=expires)
    state.changed()
    return {"app_id": app_id, "version": version, "expires": expires}


def list_bundles(state: ServerState, app_id: str) -> list[dict[str, Any]]:
    require_app(state, app_id)
    rows = state.conn.execute(
        "SELECT name, checksum, session_key, key_id, file_id, created_at, dialects, "
        "(SELECT COUNT(*) FROM manifest_files m WHERE m.bundle_id = b.id) AS manifest_files "
        "FROM bundles b WHERE app_id = ? ORDER BY id",
        (app_id,),
    ).fetchall()
    return [
        {
            "version": r["name"],
            "checksum": r["checksum"],
            "encrypted": bool(r["session_key"]),
            "key_id": r["key_id"],
            "file_id": r["file_id"],
            "manifest_files": r["manifest_files"],
            "dialects": sorted(json.loads(r["dialects"])) if r["dialects"] else [],
            "created_at": r["created_at"],
        }
        for r in rows
    ]
