"""The aiohttp backend of the asyncio HTTP port: the fleet default (see docs/http.md)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import aiohttp

from agent.drivers.http import (
    MAX_REDIRECTS,
    ConnectFailed,
    ConnectionLost,
    HttpRequest,
    HttpResponse,
    InvalidUrl,
    TlsVerifyFailed,
    TransportTimeout,
    lower_headers,
    stream_headers,
    too_large,
)
from agent.errors import TransportError

_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)
_CHUNK_BYTES: Final = 64 * 1024


def _translate(exc: BaseException, request: HttpRequest) -> TransportError:
    where = f"{request.method} {request.url}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TlsVerifyFailed(f"{where}: {exc.certificate_error}")
    if isinstance(exc, TimeoutError):
        return TransportTimeout(f"{where}: no answer within {request.timeout_s} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectFailed(f"{where}: {exc}")
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return InvalidUrl(f"{where}: {exc}")
    return ConnectionLost(f"{where}: {exc!r}")


@dataclass
class _Streamed:
    status: int
    headers: Mapping[str, str]
    _response: aiohttp.ClientResponse
    _request: HttpRequest

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk
        except _ERRORS as exc:
            raise _translate(exc, self._request) from exc


class AiohttpPort:
    """An `AsyncHttpPort` over one aiohttp session with a bounded connection pool.

    The session is created on first use, inside the running event loop.
    """

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ssl=self._ssl_context
            )
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def _open(
        self, request: HttpRequest, headers: dict[str, str], *, decompress: bool
    ) -> aiohttp.ClientResponse:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=request.timeout_s, sock_read=request.timeout_s
        )
        try:
            return await self._session_now().request(
                request.method,
                request.url,
                headers=headers,
                data=request.body,
                timeout=timeout,
                max_redirects=MAX_REDIRECTS,
                auto_decompress=decompress,
            )
        except _ERRORS as exc:
            raise _translate(exc, request) from exc

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        response = await self._open(request, dict(request.headers), decompress=True)
        try:
            body = await self._read_capped(response, request)
        except _ERRORS as exc:
            raise _translate(exc, request) from exc
        finally:
            response.release()
        return HttpResponse(response.status, lower_headers(response.headers.items()), body)

    @staticmethod
    async def _read_capped(response: aiohttp.ClientResponse, request: HttpRequest) -> bytes:
        length = response.content_length
        if length is not None and length > request.max_body_bytes:
            raise too_large(request)
        if length is not None and "content-encoding" not in response.headers:
            return await response.read()  # the common case: known, small, not compressed
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            body += chunk
            if len(body) > request.max_body_bytes:
                raise too_large(request)
        return bytes(body)

    @asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[_Streamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `aiter_bytes` while reading.
        """
        response = await self._open(request, stream_headers(request), decompress=False)
        try:
            yield _Streamed(
                response.status, lower_headers(response.headers.items()), response, request
            )
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()  # a half-read connection cannot be reused

    async def aclose(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
