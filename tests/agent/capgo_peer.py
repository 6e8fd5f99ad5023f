"""A small scripted Capgo-speaking server on 127.0.0.1 (Starlette + uvicorn in a thread).

It answers /updates with the current release (an offer unless the device already runs it),
or with canned answers queued by a test; records every request and every stats event; serves
bundle files with HTTP Range, optionally slowly (for kill-mid-download tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import threading
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def make_zip(version: str, files: dict[str, bytes] | None = None) -> bytes:
    """A bundle zip with an index.html naming the version (plus `files`)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("index.html", f"<html>{version}</html>")
        for name, data in (files or {}).items():
            archive.writestr(name, data)
    return out.getvalue()


@dataclass
class Canned:
    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    trickle_s: float = 0.0  # send the body one byte at a time, this long apart


@dataclass
class Release:
    version: str
    payload: bytes  # bytes served at /bundles/<version>.zip (maybe encrypted)
    checksum: str
    session_key: str = ""


@dataclass
class CapgoPeer:
    url: str = ""
    release: Release | None = None
    canned: list[Canned] = field(default_factory=list)
    stats_canned: list[Canned] = field(default_factory=list)
    bundle_canned: list[Canned] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    channels: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # served at /files/<name>
    slow_bundle_s: float = 0.0  # pause between 16 KiB chunks
    ignore_range: bool = False
    chunked: bool = False  # serve bundles without Content-Length
    chunk_bytes: int = 16384  # bundles are sent in chunks of this size

    def reset(self) -> None:
        """Forget everything a previous test set up or recorded."""
        self.release = None
        for log in (
            self.canned,
            self.stats_canned,
            self.bundle_canned,
            self.requests,
            self.stats,
            self.channels,
        ):
            log.clear()
        self.files.clear()
        self.slow_bundle_s = 0.0
        self.ignore_range = False
        self.chunked = False
        self.chunk_bytes = 16384

    def publish(self, version: str, payload: bytes | None = None, **extra: str) -> Release:
        data = payload if payload is not None else make_zip(version)
        checksum = extra.pop("checksum", hashlib.sha256(data).hexdigest())
        self.release = Release(version, data, checksum, **extra)
        return self.release

    def offer(self, version: str | None = None) -> dict[str, Any]:
        assert self.release is not None
        return {
            "version": version or self.release.version,
            "url": f"{self.url}/bundles/{self.release.version}.zip",
            "checksum": self.release.checksum,
            "session_key": self.release.session_key,
        }

    def actions(self) -> list[str]:
        return [event["action"] for event in self.stats]

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def bundle_requests(self) -> list[dict[str, str]]:
        return [headers for _, path, headers in self.requests if path.startswith("/bundles/")]

    # -- routes ---------------------------------------------------------------------------

    async def updates(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.method, "/updates", body))
        if self.canned:
            return _reply(self.canned.pop(0))
        if self.release is None or body["version_name"] == self.release.version:
            return JSONResponse(
                {
                    "error": "no_new_version_available",
                    "message": "No new version available",
                    "kind": "up_to_date",
                }
            )
        return JSONResponse(self.offer())

    async def dialect_check(self, request: Request) -> Response:
        """Another dialect's check (Capawesome's `GET .../bundles/latest`, Appflow's `POST
        .../check-device`): the canned answers, else 404. Lets a test play a server variation
        the reference server has not."""
        self.requests.append((request.method, request.url.path, dict(request.query_params)))
        return _reply(self.canned.pop(0)) if self.canned else Response(status_code=404)

    async def redirect(self, request: Request) -> Response:
        """`/go/{name}` answers 302 to `/files/{name}` (a backend that redirects)."""
        self.requests.append((request.method, request.url.path, {}))
        return Response(
            status_code=302, headers={"location": f"/files/{request.path_params['name']}"}
        )

    async def stats_route(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.method, "/stats", body))
        if self.stats_canned:
            return _reply(self.stats_canned.pop(0))
        self.stats.extend(body if isinstance(body, list) else [body])
        return JSONResponse({"status": "ok"})

    async def channel_self(self, request: Request) -> Response:
        body = dict(request.query_params) if request.method == "GET" else await request.json()
        self.requests.append((request.method, "/channel_self", body))
        if self.canned:
            return _reply(self.canned.pop(0))
        if request.method == "POST":
            return JSONResponse({"status": "ok", "allowSet": True})
        if request.method == "PUT":
            return JSONResponse(
                {"channel": body.get("defaultChannel") or "production", "status": "default"}
            )
        return JSONResponse(self.channels)

    async def bundle(self, request: Request) -> Response:
        self.requests.append((request.method, request.url.path, dict(request.headers)))
        if self.bundle_canned:
            return _reply(self.bundle_canned.pop(0))
        assert self.release is not None
        data = self.release.payload
        start = 0
        headers = {"accept-ranges": "bytes"}
        status = 200
        ranged = request.headers.get("range")
        if ranged and not self.ignore_range:
            start = int(ranged.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return Response(status_code=416, headers={"content-range": f"bytes */{len(data)}"})
            status = 206
            headers["content-range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if not self.chunked:
            headers["content-length"] = str(len(data) - start)
        return StreamingResponse(self._chunks(data[start:]), status_code=status, headers=headers)

    async def file(self, request: Request) -> Response:
        self.requests.append((request.method, request.url.path, dict(request.headers)))
        data = self.files.get(request.path_params["name"])
        return Response(status_code=404) if data is None else Response(data)

    async def _chunks(self, data: bytes) -> AsyncIterator[bytes]:
        for offset in range(0, len(data), self.chunk_bytes):
            if self.slow_bundle_s:
                await asyncio.sleep(self.slow_bundle_s)
            yield data[offset : offset + self.chunk_bytes]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/updates", self.updates, methods=["POST"]),
                Route("/v1/apps/{app}/bundles/latest", self.dialect_check, methods=["GET"]),
                Route("/apps/{app}/channels/check-device", self.dialect_check, methods=["POST"]),
                Route("/go/{name}", self.redirect, methods=["GET"]),
                Route("/stats", self.stats_route, methods=["POST"]),
                Route("/channel_self", self.channel_self, methods=["POST", "PUT", "GET"]),
                Route("/bundles/{name}", self.bundle, methods=["GET"]),
                Route("/files/{name}", self.file, methods=["GET"]),
            ]
        )


def _reply(canned: Canned) -> Response:
    if canned.trickle_s:
        return StreamingResponse(_trickle(canned), canned.status, canned.headers)
    return Response(canned.body or b"", status_code=canned.status, headers=canned.headers)


async def _trickle(canned: Canned) -> AsyncIterator[bytes]:
    for byte in canned.body or b"":
        await asyncio.sleep(canned.trickle_s)
        yield bytes([byte])


def canned_json(data: Any, status: int = 200, **headers: str) -> Canned:
    return Canned(
        status, json.dumps(data).encode(), {"content-type": "application/json", **headers}
    )


@contextmanager
def serve_peer(tls: tuple[Path, Path] | None = None) -> Iterator[CapgoPeer]:
    """Run a CapgoPeer on 127.0.0.1 (random port) until the block ends.

    `tls`: (certificate, key) PEM files to serve https.
    """
    peer = CapgoPeer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    scheme = "https" if tls else "http"
    peer.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    cert, key = tls or (None, None)
    config = uvicorn.Config(
        peer.app(), log_level="error", lifespan="off", ssl_certfile=cert, ssl_keyfile=key
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    try:
        yield peer
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()
