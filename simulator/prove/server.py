"""The reference server under attack, over loopback: fuzzed bodies to every route, every admin
route without a key, with a wrong key and with a weaker role, path traversal on the file route.

Targets: no 5xx, no admin route served without the role it needs, no key in any answer, no
file outside the blob store served, and the database and keys files readable by the owner only.
"""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from simulator.prove.attacks import MUTATIONS, fuzz_value
from simulator.server.admin_api import ROUTES
from simulator.server.client import AdminClient
from simulator.server.db import DB_NAME
from simulator.server.embedded import run_server

APP = "com.otasim.prove.server"
ROLES = ("read", "upload", "write", "all")  # each includes the ones before it
DEVICE_ROUTES = [("POST", "/updates"), ("POST", "/stats"), ("POST", "/channel_self")]
DEVICE_ROUTES += [("PUT", "/channel_self"), ("DELETE", "/channel_self"), ("GET", "/channel_self")]
BIG_BODY = 2 * 1024 * 1024  # past the device routes' 1 MiB limit
SLOW_CLIENTS = 50
PROBE_TIMEOUT_S = 5.0  # a normal request beside the slow clients must answer within this
TRAVERSALS = ("../db.sqlite3", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/" + DB_NAME, "/etc/passwd")


@dataclass
class ServerFigures:
    cases: int = 0
    server_errors: int = 0  # 5xx, or the connection dropped
    auth_bypass: int = 0  # an admin route answered 2xx without a key of its role
    key_leaks: int = 0  # an API key appeared in an answer or in the server's log
    log_records: int = 0  # log records the server wrote while fuzzed (all searched for keys)
    oversized_accepted: int = 0  # bodies past the server's limit not refused with 413
    starved: int = 0  # normal requests that failed while slow clients held sockets
    traversals_served: int = 0  # a file route served something outside the blob store
    open_files: list[str] = field(default_factory=list)  # database/keys files not 0600
    statuses: Counter[int] = field(default_factory=Counter)  # what the fuzzing got back
    samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self)) | {"statuses": dict(sorted(self.statuses.items()))}

    def held(self) -> bool:
        misses = self.server_errors + self.auth_bypass + self.key_leaks + self.traversals_served
        misses += self.oversized_accepted + self.starved
        return misses == 0 and not self.open_files and self.cases > 0


def _path(template: str, rng: random.Random) -> str:
    values = {"app_id": APP, "channel": "production", "device_id": "dev-1", "action": "pause"}
    values |= {"key_id:int": str(rng.randint(1, 5))}
    return re.sub(r"\{([^}]+)\}", lambda m: values.get(m.group(1), "x"), template)


def _body(rng: random.Random) -> bytes:
    if rng.random() < 0.2:
        return rng.choice(list(MUTATIONS.values()))(rng, b'{"app_id": "%s"}' % APP.encode())
    value = fuzz_value(rng)
    if isinstance(value, dict) and rng.random() < 0.7:
        value = {"app_id": APP, "device_id": "dev-1", "version_name": "1.0.0"} | value
    return json.dumps(value).encode()


def prove_server(cases: int, seed: int) -> ServerFigures:
    """`cases` fuzzed requests (device and admin routes, every key kind), then traversals."""
    rng = random.Random(f"{seed}:server")
    figures = ServerFigures()
    logged = _Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(logged)
    root.setLevel(logging.DEBUG)
    try:
        with run_server() as server, AdminClient(server.url, server.admin_key) as admin:
            secrets = _fuzz_server(server.url, admin, server.admin_key, cases, rng, figures)
            figures.open_files = _open_files(server.data_dir)
    finally:
        root.removeHandler(logged)
        root.setLevel(level)
    figures.log_records = len(logged.lines)
    leaks = [line for line in logged.lines if any(secret in line for secret in secrets)]
    figures.key_leaks += len(leaks)
    figures.samples += [f"a key in the log: {line[:80]}" for line in leaks[:2]]
    return figures


class _Capture(logging.Handler):
    """Every log record of this process (the embedded server runs in a thread here)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _fuzz_server(
    url: str,
    admin: AdminClient,
    admin_key: str,
    cases: int,
    rng: random.Random,
    figures: ServerFigures,
) -> set[str]:
    """The fuzzing and the traversals; returns every API key in play."""
    admin.create_app(APP)
    keys = {role: admin.create_key(f"prove-{role}", role)["key"] for role in ROLES}
    secrets = {admin_key, *keys.values()}
    with httpx.Client(base_url=url, timeout=10) as http:
        for _ in range(cases):
            _fuzz_once(http, rng, keys, secrets, figures)
        for name in TRAVERSALS:
            answer = http.get(f"/files/{name}")
            figures.cases += 1
            if answer.status_code == 200 or answer.status_code >= 500:
                figures.traversals_served += answer.status_code == 200
                figures.server_errors += answer.status_code >= 500
                figures.samples.append(f"GET /files/{name}: {answer.status_code}")
        _oversized(http, figures)
        _slow_clients(url, http, figures)
    return secrets


def _oversized(http: httpx.Client, figures: ServerFigures) -> None:
    """Bodies past the device routes' limit, announced or streamed without a length."""
    big = b"[" + b"0," * (BIG_BODY // 2) + b"0]"
    for body in (big, iter([big[i : i + 65536] for i in range(0, len(big), 65536)])):
        figures.cases += 1
        try:
            status = http.post("/stats", content=body).status_code
        except httpx.HTTPError:
            continue  # the server hung up on it: refused
        if status != 413:
            figures.oversized_accepted += 1
            figures.samples.append(f"POST /stats with {len(big)} bytes: {status}")


def _slow_clients(url: str, http: httpx.Client, figures: ServerFigures) -> None:
    """SLOW_CLIENTS sockets trickle a request head and stay; normal requests still answer."""
    host, port = url.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"POST /updates HTTP/1.1\r\nHost: prove\r\nX-Slow: ")
            held.append(sock)
        for _ in range(5):
            figures.cases += 1
            try:
                ok = http.get("/ok", timeout=PROBE_TIMEOUT_S).status_code == 200
            except httpx.HTTPError:
                ok = False
            if not ok:
                figures.starved += 1
                figures.samples.append(f"GET /ok failed beside {SLOW_CLIENTS} slow clients")
    finally:
        for sock in held:
            sock.close()


def _fuzz_once(
    http: httpx.Client,
    rng: random.Random,
    keys: dict[str, str],
    secrets: set[str],
    figures: ServerFigures,
) -> None:
    admin_route = rng.random() < 0.5
    needed = None
    if admin_route:
        method, template, needed, _ = rng.choice(ROUTES)
        path = _path(template, rng)
    else:
        method, path = rng.choice(DEVICE_ROUTES)
    holder = rng.choice([None, "wrong", *ROLES])
    headers = {"Content-Type": "application/json"}
    if holder is not None:
        headers["Authorization"] = f"Bearer {keys.get(holder, 'otasim-wrong-key')}"
    body = None if method in ("GET", "DELETE") and rng.random() < 0.5 else _body(rng)
    figures.cases += 1
    try:
        answer = http.request(method, path, content=body, headers=headers)
    except httpx.HTTPError as exc:  # the server dropped the exchange: a server failure too
        figures.server_errors += 1
        figures.samples.append(f"{method} {path}: {type(exc).__name__}")
        return
    figures.statuses[answer.status_code] += 1
    problem = None
    if answer.status_code >= 500:
        figures.server_errors += 1
        problem = "5xx"
    allowed = holder in ROLES and ROLES.index(holder) >= ROLES.index(needed or "read")
    if admin_route and answer.status_code < 300 and not allowed:
        figures.auth_bypass += 1
        problem = "served without its role"
    leaked = any(secret in answer.text for secret in secrets)
    if leaked and not (path == "/api/keys" and method == "POST"):  # a new key is shown once
        figures.key_leaks += 1
        problem = "a key in the answer"
    if problem and len(figures.samples) < 5:
        figures.samples.append(f"{method} {path} ({holder}): {answer.status_code} {problem}")


def _open_files(data_dir: Path) -> list[str]:
    """The server's database files not private to the owner (0600)."""
    found = []
    for path in data_dir.glob(DB_NAME + "*"):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            found.append(path.name)
    return found
