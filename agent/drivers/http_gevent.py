"""The geventhttpclient backend of the blocking port: Locust's fast client.

Only for gevent-patched processes (Locust): `make_sync_port` checks. geventhttpclient
has no per-request timeout and no redirects, so both are done here: a `gevent.Timeout`
around each wait, and a short redirect loop.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urljoin, urlsplit

import gevent  # type: ignore[import-untyped]
from geventhttpclient.client import HTTPClientPool
from geventhttpclient.response import HTTPSocketPoolResponse

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

_CHUNK_BYTES: Final = 64 * 1024
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_T = TypeVar("_T")


def _translate(exc: BaseException, request: HttpRequest) -> TransportError:
    where = f"{request.method} {request.url}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsVerifyFailed(f"{where}: {exc.verify_message}")
    if isinstance(exc, TimeoutError | gevent.Timeout):
        return TransportTimeout(f"{where}: no answer within {request.timeout_s} s")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror | ssl.SSLError):
        return ConnectFailed(f"{where}: {exc}")
    return ConnectionLost(f"{where}: {exc!r}")


def _bounded(request: HttpRequest, action: Callable[[], _T]) -> _T:
    """Run one blocking wait under the request's timeout, translating what fails."""
    timeout = gevent.Timeout(request.timeout_s)
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


def _redirected(request: HttpRequest, status: int, location: str) -> HttpRequest:
    method, body = request.method, request.body
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
    return HttpRequest(
        method,
        urljoin(request.url, location),
        request.headers,
        body,
        request.timeout_s,
        request.max_body_bytes,
    )


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
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidUrl(f"{request.method} {request.url}: not an http(s) URL")
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"

        def request_once() -> HTTPSocketPoolResponse:
            client = self._pool.get_client(request.url)
            return client.request(request.method, target, body=request.body, headers=headers)

        return _bounded(request, request_once)

    def _open(self, request: HttpRequest, raw: bool) -> HTTPSocketPoolResponse:
        for _ in range(MAX_REDIRECTS + 1):
            headers = stream_headers(request) if raw else dict(request.headers)
            response = self._open_once(request, headers)
            location = response.get("location")
            if response.status_code not in _REDIRECTS or not isinstance(location, str):
                return response
            _bounded(request, response.read)
            response.release()
            request = _redirected(request, response.status_code, location)
        raise ConnectionLost(f"{request.method} {request.url}: more than {MAX_REDIRECTS} redirects")

    def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        response = self._open(request, raw=False)
        try:
            length = response.content_length
            if length is not None and length > request.max_body_bytes:
                raise too_large(request)
            body = _bounded(request, lambda: response.read(request.max_body_bytes + 1))
            if len(body) > request.max_body_bytes:
                raise too_large(request)
            if not response.message_complete:
                raise ConnectionLost(f"{request.method} {request.url}: body truncated")
        finally:
            response.release()
        return HttpResponse(response.status_code, lower_headers(response.items()), body)

    @contextmanager
    def stream(self, request: HttpRequest) -> Iterator[_Streamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `iter_bytes` while reading.
        """
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
