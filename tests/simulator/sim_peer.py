"""A tiny real HTTP peer on 127.0.0.1 for the network-shaping tests (aiohttp web)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


def blob(n: int) -> bytes:
    """Deterministic, non-repeating-looking bytes (so a cut or a flip is visible)."""
    return bytes((i * 31 + i // 251) % 256 for i in range(n))


@dataclass
class Peer:
    url: str
    offer: dict[str, object] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


@asynccontextmanager
async def loopback_peer() -> AsyncIterator[Peer]:
    """Serve GET /blob/<n>, POST /updates (answers `peer.offer`) and GET /hang (never
    answers) until the block ends."""
    peer = Peer(url="")

    async def get_blob(request: web.Request) -> web.Response:
        peer.hits.append(request.path)
        return web.Response(body=blob(int(request.match_info["n"])))

    async def updates(request: web.Request) -> web.Response:
        peer.hits.append(request.path)
        return web.Response(body=json.dumps(peer.offer), content_type="application/json")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)  # longer than the client waits: its timeout ends it
        return web.Response()

    app = web.Application()
    app.router.add_get("/hang", hang)
    app.router.add_get("/blob/{n}", get_blob)
    app.router.add_post("/updates", updates)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    peer.url = f"http://127.0.0.1:{port}"
    try:
        yield peer
    finally:
        await runner.cleanup()
