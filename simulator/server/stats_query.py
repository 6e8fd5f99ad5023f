"""Admin stats: per-version counters, devices per version now, and net installs over time."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from simulator.server.admin_store import require_app
from simulator.server.state import ServerState


def app_stats(state: ServerState, app_id: str, version: str | None = None) -> dict[str, Any]:
    """Counters per version (gets, downloads, installs, uninstalls, fails, rollbacks, raw
    actions), devices currently on each version, and a per-minute timeline with the
    cumulative `net_installs` (installs - uninstalls since the first stat: the native version
    starts on devices without an install, so its figure can go below zero).

    Raises:
        ApiError: 404 `app_not_found`.
    """
    require_app(state, app_id)
    state.recorder.flush()
    sql = "SELECT version_name, bucket, action, count FROM version_stats WHERE app_id = ?"
    args: tuple[str, ...] = (app_id,)
    if version is not None:
        sql, args = sql + " AND version_name = ?", (app_id, version)
    actions: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    buckets: defaultdict[str, defaultdict[int, defaultdict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int))
    )
    for name, bucket, action, count in state.conn.execute(sql + " ORDER BY bucket", args):
        actions[name][action] += count
        buckets[name][bucket][action] += count
    devices = dict(
        state.conn.execute(
            "SELECT version_name, COUNT(*) FROM devices WHERE app_id = ? GROUP BY version_name",
            (app_id,),
        ).fetchall()
    )
    names = sorted(set(actions) | ({version} if version else set(devices)))
    return {
        "app_id": app_id,
        "versions": {
            name: {
                **summarize(actions[name]),
                "devices": devices.get(name, 0),
                "actions": dict(actions[name]),
                "timeline": _timeline(buckets[name]),
            }
            for name in names
        },
    }


def _timeline(buckets: Mapping[int, Mapping[str, int]]) -> list[dict[str, Any]]:
    net_installs = 0
    points = []
    for bucket in sorted(buckets):
        counters = summarize(buckets[bucket])
        net_installs += counters["installs"] - counters["uninstalls"]
        points.append({"at": bucket * 60, **counters, "net_installs": net_installs})
    return points


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
        "installs": actions.get("install", 0),
        "uninstalls": actions.get("uninstall", 0),
        "fails": sum(n for a, n in actions.items() if a.endswith("_fail")),
        "rollbacks": actions.get("update_fail", 0),
    }
