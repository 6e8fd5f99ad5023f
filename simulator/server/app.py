"""The Starlette application: every dialect's device endpoints, bundle files, the admin API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.server import admin_api, device_api
from simulator.server.blobs import serve_file
from simulator.server.dialects import SERVER_DIALECTS
from simulator.server.state import ServerConfig, ServerState
from simulator.server.web import ApiError, JSONResponse

log = logging.getLogger(__name__)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _client_gone(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "client_disconnected", "message": "Body incomplete"}, 400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "unknown_error", "message": "Internal error"}, 500)


async def _flush_forever(state: ServerState) -> None:
    while True:
        await asyncio.sleep(state.config.flush_interval_s)
        try:
            state.recorder.flush()
        except sqlite3.Error:
            log.exception("write-behind flush failed; retrying")


def create_app(config: ServerConfig) -> Starlette:
    """Build the server app; its database opens at startup (in the serving thread)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = ServerState(config)
        app.state.server = state
        flusher = asyncio.create_task(_flush_forever(state))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            state.close()

    routes = [
        *(route for dialect in SERVER_DIALECTS.values() for route in dialect.routes()),
        Route("/ok", device_api.health, methods=["GET"]),
        Route("/files/{file_id}", serve_file, methods=["GET", "HEAD"]),
        *admin_api.routes(),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            ClientDisconnect: _client_gone,
            Exception: _unexpected,
        },
    )
