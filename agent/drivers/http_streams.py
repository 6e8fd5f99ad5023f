"""The asyncio-streams backend of the asyncio HTTP port: HTTP/1.1 on `asyncio` streams, each
response parsed by `httptools` (llhttp, the parser uvicorn uses), keep-alive connections
pooled per origin. The simulator's fleets use it (`otasim run --http`, default): per request
it costs the fleet process a fraction of aiohttp's client machinery (measured: docs/http.md,
`tests/benchmarks/bench_http_cpu.py`). `aiohttp` stays the port's general default.

Redirects, body decoding and deadlines are the port's own (`afollow_redirects`,
`CappedDecoder`, `HttpRequest.remaining`), as for every backend. Each wait (connecting, each
read) is bounded by `timeout_s` or the exchange's deadline, whichever is nearer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httptools

from agent.drivers.http import (
    CappedDecoder,
    ConnectFailed,
    ConnectionLost,
    HttpRequest,
    HttpResponse,
    TlsVerifyFailed,
    afollow_redirects,
    begin,
    lower_headers,
    send_headers,
    stream_headers,
    timeout_error,
    too_large,
)

_READ_BYTES: Final = 64 * 1024
Origin = tuple[str, str, int]  # scheme, host, port


class _Answer:
    """httptools' callbacks: one response's head and the body bytes not yet taken."""

    __slots__ = ("body", "complete", "headers", "headers_done", "parser", "reusable")

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.reusable = False  # HTTP/1.1 without `Connection: close` (or 1.0 with keep-alive)
        self.body: list[bytes] = []
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        self.reusable = self.parser.should_keep_alive()  # asked now: reset once complete

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    """One HTTP/1.1 connection; one exchange at a time."""

    __slots__ = ("origin", "reader", "reused", "writer")

    def __init__(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin, self.reader, self.writer = origin, reader, writer
        self.reused = False

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Exchange:
    """A response being read: its head, then its body as it arrives."""

    request: HttpRequest
    connection: _Connection
    answer: _Answer
    status: int = 0
    headers: Mapping[str, str] | None = None
    until_close: bool = False  # no length and not chunked: the body ends with the connection

    async def _feed(self) -> bool:
        """Read and parse the next bytes; False at the end of the connection."""
        async with asyncio.timeout(self.request.remaining()):
            data = await self.connection.reader.read(_READ_BYTES)
        if not data:
            return False
        try:
            self.answer.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise ConnectionLost(f"{_where(self.request)}: malformed HTTP answer: {exc}") from exc
        return True

    async def read_head(self) -> None:
        while not self.answer.headers_done:
            if not await self._feed():
                raise ConnectionLost(f"{_where(self.request)}: connection closed before an answer")
        self.status = self.answer.parser.get_status_code()
        self.headers = lower_headers(self.answer.headers)
        self.until_close = (
            "content-length" not in self.headers and "transfer-encoding" not in self.headers
        )

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (raw entity: no decoding here)."""
        answer = self.answer
        while True:
            if answer.body:
                taken, answer.body = answer.body, []
                for chunk in taken:
                    yield chunk
            if answer.complete:
                return
            if not await self._feed():
                if self.until_close:
                    answer.complete = True
                    continue
                raise ConnectionLost(f"{_where(self.request)}: connection closed mid-body")

    def keep_alive(self) -> bool:
        return self.answer.complete and not self.until_close and self.answer.reusable


def _where(request: HttpRequest) -> str:
    return f"{request.method} {request.url}"


def _origin(url: str) -> tuple[Origin, str]:
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return (scheme, host, port), target


def _request_bytes(request: HttpRequest, headers: Mapping[str, str], target: str) -> bytes:
    parts = urlsplit(request.url)
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
    lines += [
        f"{name}: {value}"
        for name, value in headers.items()
        if name.lower() not in ("host", "content-length")
    ]
    body = request.body or b""
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


class StreamsPort:
    """An `AsyncHttpPort` on asyncio streams: keep-alive connections pooled per origin, at
    most `max_connections` open at once (an exchange waits for a free one).
    """

    def __init__(self, ssl_context: ssl.SSLContext, *, max_connections: int) -> None:
        self._ssl_context = ssl_context
        self._max = max_connections
        self._idle: dict[Origin, list[_Connection]] = {}
        self._count = 0  # connections open (in use or idle)
        self._waiters: list[asyncio.Future[None]] = []
        self._closing: set[asyncio.Future[None]] = set()

    # -- the pool ----------------------------------------------------------------------------

    async def _acquire(self, origin: Origin, request: HttpRequest) -> _Connection:
        while True:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if connection.usable():
                    connection.reused = True
                    return connection
                self._discard(connection)  # the server closed it while it was idle
            if self._count < self._max or self._close_an_idle_one():
                self._count += 1
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(request.remaining()):
                    await waiter
            except TimeoutError as exc:
                raise timeout_error(request) from exc
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        try:
            return await self._connect(origin, request)
        except BaseException:
            self._release_slot()
            raise

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_an_idle_one(self) -> bool:
        for idle in self._idle.values():
            if idle:
                idle.pop().close()
                self._count -= 1
                return True
        return False

    def _discard(self, connection: _Connection) -> None:
        """Close a connection that will not be reused; `aclose` waits for it to finish (a TLS
        connection's shutdown takes a few more turns of the loop)."""
        connection.close()
        closing = asyncio.ensure_future(_closed(connection))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        self._release_slot()

    def _release_slot(self) -> None:
        self._count -= 1
        self._wake()

    def _give_back(self, exchange: _Exchange) -> None:
        """Pool the connection when its answer was read to the end and it may be kept."""
        connection = exchange.connection
        if exchange.keep_alive() and connection.usable():
            self._idle.setdefault(connection.origin, []).append(connection)
            self._wake()
        else:
            self._discard(connection)

    async def _connect(self, origin: Origin, request: HttpRequest) -> _Connection:
        scheme, host, port = origin
        tls = self._ssl_context if scheme == "https" else None
        try:
            async with asyncio.timeout(request.remaining()):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None, limit=_READ_BYTES
                )
        except ssl.SSLCertVerificationError as exc:
            raise TlsVerifyFailed(f"{_where(request)}: {exc.verify_message}") from exc
        except TimeoutError as exc:
            raise timeout_error(request) from exc
        except OSError as exc:  # refused, unreachable, not resolved, TLS handshake failed
            raise ConnectFailed(f"{_where(request)}: {exc}") from exc
        return _Connection(origin, reader, writer)

    # -- exchanges ---------------------------------------------------------------------------

    async def _open_once(self, hop: HttpRequest, raw: bool) -> _Exchange:
        """One exchange on a pooled or new connection, up to the response's head. A pooled
        connection the server closed meanwhile (no byte of an answer came) is replaced once
        by a new one."""
        origin, target = _origin(hop.url)
        data = _request_bytes(hop, stream_headers(hop) if raw else send_headers(hop), target)
        while True:
            connection = await self._acquire(origin, hop)
            answer = _Answer()
            exchange = _Exchange(hop, connection, answer)
            try:
                connection.writer.write(data)
                await exchange.read_head()
                return exchange
            except TimeoutError as exc:
                self._discard(connection)
                raise timeout_error(hop) from exc
            except (OSError, ConnectionLost) as exc:
                self._discard(connection)
                if not connection.reused or answer.headers:
                    if isinstance(exc, ConnectionLost):
                        raise
                    raise ConnectionLost(f"{_where(hop)}: {exc!r}") from exc
            except BaseException:
                self._discard(connection)
                raise

    async def _open(self, request: HttpRequest, raw: bool) -> _Exchange:
        async def open_once(hop: HttpRequest) -> _Exchange:
            return await self._open_once(hop, raw)

        async def release(exchange: _Exchange) -> None:
            try:
                async for _ in exchange.chunks():  # a redirect's small body: keep the connection
                    pass
            finally:
                self._finish(exchange)

        def head(exchange: _Exchange) -> tuple[int, str | None]:
            assert exchange.headers is not None
            return exchange.status, exchange.headers.get("location")

        return await afollow_redirects(request, open_once, head, release)

    def _finish(self, exchange: _Exchange) -> None:
        """Give the connection back when its answer was read to the end, else close it."""
        if exchange.answer.complete:
            self._give_back(exchange)
        else:
            self._discard(exchange.connection)

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Send and read the whole (small) body.

        Raises:
            TransportError: a `agent.drivers.http` subclass saying what failed.
        """
        request = begin(request)
        exchange = await self._open(request, raw=False)
        assert exchange.headers is not None
        headers = exchange.headers
        try:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > request.max_body_bytes:
                raise too_large(request)
            decoder = CappedDecoder(request, headers.get("content-encoding"))
            async for chunk in _translated(exchange):
                decoder.feed(chunk)
            content = decoder.finish()
        finally:
            self._finish(exchange)
        return HttpResponse(exchange.status, headers, content)

    @asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[_Streamed]:
        """Open a streamed response: raw entity bytes, for ranged bundle downloads.

        Raises:
            TransportError: on opening, and from `aiter_bytes` while reading.
        """
        request = begin(request)
        exchange = await self._open(request, raw=True)
        try:
            yield _Streamed(exchange)
        finally:
            self._finish(exchange)

    async def aclose(self) -> None:
        """Close every pooled connection (waiting until each is closed)."""
        idle = [connection for pooled in self._idle.values() for connection in pooled]
        self._idle.clear()
        for connection in idle:
            connection.close()
            self._count -= 1
        await asyncio.gather(*self._closing, *(_closed(c) for c in idle))


async def _closed(connection: _Connection) -> None:
    with contextlib.suppress(OSError):
        await connection.writer.wait_closed()


async def _translated(exchange: _Exchange) -> AsyncIterator[bytes]:
    """The body's chunks, a timeout or a socket error as the port's `TransportError`."""
    request = exchange.request
    try:
        async for chunk in exchange.chunks():
            yield chunk
    except TimeoutError as exc:
        raise timeout_error(request) from exc
    except OSError as exc:
        raise ConnectionLost(f"{_where(request)}: {exc!r}") from exc


class _Streamed:
    def __init__(self, exchange: _Exchange) -> None:
        assert exchange.headers is not None
        self._exchange = exchange
        self.status = exchange.status
        self.headers = exchange.headers

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return _translated(self._exchange)
