"""The httpx backends of the HTTP port: plain httpx, asyncio and blocking.

httpx follows redirects and decodes bodies itself, but neither as the port promises (https to
http is followed; a compressed chunk is decoded whole before any cap applies), so both are
done by the port's shared `follow_redirects` and `CappedDecoder` over raw bytes. The overall
deadline is an `asyncio.timeout` for the async client; for the blocking client, whose reads
cannot be interrupted from outside, every socket wait of the exchange is shortened to what is
left before the deadline (`_DeadlineBackend`, the network layer under httpcore's pool).
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final

import httpcore
import httpx

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
    follow_redirects,
    lower_headers,
    send_headers,
    stream_headers,
    timeout_error,
)
from agent.errors import TransportError

_ERRORS: Final = (httpx.HTTPError, httpx.InvalidURL, TimeoutError)
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "otasim_exchange_deadline", default=None
)


def _translate(exc: BaseException, request: HttpRequest) -> TransportError:
    where = f"{request.method} {request.url}"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return timeout_error(request)
    if isinstance(exc, httpx.ConnectError):
        cause = _certificate_error(exc)
        if cause is not None:
            return TlsVerifyFailed(f"{where}: TLS certificate refused ({cause.verify_message})")
        return ConnectFailed(f"{where}: {exc}")
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return InvalidUrl(f"{where}: {exc}")
    return ConnectionLost(f"{where}: {exc!r}")


def _certificate_error(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate failure httpx (via httpcore) chains under its ConnectError, if any."""
    while exc is not None and not isinstance(exc, ssl.SSLCertVerificationError):
        exc = exc.__cause__ or exc.__context__
    return exc


def _wait(timeout: float | None) -> float | None:
    """A socket wait shortened to the current exchange's deadline (see `_DeadlineBackend`)."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("exchange deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _wait(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _wait(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _wait(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's blocking network layer, every wait capped by the exchange's deadline."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _wait(timeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _limits(max_connections: int) -> httpx.Limits:
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


def _build(
    client: httpx.Client | httpx.AsyncClient, request: HttpRequest, raw: bool
) -> httpx.Request:
    return client.build_request(
        request.method,
        request.url,
        headers=stream_headers(request) if raw else send_headers(request),
        content=request.body,
        timeout=httpx.Timeout(request.remaining()),
    )


def _head(response: httpx.Response) -> tuple[int, str | None]:
    return response.status_code, response.headers.get("location")


def _decoder(response: httpx.Response, request: HttpRequest) -> CappedDecoder:
    return CappedDecoder(request, response.headers.get("content-encoding"))


def _result(response: httpx.Response, body: bytes, url: str) -> HttpResponse:
    headers = lower_headers(response.headers.multi_items())
    return HttpResponse(response.status_code, headers, body, url)


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
        self._client = httpx.AsyncClient(
            verify=ssl_context, limits=_limits(max_connections), trust_env=False
        )

    async def _open(
        self, request: HttpRequest, raw: bool, visited: list[str] | None = None
    ) -> httpx.Response:
        async def open_once(hop: HttpRequest) -> httpx.Response:
            try:
                return await self._client.send(_build(self._client, hop, raw), stream=True)
            except _ERRORS as exc:
                raise _translate(exc, hop) from exc

        async def release(response: httpx.Response) -> None:
            await response.aclose()

        return await afollow_redirects(request, open_once, _head, release, visited)

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
                    decoder = _decoder(response, request)
                    async for chunk in response.aiter_raw():
                        decoder.feed(chunk)
                    return _result(response, decoder.finish(), visited[-1])
                finally:
                    await response.aclose()
        except _ERRORS as exc:
            raise _translate(exc, request) from exc

    @asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[_AsyncStreamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `aiter_bytes` while reading.
        """
        request = begin(request)
        try:
            async with asyncio.timeout(request.left()):
                response = await self._open(request, raw=True)
                try:
                    headers = lower_headers(response.headers.multi_items())
                    yield _AsyncStreamed(response.status_code, headers, response, request)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise _translate(exc, request) from exc

    async def aclose(self) -> None:
        """Close the client and its pooled connections."""
        await self._client.aclose()


class HttpxSyncPort:
    """A `SyncHttpPort` over one `httpx.Client` with a bounded pool."""

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int) -> None:
        limits = _limits(max_connections)
        transport = httpx.HTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
        # httpx has no option for the network layer; its pool is rebuilt with the same settings
        # over `_DeadlineBackend` (tests/http/test_sync_port.py fails if this stops working).
        transport._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )
        self._client = httpx.Client(transport=transport, trust_env=False)

    def _open(
        self, request: HttpRequest, raw: bool, visited: list[str] | None = None
    ) -> httpx.Response:
        def open_once(hop: HttpRequest) -> httpx.Response:
            try:
                return self._client.send(_build(self._client, hop, raw), stream=True)
            except _ERRORS as exc:
                raise _translate(exc, hop) from exc

        return follow_redirects(request, open_once, _head, httpx.Response.close, visited)

    def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        request = begin(request)
        token = _DEADLINE.set(request.deadline)
        try:
            visited: list[str] = []
            response = self._open(request, raw=False, visited=visited)
            try:
                decoder = _decoder(response, request)
                for chunk in response.iter_raw():
                    decoder.feed(chunk)
                return _result(response, decoder.finish(), visited[-1])
            except _ERRORS as exc:
                raise _translate(exc, request) from exc
            finally:
                response.close()
        finally:
            _DEADLINE.reset(token)

    @contextmanager
    def stream(self, request: HttpRequest) -> Iterator[_SyncStreamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `iter_bytes` while reading.
        """
        request = begin(request)
        token = _DEADLINE.set(request.deadline)
        try:
            response = self._open(request, raw=True)
            try:
                headers = lower_headers(response.headers.multi_items())
                yield _SyncStreamed(response.status_code, headers, response, request)
            finally:
                response.close()
        finally:
            _DEADLINE.reset(token)

    def close(self) -> None:
        """Close the client and its pooled connections."""
        self._client.close()
