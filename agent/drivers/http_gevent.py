"""The geventhttpclient backend of the blocking port: Locust's fast client.

Only for gevent-patched processes (Locust): `make_sync_port` checks. geventhttpclient
has no per-request timeout and no redirects: a `gevent.Timeout` bounds each wait (by the
request's `timeout_s`, or what is left before its deadline), and the port's shared
`follow_redirects` and `CappedDecoder` do the rest.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]
from geventhttpclient.client import HTTPClientPool
from geventhttpclient.response import HTTPSocketPoolResponse

from agent.drivers.http import (
    CappedDecoder,
    ConnectFailed,
    ConnectionLost,
    HttpRequest,
    HttpResponse,
    TlsVerifyFailed,
    begin,
    follow_redirects,
    lower_headers,
    send_headers,
    stream_headers,
    timeout_error,
    too_large,
)
from agent.errors import TransportError

_CHUNK_BYTES: Final = 64 * 1024
_T = TypeVar("_T")


def _translate(exc: BaseException, request: HttpRequest) -> TransportError:
    where = f"{request.method} {request.url}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsVerifyFailed(f"{where}: TLS certificate refused ({exc.verify_message})")
    if isinstance(exc, TimeoutError | gevent.Timeout):
        return timeout_error(request)
    if isinstance(exc, ConnectionRefusedError | socket.gaierror | ssl.SSLError):
        return ConnectFailed(f"{where}: {exc}")
    return ConnectionLost(f"{where}: {exc!r}")


def _bounded(request: HttpRequest, action: Callable[[], _T]) -> _T:
    """Run one blocking wait under the request's timeout (or what is left before its
    deadline), translating what fails."""
    timeout = gevent.Timeout(request.remaining())
    timeout.start()
    try:
        return action()
    except gevent.Timeout as exc:
        if exc is not timeout:
            raise
        raise _translate(exc, request) from None
    except Exception as exc:  # geventhttpclient raises OSError, ssl and parser errors
        raise _translate(exc, request) from exc
    finally:
        timeout.close()


@dataclass
class _Streamed:
    status: int
    headers: Mapping[str, str]
    _response: HTTPSocketPoolResponse
    _request: HttpRequest

    def iter_bytes(self) -> Iterator[bytes]:
        while chunk := _bounded(self._request, lambda: self._response.read(_CHUNK_BYTES)):
            yield chunk
        if not self._response.message_complete:
            raise ConnectionLost(f"{self._request.method} {self._request.url}: body truncated")


class GeventPort:
    """A `SyncHttpPort` over geventhttpclient, one bounded pool per host."""

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int) -> None:
        def context_factory(**_: Any) -> ssl.SSLContext:
            return ssl_context

        self._pool = HTTPClientPool(
            concurrency=max_connections,
            ssl_context_factory=context_factory,
            insecure=ssl_context.verify_mode == ssl.CERT_NONE,
            connection_timeout=None,
            network_timeout=None,
        )

    def _open_once(self, request: HttpRequest, headers: dict[str, str]) -> HTTPSocketPoolResponse:
        parts = urlsplit(request.url)  # checked by follow_redirects
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"

        def request_once() -> HTTPSocketPoolResponse:
            client = self._pool.get_client(request.url)
            return client.request(request.method, target, body=request.body, headers=headers)

        return _bounded(request, request_once)

    def _open(
        self, request: HttpRequest, raw: bool, visited: list[str] | None = None
    ) -> HTTPSocketPoolResponse:
        def open_once(hop: HttpRequest) -> HTTPSocketPoolResponse:
            return self._open_once(hop, stream_headers(hop) if raw else send_headers(hop))

        def head(response: HTTPSocketPoolResponse) -> tuple[int, str | None]:
            location = response.get("location")
            return response.status_code, location if isinstance(location, str) else None

        def release(response: HTTPSocketPoolResponse) -> None:
            _bounded(request, response.read)
            response.release()

        return follow_redirects(request, open_once, head, release, visited)

    def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        request = begin(request)
        visited: list[str] = []
        response = self._open(request, raw=False, visited=visited)
        try:
            length = response.content_length
            if length is not None and length > request.max_body_bytes:
                raise too_large(request)
            raw = _bounded(request, lambda: response.read(request.max_body_bytes + 1))
            if len(raw) > request.max_body_bytes:
                raise too_large(request)
            if not response.message_complete:
                raise ConnectionLost(f"{request.method} {request.url}: body truncated")
            encoding = response.get("content-encoding")
            decoder = CappedDecoder(request, encoding if isinstance(encoding, str) else None)
            decoder.feed(raw)
            body = decoder.finish()
        finally:
            response.release()
        return HttpResponse(
            response.status_code, lower_headers(response.items()), body, visited[-1]
        )

    @contextmanager
    def stream(self, request: HttpRequest) -> Iterator[_Streamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `iter_bytes` while reading.
        """
        request = begin(request)
        response = self._open(request, raw=True)
        try:
            yield _Streamed(
                response.status_code, lower_headers(response.items()), response, request
            )
        finally:
            response.release()

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()
