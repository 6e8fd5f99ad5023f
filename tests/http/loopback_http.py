"""A real HTTP(S) server on 127.0.0.1 for the HTTP port tests, and throwaway TLS certs.

Routes: /echo (JSON of what was received), /bundle (ranged bytes), /gzip, /slow?s=,
/stall (half a body, then silence), /truncated (closes before Content-Length),
/redirect, /redirect_to?url=, /status/N, /big, /hold?s= (counts concurrent requests),
/bomb/gzip and /bomb/br (a few KB expanding to BOMB_BYTES), /trickle/body and /trickle/head
(TRICKLE_BYTES bytes, one every TRICKLE_GAP_S, in the body or in the headers). Threaded (under a
gevent-patched process, greenlets), daemon threads, so it never blocks shutdown.
"""

from __future__ import annotations

import datetime
import functools
import gzip
import ipaddress
import json
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import brotli  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BUNDLE = bytes(range(256)) * 1024  # 256 KiB, every offset distinguishable mod 256
BIG = b"x" * (2 * 1024 * 1024)
BOMB_BYTES = 64 * 1024 * 1024
TRICKLE_BYTES, TRICKLE_GAP_S = 20, 0.3
BAD_URLS = [
    "ftp://127.0.0.1/bundle.zip",
    "http://[::1",  # urlsplit raises ValueError
    "http://127.0.0.1:99999/x",
    "https://127.0.0.1/" + "a" * 70_000,  # httpx raised InvalidURL from outside its try
]


@functools.cache
def bomb(encoding: str) -> bytes:
    """BOMB_BYTES of zeros, compressed (gzip: ~65 KB, br: ~12 KB)."""
    zeros = bytes(BOMB_BYTES)
    if encoding == "br":
        return bytes(brotli.compress(zeros, quality=1))
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return packer.compress(zeros) + packer.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length) if length else b""
        path = url.path
        if path == "/echo":
            seen = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": received.decode("latin-1"),
            }
            self._reply(200, json.dumps(seen).encode(), {"Content-Type": "application/json"})
        elif path == "/bundle":
            self._bundle()
        elif path == "/gzip":
            self._reply(200, gzip.compress(b'{"kind":"up_to_date"}'), {"Content-Encoding": "gzip"})
        elif path == "/slow":
            time.sleep(float(query.get("s", "2")))
            self._reply(200, b"late")
        elif path == "/hold":
            self._hold(float(query.get("s", "0.2")))
        elif path == "/stall":
            self._partial(close=False)
        elif path == "/truncated":
            self._partial(close=True)
        elif path == "/redirect":
            self._reply(302, b"", {"Location": "/echo?redirected=1"})
        elif path == "/redirect_to":
            self._reply(302, b"", {"Location": query["url"]})
        elif path.startswith("/bomb/"):
            encoding = path.rsplit("/", 1)[1]
            self._reply(200, bomb(encoding), {"Content-Encoding": encoding})
        elif path == "/trickle/body":
            self._trickle(in_headers=False)
        elif path == "/trickle/head":
            self._trickle(in_headers=True)
        elif path.startswith("/status/"):
            self._reply(int(path.rsplit("/", 1)[1]), b'{"error":"x"}', {"Retry-After": "7"})
        elif path == "/big":
            self._reply(200, BIG)
        else:
            self._reply(404, b"")

    def _bundle(self) -> None:
        spec = self.headers.get("Range")
        if spec is None:
            self._reply(200, BUNDLE, {"Accept-Ranges": "bytes"})
            return
        start_text, _, end_text = spec.removeprefix("bytes=").partition("-")
        start = int(start_text)
        end = int(end_text) if end_text else len(BUNDLE) - 1
        part = BUNDLE[start : end + 1]
        content_range = f"bytes {start}-{end}/{len(BUNDLE)}"
        self._reply(206, part, {"Content-Range": content_range, "Accept-Ranges": "bytes"})

    def _partial(self, *, close: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"y" * 50000)
        self.wfile.flush()
        if close:
            self.close_connection = True
            return
        time.sleep(3)
        self.close_connection = True

    def _trickle(self, *, in_headers: bool) -> None:
        """One byte every TRICKLE_GAP_S: each wait is short, the whole is not."""
        self.close_connection = True
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % TRICKLE_BYTES
        padding = b"X-Pad: " + b"p" * TRICKLE_BYTES + b"\r\n"
        slow = padding if in_headers else b""
        self.wfile.write(head if in_headers else head + b"\r\n")
        try:
            for byte in slow or b"y" * TRICKLE_BYTES:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(TRICKLE_GAP_S)
            if in_headers:
                self.wfile.write(b"\r\n" + b"y" * TRICKLE_BYTES)
        except OSError:
            pass  # the client gave up, as it should

    def _hold(self, seconds: float) -> None:
        with self.server.lock:
            self.server.active += 1
            self.server.peak = max(self.server.peak, self.server.active)
        time.sleep(seconds)
        with self.server.lock:
            self.server.active -= 1
        self._reply(200, b"held")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.connections = 0  # accepted so far

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up is routine here
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Loopback:
    url: str
    server: _Server


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[Loopback]:
    """Run the server in a thread until the block ends; `tls` makes it HTTPS."""
    server = _Server()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield Loopback(f"{scheme}://127.0.0.1:{server.server_address[1]}", server)
    finally:
        server.shutdown()
        server.server_close()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certs(folder: Path, host_ip: str = "127.0.0.1") -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA and a server certificate for `host_ip`, signed by it.

    Returns the CA bundle path (for `verify=`) and the server's SSL context.
    """
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("otasim test CA"))
        .issuer_name(_name("otasim test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host_ip))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host_ip))]), False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return ca_path, context
