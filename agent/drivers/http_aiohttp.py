"""The aiohttp backend of the asyncio HTTP port: the fleet default (see docs/http.md).

Redirects and body decoding are the port's own (`afollow_redirects`, `CappedDecoder` over raw
bytes), as for every backend; the overall deadline is an `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import aiohttp

from agent.drivers.http import (
    CappedDecoder,
    ConnectFailed,
    ConnectionLost,
    HttpRequest,
    HttpResponse,
    InvalidUrl,
    TlsVerifyFailed,
    afollow_redirects,
    begin,
    lower_headers,
    send_headers,
    stream_headers,
    timeout_error,
    too_large,
)
from agent.errors import TransportError

_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)
_CHUNK_BYTES: Final = 64 * 1024


def _translate(exc: BaseException, request: HttpRequest) -> TransportError:
    where = f"{request.method} {request.url}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TlsVerifyFailed(f"{where}: TLS certificate refused ({exc.certificate_error})")
    if isinstance(exc, TimeoutError):
        return timeout_error(request)
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
        self, request: HttpRequest, raw: bool, visited: list[str] | None = None
    ) -> aiohttp.ClientResponse:
        async def open_once(hop: HttpRequest) -> aiohttp.ClientResponse:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=hop.timeout_s, sock_read=hop.timeout_s
            )
            try:
                return await self._session_now().request(
                    hop.method,
                    hop.url,
                    headers=stream_headers(hop) if raw else send_headers(hop),
                    data=hop.body,
                    timeout=timeout,
                    allow_redirects=False,
                    auto_decompress=False,
                )
            except _ERRORS as exc:
                raise _translate(exc, hop) from exc

        async def release(response: aiohttp.ClientResponse) -> None:
            response.close()

        def head(response: aiohttp.ClientResponse) -> tuple[int, str | None]:
            return response.status, response.headers.get("location")

        return await afollow_redirects(request, open_once, head, release, visited)

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        request = begin(request)
        try:
            async with asyncio.timeout(request.left()):
                visited: list[str] = []
                response = await self._open(request, raw=False, visited=visited)
                try:
                    body = await self._read_capped(response, request)
                finally:
                    response.release()
        except _ERRORS as exc:
            raise _translate(exc, request) from exc
        headers = lower_headers(response.headers.items())
        return HttpResponse(response.status, headers, body, visited[-1])

    @staticmethod
    async def _read_capped(response: aiohttp.ClientResponse, request: HttpRequest) -> bytes:
        length = response.content_length
        encoding = response.headers.get("content-encoding")
        if length is not None and length > request.max_body_bytes:
            raise too_large(request)
        if length is not None and encoding is None:
            return await response.read()  # the common case: known, small, not compressed
        decoder = CappedDecoder(request, encoding)
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            decoder.feed(chunk)
        return decoder.finish()

    @asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[_Streamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `aiter_bytes` while reading.
        """
        request = begin(request)
        try:
            async with asyncio.timeout(request.left()):
                response = await self._open(request, raw=True)
                try:
                    yield _Streamed(
                        response.status, lower_headers(response.headers.items()), response, request
                    )
                finally:
                    if response.content.at_eof():
                        response.release()
                    else:
                        response.close()  # a half-read connection cannot be reused
        except TimeoutError as exc:
            raise _translate(exc, request) from exc

    async def aclose(self) -> None:
        """Close the session and its pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
