"""The small HTTP port the drivers use: send a request, stream a (ranged) body.

Drivers talk to the network only through these two protocols, so the backend is
swappable; `agent.drivers.backends` makes a port of the backend chosen. Backends, chosen by
measurement (docs/http.md):

- asyncio: `aiohttp` (the default for fleets: httpx's async pool collapses under
  concurrency here) and `httpx` (plain, kept available);
- blocking: `httpx`, and `geventhttpclient` for Locust (gevent-patched processes only).

Every backend translates its library's exceptions into `agent.errors.TransportError`
subclasses here, at this one boundary. HTTP error statuses (4xx, 5xx, 429) are *not*
exceptions: the caller gets the status and decides.

Shared behaviour, whatever the backend:
- TLS is verified by default against the system store; `verify` may name a CA bundle
  file instead, or be False. One SSL context per process and setting (`shared_ssl_context`).
- `HttpRequest.timeout_s` bounds the connection and every wait for bytes (an inactivity
  timeout, as the plugin's URLSession/OkHttp do); overall deadlines belong to the driver.
- Redirects are followed (at most `MAX_REDIRECTS`).
- `send` reads a small body, decoded (gzip), capped at `max_body_bytes`.
- `stream` yields the raw entity bytes (it asks for `Accept-Encoding: identity`), so a
  `Range: bytes=N-` request resumes a download byte for byte.
- The connection pool is bounded (`max_connections`) and shared by every device using the port.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Final, Protocol

from agent.errors import TransportError

MAX_REDIRECTS: Final = 5
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout_s: float = 20.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # `send` only; streams are capped by the caller


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes


class StreamedResponse(Protocol):
    status: int
    headers: Mapping[str, str]  # keys lower-cased


class AsyncStreamedResponse(StreamedResponse, Protocol):
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class SyncStreamedResponse(StreamedResponse, Protocol):
    def iter_bytes(self) -> Iterator[bytes]: ...


class AsyncHttpPort(Protocol):
    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body. Raises TransportError."""
        ...

    def stream(self, request: HttpRequest) -> AbstractAsyncContextManager[AsyncStreamedResponse]:
        """Open a streamed response (bundle downloads). Raises TransportError."""
        ...

    async def aclose(self) -> None: ...


class SyncHttpPort(Protocol):
    def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body. Raises TransportError."""
        ...

    def stream(self, request: HttpRequest) -> AbstractContextManager[SyncStreamedResponse]:
        """Open a streamed response (bundle downloads). Raises TransportError."""
        ...

    def close(self) -> None: ...


# -- the transport errors every backend maps its library's exceptions to ------------------


class ConnectFailed(TransportError):
    """No connection could be opened (refused, unreachable, name not resolved, TLS handshake)."""


class TlsVerifyFailed(ConnectFailed):
    """The server's certificate did not verify against the trusted CAs or its host name."""


class TransportTimeout(TransportError):
    """Connecting, or waiting for the next bytes, took longer than `timeout_s`."""


class ConnectionLost(TransportError):
    """The connection broke mid-exchange: reset, closed early, truncated or malformed HTTP."""


class ResponseTooLarge(TransportError):
    """`send` read more than the request's `max_body_bytes`."""


class InvalidUrl(TransportError):
    """The URL cannot be fetched (malformed, or not http/https)."""


# -- helpers shared by the backends -----------------------------------------------------


@functools.cache
def shared_ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    """The process-wide verifying SSL context (system CAs, or only those of `cafile`).

    Creating a context loads and parses a CA bundle (slow, and about a megabyte each), so
    every client of a process shares one per `cafile`. Under gevent, call it after
    monkey-patching (Locust does so on import) so that it is gevent's cooperative kind.

    Raises:
        FileNotFoundError / ssl.SSLError: `cafile` is missing or not a PEM CA bundle.
    """
    return ssl.create_default_context(cafile=cafile)


@functools.cache
def _unverified_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ssl_context_for(verify: bool | str) -> ssl.SSLContext:
    """The shared context for a `verify` setting: True, a CA bundle path, or False."""
    if verify is True:
        return shared_ssl_context()
    if verify is False:
        return _unverified_ssl_context()
    return shared_ssl_context(verify)


def lower_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Response headers with lower-cased names; repeated headers joined with ", "."""
    merged: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def stream_headers(request: HttpRequest) -> dict[str, str]:
    """The request's headers, asking for the raw entity unless the caller chose otherwise."""
    headers = dict(request.headers)
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["Accept-Encoding"] = "identity"
    return headers


def too_large(request: HttpRequest) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"{request.method} {request.url}: body larger than {request.max_body_bytes} bytes"
    )
