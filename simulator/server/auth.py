"""Admin API keys: random 32-byte tokens, stored as SHA-256, compared in constant time,
with four roles ordered read < upload < write < all (Capgo's key modes)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass

from starlette.requests import Request

from simulator.server.db import transaction
from simulator.server.web import ApiError

ROLES = ("read", "upload", "write", "all")
KEY_PREFIX = "otasim_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    role: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(conn: sqlite3.Connection, name: str, role: str) -> tuple[ApiKey, str]:
    """Create a key (inside the caller's transaction); returns its record and the secret,
    which is shown once and never stored.

    Raises:
        ValueError: unknown role.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    cur = conn.execute(
        "INSERT INTO api_keys (name, key_hash, role, created_at) VALUES (?, ?, ?, ?)",
        (name, hash_key(secret), role, time.time()),
    )
    return ApiKey(int(cur.lastrowid or 0), name, role), secret


def bootstrap_admin_key(conn: sqlite3.Connection, *, always: bool = False) -> str | None:
    """Create an `all` key when the server has none (or `always`); returns its secret."""
    has_key = conn.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL").fetchone()
    if has_key and not always:
        return None
    with transaction(conn):
        return create_key(conn, "admin", "all")[1]


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(conn: sqlite3.Connection, request: Request, needed: str) -> ApiKey:
    """The caller's key if it exists, is not revoked and has at least the `needed` role.

    Raises:
        ApiError: 401 `invalid_api_key` (missing or wrong), 403 `insufficient_role`.
    """
    presented = _presented_key(request)
    if presented is None:
        raise ApiError(401, "invalid_api_key", "Missing API key (Authorization: Bearer <key>)")
    digest = hash_key(presented)
    row = conn.execute(
        "SELECT id, name, role, key_hash FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
        (digest,),
    ).fetchone()
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        raise ApiError(401, "invalid_api_key", "Invalid API key")
    if ROLES.index(row["role"]) < ROLES.index(needed):
        raise ApiError(403, "insufficient_role", f"This action needs a '{needed}' key")
    return ApiKey(row["id"], row["name"], row["role"])
