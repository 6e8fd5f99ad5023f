"""The httpx backends of the HTTP port: plain httpx, asyncio and blocking."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final

import httpx

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

_ERRORS: Final = (httpx.HTTPError, httpx.InvalidURL)


def _translate(exc: Exception, request: HttpRequest) -> TransportError:
    where = f"{request.method} {request.url}"
    if isinstance(exc, httpx.TimeoutException):
        return TransportTimeout(f"{where}: no answer within {request.timeout_s} s")
    if isinstance(exc, httpx.ConnectError):
        cause = _certificate_error(exc)
        if cause is not None:
            return TlsVerifyFailed(f"{where}: {cause.verify_message}")
        return ConnectFailed(f"{where}: {exc}")
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return InvalidUrl(f"{where}: {exc}")
    return ConnectionLost(f"{where}: {exc!r}")


def _certificate_error(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate failure httpx (via httpcore) chains under its ConnectError, if any."""
    while exc is not None and not isinstance(exc, ssl.SSLCertVerificationError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _client_options(ssl_context: ssl.SSLContext, max_connections: int) -> dict[str, object]:
    return {
        "verify": ssl_context,
        "limits": httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        "follow_redirects": True,
        "max_redirects": MAX_REDIRECTS,
        "trust_env": False,
    }


def _build(
    client: httpx.Client | httpx.AsyncClient, request: HttpRequest, raw: bool
) -> httpx.Request:
    headers = stream_headers(request) if raw else dict(request.headers)
    return client.build_request(
        request.method,
        request.url,
        headers=headers,
        content=request.body,
        timeout=httpx.Timeout(request.timeout_s),
    )


def _result(response: httpx.Response, body: bytes) -> HttpResponse:
    return HttpResponse(response.status_code, lower_headers(response.headers.multi_items()), body)


@dataclass
class _AsyncStreamed:
    status: int
    headers: Mapping[str, str]
    _response: httpx.Response
    _request: HttpRequest

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except _ERRORS as exc:
            raise _translate(exc, self._request) from exc


@dataclass
class _SyncStreamed:
    status: int
    headers: Mapping[str, str]
    _response: httpx.Response
    _request: HttpRequest

    def iter_bytes(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_raw()
        except _ERRORS as exc:
            raise _translate(exc, self._request) from exc


class HttpxAsyncPort:
    """An `AsyncHttpPort` over one `httpx.AsyncClient` with a bounded pool."""

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int) -> None:
        self._client = httpx.AsyncClient(**_client_options(ssl_context, max_connections))  # type: ignore[arg-type]

    async def _open(self, request: HttpRequest, raw: bool) -> httpx.Response:
        built = _build(self._client, request, raw)
        try:
            return await self._client.send(built, stream=True)
        except _ERRORS as exc:
            raise _translate(exc, request) from exc

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        response = await self._open(request, raw=False)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > request.max_body_bytes:
                    raise too_large(request)
        except _ERRORS as exc:
            raise _translate(exc, request) from exc
        finally:
            await response.aclose()
        return _result(response, bytes(body))

    @asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[_AsyncStreamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `aiter_bytes` while reading.
        """
        response = await self._open(request, raw=True)
        try:
            headers = lower_headers(response.headers.multi_items())
            yield _AsyncStreamed(response.status_code, headers, response, request)
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the client and its pooled connections."""
        await self._client.aclose()


class HttpxSyncPort:
    """A `SyncHttpPort` over one `httpx.Client` with a bounded pool."""

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int) -> None:
        self._client = httpx.Client(**_client_options(ssl_context, max_connections))  # type: ignore[arg-type]

    def _open(self, request: HttpRequest, raw: bool) -> httpx.Response:
        built = _build(self._client, request, raw)
        try:
            return self._client.send(built, stream=True)
        except _ERRORS as exc:
            raise _translate(exc, request) from exc

    def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        response = self._open(request, raw=False)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > request.max_body_bytes:
                    raise too_large(request)
        except _ERRORS as exc:
            raise _translate(exc, request) from exc
        finally:
            response.close()
        return _result(response, bytes(body))

    @contextmanager
    def stream(self, request: HttpRequest) -> Iterator[_SyncStreamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `iter_bytes` while reading.
        """
        response = self._open(request, raw=True)
        try:
            headers = lower_headers(response.headers.multi_items())
            yield _SyncStreamed(response.status_code, headers, response, request)
        finally:
            response.close()

    def close(self) -> None:
        """Close the client and its pooled connections."""
        self._client.close()
