"""SQLite storage for the reference server: one file, WAL, explicit transactions."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DB_NAME = "server.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS apps (
    app_id TEXT PRIMARY KEY,
    expose_metadata INTEGER NOT NULL DEFAULT 0,
    allow_device_custom_id INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_keys (  -- a dialect's key, for servers that sign answers
    app_id TEXT NOT NULL REFERENCES apps(app_id),
    dialect TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    PRIMARY KEY (app_id, dialect)
);
CREATE TABLE IF NOT EXISTS blobs (
    file_id TEXT PRIMARY KEY,            -- sha256 hex of the stored bytes
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bundles (
    id INTEGER PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(app_id),
    name TEXT NOT NULL,
    checksum TEXT,
    session_key TEXT NOT NULL DEFAULT '',
    key_id TEXT,
    file_id TEXT REFERENCES blobs(file_id),
    min_update_version TEXT,
    link TEXT,
    comment TEXT,
    created_at REAL NOT NULL,
    release_doc TEXT,                    -- signed release document (JSON), strict mode
    dialects TEXT,                       -- other dialects' artefacts (JSON {name: {...}})
    UNIQUE (app_id, name)
);
CREATE TABLE IF NOT EXISTS manifest_files (
    bundle_id INTEGER NOT NULL REFERENCES bundles(id),
    file_name TEXT NOT NULL,
    file_hash TEXT NOT NULL,
    file_id TEXT NOT NULL REFERENCES blobs(file_id),
    PRIMARY KEY (bundle_id, file_name)
);
CREATE TABLE IF NOT EXISTS channels (
    id INTEGER PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps(app_id),
    name TEXT NOT NULL,
    version TEXT,                        -- bundle name; NULL = builtin
    public INTEGER NOT NULL DEFAULT 0,
    allow_device_self_set INTEGER NOT NULL DEFAULT 0,
    ios INTEGER NOT NULL DEFAULT 1,
    android INTEGER NOT NULL DEFAULT 1,
    electron INTEGER NOT NULL DEFAULT 1,
    disable_auto_update TEXT NOT NULL DEFAULT 'major',
    disable_auto_update_under_native INTEGER NOT NULL DEFAULT 1,
    allow_prod INTEGER NOT NULL DEFAULT 1,
    allow_dev INTEGER NOT NULL DEFAULT 1,
    allow_device INTEGER NOT NULL DEFAULT 1,
    allow_emulator INTEGER NOT NULL DEFAULT 1,
    rollout_version TEXT,
    rollout_bps INTEGER NOT NULL DEFAULT 0,
    rollout_paused INTEGER NOT NULL DEFAULT 0,
    auto_pause_fail_ratio REAL,
    auto_pause_min_samples INTEGER NOT NULL DEFAULT 20,
    UNIQUE (app_id, name)
);
CREATE TABLE IF NOT EXISTS channel_devices (
    app_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    channel_id INTEGER NOT NULL REFERENCES channels(id),
    PRIMARY KEY (app_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    app_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    version_name TEXT NOT NULL,
    version_build TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    is_prod INTEGER NOT NULL,
    is_emulator INTEGER NOT NULL,
    custom_id TEXT,
    default_channel TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (app_id, device_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS version_stats (
    app_id TEXT NOT NULL,
    version_name TEXT NOT NULL,
    bucket INTEGER NOT NULL,             -- epoch minute
    action TEXT NOT NULL,                -- a Capgo stats action (device or backend)
    count INTEGER NOT NULL,
    PRIMARY KEY (app_id, version_name, bucket, action)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,       -- sha256 hex of the key
    role TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    api_key_id INTEGER,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


def connect(data_dir: Path) -> sqlite3.Connection:
    """Open (creating if needed) the server database in `data_dir`, in autocommit mode.

    The database holds API key hashes and device data: its files are the owner's only
    (0600; SQLite gives the -wal and -shm files the database file's mode).
    Use `transaction()` for every multi-statement change.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DB_NAME
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
        if file.exists():
            file.chmod(0o600)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(SCHEMA)
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(bundles)")}
    if "release_doc" not in columns:  # a database from before strict mode
        conn.execute("ALTER TABLE bundles ADD COLUMN release_doc TEXT")
    if "dialects" not in columns:  # a database from before the other dialects
        conn.execute("ALTER TABLE bundles ADD COLUMN dialects TEXT")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
