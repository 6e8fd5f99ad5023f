"""A hostile HTTP server on 127.0.0.1: it answers each path with exactly the bytes an attack
scripted, and counts what it really served (so an attack that never reached the device shows).

A `Reply` is either a status, headers and a body (Content-Length added unless the headers set
one or `chunked`), or `raw` bytes written to the socket as they are (lying lengths, huge or
broken headers), or a `stream` that writes the body itself (endless, slow).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO

OK_JSON = b'{"status":"ok"}'


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes | None = None
    stream: Callable[[BinaryIO], None] | None = None
    chunked: bool = False

    @classmethod
    def json(cls, body: bytes, status: int = 200) -> Reply:
        return cls(status, [("Content-Type", "application/json")], body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HostileServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # the attacks are counted, not logged

    def _answer(self) -> None:
        length = self.headers.get("content-length")
        if length and length.isdigit():
            self.rfile.read(min(int(length), 1 << 20))
        path = self.path.split("?", 1)[0]
        reply = self.server.replies.get(path)
        if reply is None:
            reply = Reply.json(OK_JSON) if path == "/stats" else Reply(404)
        self.server.served[path] += 1
        self.close_connection = True
        if reply.raw is not None:
            self.wfile.write(reply.raw)
            return
        self.send_response(reply.status)
        names = {name.lower() for name, _ in reply.headers}
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.stream is None and "content-length" not in names and not reply.chunked:
            self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if reply.stream is not None:
            reply.stream(self.wfile)
        else:
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        with contextlib.suppress(OSError):  # the device hung up: that is its right
            self._answer()

    do_POST = do_GET
    do_PUT = do_GET


class HostileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: dict[str, Reply] = {}
        self.served: Counter[str] = Counter()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, replies: dict[str, Reply]) -> None:
        """Answer the next requests with `replies` (by path); forget what was served."""
        self.replies = replies
        self.served = Counter()


@contextlib.contextmanager
def hostile_server() -> Iterator[HostileServer]:
    server = HostileServer()
    thread = threading.Thread(target=server.serve_forever, name="otasim-hostile", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
