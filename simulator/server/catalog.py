"""The read model the device endpoints use: apps, channels and bundles cached in memory,
device overrides looked up per request (skipped for apps that have none).

Every admin change calls `invalidate()`; the server runs one worker, so the cache is never
stale across processes.
"""

from __future__ import annotations

import json
import sqlite3

from simulator.server.model import App, Bundle, Channel, ManifestFile
from simulator.server.validation import DeviceInfo

_CHANNEL_FIELDS = tuple(Channel.__dataclass_fields__)
_BOOL_FIELDS = frozenset(
    name for name, field in Channel.__dataclass_fields__.items() if field.type == "bool"
)


def channel_from_row(row: sqlite3.Row) -> Channel:
    """Build a Channel from a `channels` row."""
    values = {name: row[name] for name in _CHANNEL_FIELDS}
    for name in _BOOL_FIELDS:
        values[name] = bool(values[name])
    return Channel(**values)


class Catalog:
    """Cached apps, channels (per app, ordered by name then id) and bundles."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.invalidate()

    def invalidate(self) -> None:
        """Forget everything cached (after any admin change)."""
        self._apps: dict[str, App] | None = None
        self._channels: dict[str, list[Channel]] = {}
        self._bundles: dict[tuple[str, str], Bundle] = {}
        self._override_apps: frozenset[str] | None = None
        self._signing_keys: dict[tuple[str, str], bytes | None] = {}

    def app(self, app_id: str) -> App | None:
        if self._apps is None:
            rows = self._conn.execute("SELECT * FROM apps").fetchall()
            self._apps = {
                r["app_id"]: App(
                    r["app_id"], bool(r["expose_metadata"]), bool(r["allow_device_custom_id"])
                )
                for r in rows
            }
        return self._apps.get(app_id)

    def channels(self, app_id: str) -> list[Channel]:
        cached = self._channels.get(app_id)
        if cached is None:
            rows = self._conn.execute(
                "SELECT * FROM channels WHERE app_id = ? ORDER BY name, id", (app_id,)
            ).fetchall()
            cached = self._channels[app_id] = [channel_from_row(r) for r in rows]
        return cached

    def channel(self, app_id: str, name: str) -> Channel | None:
        return next((c for c in self.channels(app_id) if c.name == name), None)

    def bundle(self, app_id: str, name: str) -> Bundle | None:
        """The bundle, cached once found (misses are not cached: devices send any name)."""
        key = (app_id, name)
        found = self._bundles.get(key)
        if found is None:
            found = self._load_bundle(app_id, name)
            if found is not None:
                self._bundles[key] = found
        return found

    def _load_bundle(self, app_id: str, name: str) -> Bundle | None:
        row = self._conn.execute(
            "SELECT * FROM bundles WHERE app_id = ? AND name = ?", (app_id, name)
        ).fetchone()
        if row is None:
            return None
        files = self._conn.execute(
            "SELECT file_name, file_hash, file_id FROM manifest_files WHERE bundle_id = ? "
            "ORDER BY file_name",
            (row["id"],),
        ).fetchall()
        return Bundle(
            app_id=app_id,
            name=name,
            checksum=row["checksum"],
            session_key=row["session_key"],
            key_id=row["key_id"],
            file_id=row["file_id"],
            manifest=tuple(ManifestFile(*f) for f in files),
            min_update_version=row["min_update_version"],
            link=row["link"],
            comment=row["comment"],
            release=json.loads(row["release_doc"]) if row["release_doc"] else None,
            dialects=json.loads(row["dialects"]) if row["dialects"] else {},
        )

    def bundle_of_update(self, app_id: str, update_id: str) -> str | None:
        """The name of the bundle whose Expo manifest has this id (None: not one of ours)."""
        row = self._conn.execute(
            "SELECT name FROM bundles WHERE app_id = ? "
            "AND json_extract(dialects, '$.expo.update_id') = ?",
            (app_id, update_id),
        ).fetchone()
        return str(row["name"]) if row is not None else None

    def signing_key(self, app_id: str, dialect: str) -> bytes | None:
        """The private key (PEM) registered for `dialect`'s answers of this app, or None."""
        if (app_id, dialect) not in self._signing_keys:
            row = self._conn.execute(
                "SELECT private_pem FROM signing_keys WHERE app_id = ? AND dialect = ?",
                (app_id, dialect),
            ).fetchone()
            pem = str(row["private_pem"]).encode() if row is not None else None
            self._signing_keys[(app_id, dialect)] = pem
        return self._signing_keys[(app_id, dialect)]

    def override(self, app_id: str, device_id: str) -> Channel | None:
        """The channel a device override points this device at, if any."""
        if self._override_apps is None:
            rows = self._conn.execute("SELECT DISTINCT app_id FROM channel_devices").fetchall()
            self._override_apps = frozenset(r[0] for r in rows)
        if app_id not in self._override_apps:
            return None
        row = self._conn.execute(
            "SELECT channel_id FROM channel_devices WHERE app_id = ? AND device_id = ?",
            (app_id, device_id),
        ).fetchone()
        if row is None:
            return None
        return next((c for c in self.channels(app_id) if c.id == row[0]), None)

    def first_public(self, app_id: str, platform: str) -> Channel | None:
        """The first public channel enabled for the platform (by name, then id)."""
        return next(
            (c for c in self.channels(app_id) if c.public and c.allows_platform(platform)), None
        )

    def resolve(self, info: DeviceInfo) -> tuple[Channel | None, bool]:
        """Capgo step 6: (channel, came_from_override). Override, then named, then public.

        A `defaultChannel` that matches nothing does not fall back to the public channel.
        """
        override = self.override(info.app_id, info.device_id)
        if override is not None:
            return override, True
        if info.default_channel:
            named = self.channel(info.app_id, info.default_channel)
            usable = (
                named is not None
                and named.allows_platform(info.platform)
                and (named.public or named.allow_device_self_set)
            )
            return (named if usable else None), False
        return self.first_public(info.app_id, info.platform), False
