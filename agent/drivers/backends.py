"""The HTTP backends behind the port of `agent.drivers.http`: pick one, get a port.

Each backend module imports its library only when asked for, so an agent installed without
a library (aiohttp, geventhttpclient) runs with the others.
"""

from __future__ import annotations

import socket
from typing import Final, Literal

from agent.drivers.http import AsyncHttpPort, SyncHttpPort, ssl_context_for

AsyncBackend = Literal["streams", "aiohttp", "httpx"]
SyncBackend = Literal["httpx", "geventhttpclient"]

DEFAULT_ASYNC_BACKEND: Final[AsyncBackend] = "aiohttp"  # measured: docs/http.md


def gevent_patched() -> bool:
    """True when gevent has monkey-patched `socket` in this process (Locust does)."""
    return socket.socket.__module__.startswith("gevent")


def make_async_port(
    backend: AsyncBackend = DEFAULT_ASYNC_BACKEND,
    *,
    verify: bool | str = True,
    max_connections: int = 100,
) -> AsyncHttpPort:
    """An asyncio HTTP port; share one across all devices of a process.

    Raises:
        ValueError: unknown backend or `max_connections` < 1.
        FileNotFoundError / ssl.SSLError: `verify` names an unreadable CA bundle.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be >= 1")
    context = ssl_context_for(verify)
    if backend == "streams":
        from agent.drivers.http_streams import StreamsPort

        return StreamsPort(context, max_connections=max_connections)
    if backend == "aiohttp":
        from agent.drivers.http_aiohttp import AiohttpPort

        return AiohttpPort(context, max_connections=max_connections)
    if backend == "httpx":
        from agent.drivers.http_httpx import HttpxAsyncPort

        return HttpxAsyncPort(context, max_connections=max_connections)
    raise ValueError(f"unknown async HTTP backend {backend!r} (streams, aiohttp, httpx)")


def make_sync_port(
    backend: SyncBackend = "httpx",
    *,
    verify: bool | str = True,
    max_connections: int = 100,
) -> SyncHttpPort:
    """A blocking HTTP port (cooperative under gevent); share one across a process's devices.

    Raises:
        ValueError: unknown backend or `max_connections` < 1.
        RuntimeError: `geventhttpclient` asked for in a process gevent has not patched.
        FileNotFoundError / ssl.SSLError: `verify` names an unreadable CA bundle.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be >= 1")
    if backend == "httpx":
        from agent.drivers.http_httpx import HttpxSyncPort

        return HttpxSyncPort(ssl_context_for(verify), max_connections=max_connections)
    if backend == "geventhttpclient":
        if not gevent_patched():
            raise RuntimeError(
                "the geventhttpclient backend runs only in a gevent-patched process "
                "(Locust, or gevent.monkey.patch_all() first)"
            )
        from agent.drivers.http_gevent import GeventPort

        return GeventPort(ssl_context_for(verify), max_connections=max_connections)
    raise ValueError(f"unknown sync HTTP backend {backend!r} (httpx, geventhttpclient)")
