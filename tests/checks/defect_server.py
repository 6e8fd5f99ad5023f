"""The reference server behind a switchable defect, for proving each check can fail.

`DefectLayer` is an ASGI layer in front of the real reference app: with `defect` None it passes
everything through; with a defect name it rewrites the device requests or answers the way a
faulty server would (one fault per name). Admin calls are never touched,
so releases are published through the same server.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulator.checks.protocol import MISSING_CHANNEL, UNKNOWN_APP
from simulator.server.app import create_app
from simulator.server.auth import bootstrap_admin_key
from simulator.server.db import connect
from simulator.server.runner import bind, url_of
from simulator.server.state import ServerConfig

Scope = dict[str, Any]
TRACE = 'Traceback (most recent call last):\n  File "app.py", line 12, in updates\n'


class DefectLayer:
    """ASGI: the reference app, with at most one defect switched on (tests/checks/test_defects.py
    lists them with the check each one proves)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.defect: str | None = None
        self.fleet_ids: set[str] = set()  # device ids of the checker's rollout fleet
        self.real_app_id = ""  # where an unknown app id is redirected (serve-any-app)
        self.plain_base = ""  # an http server holding the same files (http-bundle-url)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or self.defect is None or path.startswith("/api"):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        early = self._early(scope, body)
        if early is not None:
            await _respond(send, *early)
            return
        scope, body = self._request(scope, body)
        status, headers, answer = await _call(self.app, scope, body)
        status, headers, answer = self._answer(scope, status, headers, answer)
        if self.defect == "slow" and path == "/updates":
            await asyncio.sleep(0.15)
        await _respond(send, status, headers, answer)

    # -- faults before the app sees the request ----------------------------------------

    def _early(self, scope: Scope, body: bytes) -> tuple[int, list[Any], bytes] | None:
        path, method, d = scope["path"], scope["method"], self.defect
        data = _json(body)
        crash = d == "crash-on-non-object" and path == "/updates" and _is_json(body)
        if crash and not isinstance(data, dict):
            return 500, [], b"Internal Server Error"
        if d == "stats-array-refused" and path == "/stats" and isinstance(data, list):
            return _json_answer(400, {"error": "invalid_json_body", "message": "not an object"})
        if d == "stats-array-dropped" and path == "/stats" and isinstance(data, list):
            return _json_answer(200, {"status": "ok"})
        if d == "stats-object-refused" and path == "/stats" and isinstance(data, dict):
            return _json_answer(400, {"error": "invalid_json_body", "message": "send an array"})
        if d == "channel-get-broken" and path == "/channel_self" and method == "PUT":
            return _json_answer(200, {"channel": 42, "status": "default"})
        ignored = isinstance(data, dict) and data.get("channel") != MISSING_CHANNEL
        if d == "override-ignored" and path == "/channel_self" and method == "POST" and ignored:
            return _json_answer(200, {"status": "ok"})
        if d == "channel-set-any" and path == "/channel_self" and method == "POST":
            return _json_answer(200, {"status": "ok", "allowSet": True})
        if d == "bundle-404" and path.startswith("/files/"):
            return _json_answer(404, {"error": "not_found"})
        if d == "no-size-limit" and path == "/updates" and len(body) > 1 << 20:
            return _json_answer(200, {"error": "no_new_version_available", "kind": "up_to_date"})
        if d == "429-no-hint" and isinstance(data, dict) and data.get("app_id") == UNKNOWN_APP:
            return _json_answer(429, {"error": "too_many_requests"})
        emulator = isinstance(data, dict) and data.get("is_emulator") is True
        if d == "wrong-filter" and path == "/updates" and emulator:
            refusal = {"error": "disabled_platform_ios", "message": "no", "kind": "blocked"}
            return _json_answer(200, refusal)
        return None

    def _request(self, scope: Scope, body: bytes) -> tuple[Scope, bytes]:
        d, data = self.defect, _json(body)
        if d == "no-range" and scope["path"].startswith("/files/"):
            drop = {b"range", b"if-range"}
            return {**scope, "headers": [h for h in scope["headers"] if h[0] not in drop]}, body
        if scope["path"] != "/updates" or not isinstance(data, dict):
            return scope, body
        device_id = data.get("device_id")
        if d == "reoffer" and data.get("version_name") not in ("builtin", None):
            data["version_name"] = "builtin"
        elif d == "accept-invalid" and device_id == "not-a-device-id":
            data["device_id"] = str(uuid.uuid4())
        elif d == "serve-any-app" and data.get("app_id") == UNKNOWN_APP:
            data["app_id"] = self.real_app_id
        elif d == "non-sticky" and device_id in self.fleet_ids:
            data["device_id"] = str(uuid.uuid4())
        elif d == "wrong-share" and device_id in self.fleet_ids:
            data["device_id"] = "00000000-0000-4000-8000-000000000000"
        elif d == "builtin-literal" and data.get("version_name") == "builtin":
            data["version_name"] = "0.0.0"
        elif d == "channel-fallback" and data.get("defaultChannel") == MISSING_CHANNEL:
            data["defaultChannel"] = ""
        else:
            return scope, body
        return scope, json.dumps(data).encode()

    # -- faults in the answer --------------------------------------------------------------

    def _answer(
        self, scope: Scope, status: int, headers: list[Any], body: bytes
    ) -> tuple[int, list[Any], bytes]:
        path, d, data = scope["path"], self.defect, _json(body)
        if d == "no-etag" and path.startswith("/files/"):
            drop = {b"etag", b"cache-control"}
            return status, [h for h in headers if h[0] not in drop], body
        if d == "leak" and status == 400 and isinstance(data, dict):
            return _json_answer(400, {**data, "message": TRACE})
        if path == "/channel_self" and d == "int-flags":
            return _json_answer(status, _ints(data))
        if path != "/updates" or not isinstance(data, dict):
            return status, headers, body
        if d == "no-kind":
            data.pop("kind", None)
        elif d == "unreadable-offer" and "url" in data:
            data["version"] = 101
        elif d == "wrong-file-hash" and data.get("manifest"):
            data["manifest"][0]["file_hash"] = "0" * 64
        elif d == "wrong-checksum" and "url" in data:
            data["checksum"] = "0" * 64
        elif d == "http-bundle-url" and "url" in data:
            data["url"] = self.plain_base + "/files/" + data["url"].rsplit("/", 1)[1]
        else:
            return status, headers, body
        return _json_answer(status, data)


def _ints(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _json_answer(status: int, data: Any) -> tuple[int, list[Any], bytes]:
    return status, [(b"content-type", b"application/json")], json.dumps(data).encode()


async def _call(app: Any, scope: Scope, body: bytes) -> tuple[int, list[Any], bytes]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status, headers, chunks = 500, [], []

    async def capture(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, capture)
    return status, headers, b"".join(chunks)


async def _respond(send: Any, status: int, headers: list[Any], body: bytes) -> None:
    kept = [h for h in headers if h[0].lower() != b"content-length"]
    kept.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": kept})
    await send({"type": "http.response.body", "body": body})


# -- serving ------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def serve_defective(
    data_dir: Path,
    cert: tuple[Path, Path],
    tune_tls: Callable[[ssl.SSLContext], None] | None = None,
) -> Iterator[tuple[str, str, DefectLayer]]:
    """Serve the reference app behind a `DefectLayer` over HTTPS on loopback; yields the
    URL, an admin key (role all) and the layer."""
    conn = connect(data_dir)
    try:
        admin_key = bootstrap_admin_key(conn, always=True)
    finally:
        conn.close()
    assert admin_key is not None
    layer = DefectLayer(create_app(ServerConfig(data_dir=data_dir)))
    config = uvicorn.Config(
        layer,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(cert[0]),
        ssl_keyfile=str(cert[1]),
    )
    config.load()
    if tune_tls is not None:
        assert config.ssl is not None
        tune_tls(config.ssl)
    server = uvicorn.Server(config)
    sock = bind("127.0.0.1", 0)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield url_of(sock, tls=True), admin_key, layer
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
