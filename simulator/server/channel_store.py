"""Admin writes on channels: policy, staged rollouts, rollback, device overrides, and the
rollout auto-pause the stats endpoint triggers. One transaction with its audit row each."""

from __future__ import annotations

from typing import Any

from simulator.server import rollout
from simulator.server.admin_store import audit, require_app, require_bundle, require_channel
from simulator.server.auth import ApiKey
from simulator.server.db import transaction
from simulator.server.model import BUILTIN, Channel
from simulator.server.state import ServerState
from simulator.server.stats_query import version_totals
from simulator.server.web import ApiError


def _update_channel(
    state: ServerState, key: ApiKey, channel: Channel, action: str, **values: object
) -> dict[str, Any]:
    sets = ", ".join(f"{name} = ?" for name in values)
    with transaction(state.conn) as conn:
        conn.execute(f"UPDATE channels SET {sets} WHERE id = ?", (*values.values(), channel.id))
        audit(conn, key, action, f"{channel.app_id}/{channel.name}", **values)
    state.changed()
    return require_channel(state, channel.app_id, channel.name).to_json()


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
        return channel.to_json()
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


def list_overrides(state: ServerState, app_id: str) -> list[dict[str, str]]:
    """The app's pinned devices and their channels. Raises: ApiError 404 `app_not_found`."""
    require_app(state, app_id)
    rows = state.conn.execute(
        "SELECT d.device_id, c.name FROM channel_devices d JOIN channels c ON c.id = d.channel_id "
        "WHERE d.app_id = ? ORDER BY d.device_id",
        (app_id,),
    ).fetchall()
    return [{"device_id": r[0], "channel": r[1]} for r in rows]


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
    """Pause every rollout of the app whose failure ratio passed its channel's threshold.

    Only when the app has a running rollout with a threshold are the buffered stats written
    first (the ratio is read from the database, so it counts every event received so far);
    otherwise they stay write-behind."""
    watched = [
        (channel, channel.rollout_version)
        for channel in state.catalog.channels(app_id)
        if channel.auto_pause_fail_ratio is not None
        and channel.rollout_version is not None
        and not channel.rollout_paused
    ]
    if not watched:
        return
    state.recorder.flush()
    for channel, version in watched:
        totals = version_totals(state.conn, app_id, version)
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
