"""The small HTTP port the drivers use: send a request, stream a (ranged) body.

Drivers talk to the network only through these two protocols, so the backend is
swappable; `agent.drivers.backends` makes a port of the backend chosen. Backends, chosen by
measurement (docs/http.md):

- asyncio: `aiohttp` (the default: httpx's async pool collapses under concurrency here),
  `streams` (asyncio streams + httptools: the simulator's fleets, the cheapest per request)
  and `httpx` (plain, kept available);
- blocking: `httpx`, and `geventhttpclient` for Locust (gevent-patched processes only).

Every backend translates its library's exceptions into `agent.errors.TransportError`
subclasses here, at this one boundary. HTTP error statuses (4xx, 5xx, 429) are *not*
exceptions: the caller gets the status and decides.

Shared behaviour, whatever the backend:
- TLS is verified by default against the system store; `verify` may name a CA bundle
  file instead, or be False. One SSL context per process and setting (`shared_ssl_context`).
- `HttpRequest.timeout_s` bounds the connection and every wait for bytes (an inactivity
  timeout, as the plugin's URLSession/OkHttp do); `HttpRequest.deadline` (a `time.monotonic()`
  instant, set by the driver) bounds the whole exchange, however slowly bytes trickle in:
  past it, `DeadlinePassed`.
- Every URL is checked before use (`agent.protocol.bounds.url_problem`): `InvalidUrl`, never a
  library exception.
- Redirects are followed (at most `MAX_REDIRECTS`, by `follow_redirects` here, the same for
  every backend), except from https to anything else: `InsecureRedirect`.
- `send` reads a small body capped at `max_body_bytes` and decodes it (gzip, deflate, br) here,
  while decompressing (`CappedDecoder`): a small compressed bomb stops at the cap.
- `stream` yields the raw entity bytes (it asks for `Accept-Encoding: identity`), so a
  `Range: bytes=N-` request resumes a download byte for byte.
- The connection pool is bounded (`max_connections`) and shared by every device using the port.
"""

from __future__ import annotations

import functools
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Final, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import brotli  # type: ignore[import-untyped]  # no stubs published

from agent.errors import TransportError
from agent.protocol.bounds import url_problem

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
    deadline: float | None = None  # time.monotonic() by which the whole exchange must end
    budget_s: float | None = None  # or: this long from when the backend begins it (`begin`)

    def left(self) -> float | None:
        """Seconds until the deadline (None without one).

        Raises:
            DeadlinePassed: the deadline has passed.
        """
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlinePassed(f"{self.method} {self.url[:200]}: exchange deadline passed")
        return left

    def remaining(self) -> float:
        """Seconds for the next wait: `timeout_s`, or less when the deadline is nearer.

        Raises:
            DeadlinePassed: the deadline has passed.
        """
        left = self.left()
        return self.timeout_s if left is None else min(self.timeout_s, left)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # keys lower-cased
    body: bytes
    url: str = ""  # the URL that answered, after redirects ("" when not known)


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


class DeadlinePassed(TransportTimeout):
    """The exchange did not end by `HttpRequest.deadline` (bytes trickling in, say)."""


class ConnectionLost(TransportError):
    """The connection broke mid-exchange: reset, closed early, truncated or malformed HTTP."""


class ResponseTooLarge(TransportError):
    """`send` read more than the request's `max_body_bytes`."""


class InvalidUrl(TransportError):
    """The URL cannot be fetched (malformed, or not http/https)."""


class InsecureRedirect(TransportError):
    """A redirect from https to plain http (or anything but https): refused, never followed."""


class BadEncoding(TransportError):
    """The body's Content-Encoding is unknown or its compressed bytes are corrupt."""


# -- helpers shared by the backends -----------------------------------------------------


@functools.cache
def shared_ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    """The process-wide verifying SSL context (system CAs, or only those of `cafile`).

    Creating a context loads and parses a CA bundle (slow, and about a megabyte each), so
    every client of a process shares one per `cafile`. Under gevent, call it after
    monkey-patching (Locust does so on import) so that it is gevent's cooperative kind.

    TLS below 1.2 is refused (Python's default since 3.10, set here so that no OpenSSL
    configuration lowers it).

    Raises:
        FileNotFoundError / ssl.SSLError: `cafile` is missing or not a PEM CA bundle.
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


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


def begin(request: HttpRequest) -> HttpRequest:
    """The request as a backend begins it: a `budget_s` becomes a deadline from now. (A driver
    gives the budget, not an instant, so that time spent before the backend is reached, e.g.
    a simulated network's waits on its virtual clock, never counts against the exchange.)"""
    if request.budget_s is None:
        return request
    return replace(request, deadline=time.monotonic() + request.budget_s, budget_s=None)


def send_headers(request: HttpRequest) -> dict[str, str]:
    """The request's headers, offering only the encodings `CappedDecoder` decodes."""
    headers = dict(request.headers)
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["Accept-Encoding"] = ACCEPT_ENCODING
    return headers


def checked(request: HttpRequest) -> HttpRequest:
    """The request, once its URL is known to be fetchable and its deadline not passed.

    Raises:
        InvalidUrl: the URL is malformed, too long or not http(s). DeadlinePassed.
    """
    problem = url_problem(request.url)
    if problem:
        raise InvalidUrl(f"{request.method} {request.url[:200]}: {problem}")
    request.remaining()
    return request


def timeout_error(request: HttpRequest) -> TransportTimeout:
    """The error for a timeout: `DeadlinePassed` when the exchange's deadline is the cause."""
    where = f"{request.method} {request.url}"
    if request.deadline is not None and time.monotonic() >= request.deadline:
        return DeadlinePassed(f"{where}: exchange deadline passed")
    return TransportTimeout(f"{where}: no answer within {request.timeout_s} s")


REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def redirected(request: HttpRequest, status: int, location: str) -> HttpRequest:
    """The request a redirect asks for (POST becomes GET on 301/302/303, as browsers do).

    Raises:
        InsecureRedirect: from https to anything else. InvalidUrl: an unusable target.
    """
    target = urljoin(request.url, location)
    if urlsplit(request.url).scheme == "https" and urlsplit(target).scheme != "https":
        raise InsecureRedirect(
            f"{request.method} {request.url}: refused a redirect from https to {target[:200]}"
        )
    method, body = request.method, request.body
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
    return replace(request, method=method, url=target, body=body)


_R = TypeVar("_R")


def follow_redirects(
    request: HttpRequest,
    open_once: Callable[[HttpRequest], _R],
    head: Callable[[_R], tuple[int, str | None]],
    release: Callable[[_R], None],
    visited: list[str] | None = None,
) -> _R:
    """Open `request`, following redirects (see `redirected`); returns the final response.

    `head` gives a response's status and Location; `release` frees a redirect's response;
    `visited`, when given, gets each URL opened (the last one answered).

    Raises:
        TransportError: from `open_once`; InsecureRedirect, InvalidUrl; ConnectionLost after
            more than MAX_REDIRECTS.
    """
    for _ in range(MAX_REDIRECTS + 1):
        response = open_once(checked(request))
        if visited is not None:
            visited.append(request.url)
        status, location = head(response)
        if status not in REDIRECTS or not location:
            return response
        release(response)
        request = redirected(request, status, location)
    raise ConnectionLost(f"{request.method} {request.url}: more than {MAX_REDIRECTS} redirects")


async def afollow_redirects(
    request: HttpRequest,
    open_once: Callable[[HttpRequest], Awaitable[_R]],
    head: Callable[[_R], tuple[int, str | None]],
    release: Callable[[_R], Awaitable[None]],
    visited: list[str] | None = None,
) -> _R:
    """`follow_redirects` for asyncio backends."""
    for _ in range(MAX_REDIRECTS + 1):
        response = await open_once(checked(request))
        if visited is not None:
            visited.append(request.url)
        status, location = head(response)
        if status not in REDIRECTS or not location:
            return response
        await release(response)
        request = redirected(request, status, location)
    raise ConnectionLost(f"{request.method} {request.url}: more than {MAX_REDIRECTS} redirects")


ACCEPT_ENCODING: Final = "gzip, deflate, br"


class CappedDecoder:
    """Decodes a response body's Content-Encoding as it arrives, never holding more than the
    request's `max_body_bytes` of output: the cap is enforced while decompressing, so a few
    kilobytes that expand to gigabytes stop at the cap (zlib `max_length`, brotli
    `output_buffer_limit`).
    """

    def __init__(self, request: HttpRequest, encoding: str | None) -> None:
        self._request = request
        self._body = bytearray()
        self._zlib: zlib._Decompress | None = None
        self._brotli: brotli.Decompressor | None = None
        name = (encoding or "identity").strip().lower()
        if name in ("gzip", "x-gzip", "deflate"):
            self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
        elif name == "br":
            self._brotli = brotli.Decompressor()
        elif name != "identity":
            raise BadEncoding(f"{request.method} {request.url}: unsupported encoding {name!r}")

    def _take(self, data: bytes) -> None:
        self._body += data
        if len(self._body) > self._request.max_body_bytes:
            raise too_large(self._request)

    def _room(self) -> int:
        return self._request.max_body_bytes - len(self._body) + 1

    def feed(self, chunk: bytes) -> None:
        """Take the next raw bytes.

        Raises:
            ResponseTooLarge: the decoded body passed the cap. BadEncoding: corrupt bytes.
        """
        try:
            if self._zlib is not None:
                while chunk:
                    self._take(self._zlib.decompress(chunk, self._room()))
                    chunk = self._zlib.unconsumed_tail
            elif self._brotli is not None:
                self._take(self._brotli.process(chunk, output_buffer_limit=self._room()))
                while not self._brotli.can_accept_more_data():
                    out = self._brotli.process(b"", output_buffer_limit=self._room())
                    if not out:
                        break
                    self._take(out)
            else:
                self._take(chunk)
        except (zlib.error, brotli.error) as exc:
            where = f"{self._request.method} {self._request.url}"
            raise BadEncoding(f"{where}: corrupt compressed body: {exc}") from None

    def finish(self) -> bytes:
        """The decoded body.

        Raises:
            BadEncoding: the compressed stream ended early. ResponseTooLarge.
        """
        where = f"{self._request.method} {self._request.url}"
        if self._zlib is not None:
            self._take(self._zlib.flush())
            if not self._zlib.eof:
                raise BadEncoding(f"{where}: compressed body ended early")
        elif self._brotli is not None and not self._brotli.is_finished():
            raise BadEncoding(f"{where}: compressed body ended early")
        return bytes(self._body)


def too_large(request: HttpRequest) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"{request.method} {request.url}: body larger than {request.max_body_bytes} bytes"
    )
