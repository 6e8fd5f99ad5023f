"""Small third-party-like OTA servers on 127.0.0.1 (stdlib, threaded), for the verdict tests.

`OldCapgo` behaves like a community Capgo-compatible server written from Capgo's self-hosting
docs for plugin 6: it answers an up-to-date device `{"error":"no_new_version_available",
"message":...}` without `kind`, reads a stats body as ONE object (an array gives a row with
every field None, answered 200 `{"status":"ok"}` all the same), lists channels with integer
flags, and may serve its endpoints under its own paths. `refuse_after` makes it answer 503 to
every request after that many /updates answers; `drop_odd` closes, unanswered, the
connection of each device's 1st, 3rd, 5th... /updates request (a flaky keep-alive).
`Plain` is a plain web server: no handler for POST, so http.server answers 501 to it;
`drop=True` closes every connection unanswered.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class OldCapgo:
    updates_path: str = "/updates"
    stats_path: str = "/stats"
    channel_path: str = "/channel_self"
    release: tuple[str, bytes] | None = None  # (version, zip) offered to other versions
    refuse_after: int | None = None  # 503 to everything after this many /updates answers
    session_key: str = ""  # sent with the offer (an encrypted release)
    drop_odd: bool = False  # drop every other /updates request of each device
    corrupt: int = 0  # serve the bundle with one byte flipped this many times first
    seen: dict[str, int] = field(default_factory=dict)  # device id -> /updates requests
    url: str = ""
    checks: int = 0
    stats_rows: list[dict[str, Any]] = field(default_factory=list)
    stats_bodies: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, body: Any) -> tuple[int, Any] | None:
        """(status, JSON body), or None to drop the connection unanswered."""
        with self.lock:
            if self.refuse_after is not None and self.checks >= self.refuse_after:
                return 503, {"error": "service_unavailable"}
            if path == self.updates_path and self.drop_odd:
                device = str(body.get("device_id")) if isinstance(body, dict) else ""
                self.seen[device] = self.seen.get(device, 0) + 1
                if self.seen[device] % 2:
                    return None
            if path == self.updates_path:
                self.checks += 1
                return 200, self._update(body)
            if path == self.stats_path:
                self.stats_bodies.append(body)
                one = body if isinstance(body, dict) else {}
                self.stats_rows.append(
                    {k: one.get(k) for k in ("action", "version_name", "device_id")}
                )
                return 200, {"status": "ok"}
            if path == self.channel_path:
                return 200, [{"id": 1, "name": "production", "public": 1, "allow_self_set": 0}]
        return 404, {"error": "not_found"}

    def _update(self, body: Any) -> Any:
        if self.release is not None and body.get("version_name") != self.release[0]:
            version, data = self.release
            return {
                "version": version,
                "url": f"{self.url}/bundle.zip",
                "checksum": hashlib.sha256(data).hexdigest(),
                "session_key": self.session_key,
            }
        return {"error": "no_new_version_available", "message": "No new version available"}


class _OldCapgoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        answer = self.server.family.answer(self.path.split("?")[0], body)
        if answer is None:
            self.close_connection = True
            return
        self._send(answer[0], json.dumps(answer[1]).encode(), "application/json")

    def do_GET(self) -> None:
        family = self.server.family
        if self.path == "/bundle.zip" and family.release is not None:
            data = bytearray(family.release[1])
            with family.lock:
                if family.corrupt > 0:
                    family.corrupt -= 1
                    data[len(data) // 2] ^= 1  # a flipped transfer
            self._send(200, bytes(data), "application/zip")
            return
        status, data = family.answer(self.path.split("?")[0], None) or (404, None)
        self._send(status, json.dumps(data).encode(), "application/json")

    do_PUT = do_POST

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _PlainHandler(BaseHTTPRequestHandler):
    """A static web server: GET answers a page; POST/PUT have no handler (501)."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.server.drop:
            self.close_connection = True
            return
        data = b"<html>It works!</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_one_request(self) -> None:
        if self.server.drop:  # read nothing, answer nothing: the connection just closes
            self.close_connection = True
            return
        super().handle_one_request()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    family: OldCapgo
    drop: bool = False


@contextmanager
def _serve(handler: type[BaseHTTPRequestHandler], **attrs: Any) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), handler)
    for name, value in attrs.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def old_capgo(**options: Any) -> Iterator[OldCapgo]:
    family = OldCapgo(**options)
    with _serve(_OldCapgoHandler, family=family) as server:
        family.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield family


@contextmanager
def plain(*, drop: bool = False) -> Iterator[str]:
    """A plain web server (501 to POST), or one that drops every connection; yields its URL."""
    with _serve(_PlainHandler, drop=drop) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"
