"""Admin writes and queries. Each write is one transaction with its audit row, then the
device-side cache is dropped. Arguments arrive validated in type; this module checks them
against the database and raises `ApiError` (404/409/400) before changing anything."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from simulator.server import rollout
from simulator.server.auth import ApiKey
from simulator.server.db import transaction
from simulator.server.model import BUILTIN, Channel
from simulator.server.state import ServerState
from simulator.server.web import ApiError

FAIL_SUFFIX = "_fail"


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
        "channels": [channel_info(c) for c in state.catalog.channels(app_id)],
    }


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
            conn, [f["file_id"] for f in manifest] + [spec["file_id"]] * bool(spec["file_id"])
        )
        cur = conn.execute(
            "INSERT INTO bundles (app_id, name, checksum, session_key, key_id, file_id, "
            "min_update_version, link, comment, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        )
    state.changed()
    return {
        "app_id": app_id,
        "version": version,
        "file_id": spec["file_id"],
        "manifest_files": len(manifest),
    }


def list_bundles(state: ServerState, app_id: str) -> list[dict[str, Any]]:
    require_app(state, app_id)
    rows = state.conn.execute(
        "SELECT name, checksum, session_key, key_id, file_id, created_at, "
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
            "created_at": r["created_at"],
        }
        for r in rows
    ]


def channel_info(channel: Channel) -> dict[str, Any]:
    info = {k: getattr(channel, k) for k in Channel.__dataclass_fields__}
    info["version"] = channel.version or BUILTIN
    info["rollout_percent"] = channel.rollout_bps / 100
    return info


def _update_channel(
    state: ServerState, key: ApiKey, channel: Channel, action: str, **values: object
) -> dict[str, Any]:
    sets = ", ".join(f"{name} = ?" for name in values)
    with transaction(state.conn) as conn:
        conn.execute(f"UPDATE channels SET {sets} WHERE id = ?", (*values.values(), channel.id))
        audit(conn, key, action, f"{channel.app_id}/{channel.name}", **values)
    state.changed()
    return channel_info(require_channel(state, channel.app_id, channel.name))


def set_channel(
    state: ServerState, key: ApiKey, app_id: str, name: str, fields: dict[str, Any]
) -> dict[str, Any]:
    """Create or update a channel; `fields` holds only Channel column names (validated).

    Raises:
        ApiError: 404 `app_not_found` / `bundle_not_found`.
    """
    require_app(state, app_id)
    if "version" in fields:
        require_bundle(state, app_id, fields["version"])
        fields["version"] = None if fields["version"] == BUILTIN else fields["version"]
    channel = state.catalog.channel(app_id, name)
    if channel is None:
        with transaction(state.conn) as conn:
            conn.execute("INSERT INTO channels (app_id, name) VALUES (?, ?)", (app_id, name))
        state.changed()
        channel = require_channel(state, app_id, name)
    if not fields:
        return channel_info(channel)
    return _update_channel(state, key, channel, "channel.set", **fields)


def set_rollout(
    state: ServerState,
    key: ApiKey,
    app_id: str,
    name: str,
    version: str,
    bps: int,
    auto_pause: dict[str, Any],
) -> dict[str, Any]:
    """Point `bps` basis points of the channel's devices at `version`.

    Raises:
        ApiError: 404 app/channel/bundle not found; 400 `invalid_rollout` for builtin.
    """
    channel = require_channel(state, app_id, name)
    if version == BUILTIN:
        raise ApiError(400, "invalid_rollout", "Roll out a bundle; use rollback for builtin")
    require_bundle(state, app_id, version)
    return _update_channel(
        state,
        key,
        channel,
        "rollout.set",
        rollout_version=version,
        rollout_bps=bps,
        rollout_paused=False,
        **auto_pause,
    )


def rollout_action(
    state: ServerState, key: ApiKey, app_id: str, name: str, action: str
) -> dict[str, Any]:
    """pause / resume / complete the channel's rollout.

    Raises:
        ApiError: 404 not found; 409 `no_rollout` when the channel has none.
    """
    channel = require_channel(state, app_id, name)
    if channel.rollout_version is None:
        raise ApiError(409, "no_rollout", f"Channel {name} has no rollout")
    if action == "complete":
        return _update_channel(
            state,
            key,
            channel,
            "rollout.complete",
            version=channel.rollout_version,
            rollout_version=None,
            rollout_bps=0,
            rollout_paused=False,
        )
    return _update_channel(
        state, key, channel, f"rollout.{action}", rollout_paused=action == "pause"
    )


def rollback(
    state: ServerState, key: ApiKey, app_id: str, name: str, version: str
) -> dict[str, Any]:
    """Point the whole channel at an earlier bundle (or builtin) and end any rollout.

    Raises:
        ApiError: 404 app/channel/bundle not found.
    """
    channel = require_channel(state, app_id, name)
    require_bundle(state, app_id, version)
    return _update_channel(
        state,
        key,
        channel,
        "channel.rollback",
        version=None if version == BUILTIN else version,
        rollout_version=None,
        rollout_bps=0,
        rollout_paused=False,
    )


def set_override(
    state: ServerState, key: ApiKey, app_id: str, device_id: str, channel_name: str | None
) -> dict[str, Any]:
    """Pin a device to a channel (or remove its pin with None).

    Raises:
        ApiError: 404 app/channel not found.
    """
    channel = require_channel(state, app_id, channel_name) if channel_name else None
    if channel is None:
        require_app(state, app_id)
    with transaction(state.conn) as conn:
        conn.execute(
            "DELETE FROM channel_devices WHERE app_id = ? AND device_id = ?", (app_id, device_id)
        )
        if channel is not None:
            conn.execute(
                "INSERT INTO channel_devices (app_id, device_id, channel_id) VALUES (?, ?, ?)",
                (app_id, device_id, channel.id),
            )
        audit(conn, key, "device.override", f"{app_id}/{device_id}", channel=channel_name)
    state.changed()
    return {"app_id": app_id, "device_id": device_id, "channel": channel_name}


def auto_pause(state: ServerState, app_id: str) -> None:
    """Pause every rollout of the app whose failure ratio passed its channel's threshold."""
    for channel in state.catalog.channels(app_id):
        if channel.auto_pause_fail_ratio is None or channel.rollout_version is None:
            continue
        totals = version_totals(state.conn, app_id, channel.rollout_version)
        if rollout.should_auto_pause(channel, totals["installs"], totals["fails"]):
            with transaction(state.conn) as conn:
                conn.execute("UPDATE channels SET rollout_paused = 1 WHERE id = ?", (channel.id,))
                audit(
                    conn,
                    None,
                    "rollout.auto_pause",
                    f"{app_id}/{channel.name}",
                    installs=totals["installs"],
                    fails=totals["fails"],
                )
            state.changed()


def version_totals(conn: sqlite3.Connection, app_id: str, version: str) -> dict[str, int]:
    """Counters of one version: gets, downloads, installs, uninstalls, fails, rollbacks."""
    rows = conn.execute(
        "SELECT action, SUM(count) FROM version_stats WHERE app_id = ? AND version_name = ? "
        "GROUP BY action",
        (app_id, version),
    ).fetchall()
    return summarize({r[0]: r[1] for r in rows})


def summarize(actions: Mapping[str, int]) -> dict[str, int]:
    """The admin counters from raw action counts."""
    return {
        "gets": actions.get("get", 0),
        "downloads": actions.get("download_complete", 0),
        "installs": actions.get("set", 0),
        "uninstalls": actions.get("uninstall", 0),
        "fails": sum(n for a, n in actions.items() if a.endswith(FAIL_SUFFIX)),
        "rollbacks": actions.get("update_fail", 0),
    }
