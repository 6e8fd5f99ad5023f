"""The small HTTP port the drivers use: send a request, stream a (ranged) body.

Drivers talk to the network only through these two protocols, so the backend is
swappable: plain httpx everywhere, and the fastest backend chosen by measurement
for fleets and for Locust (see docs). The simulator's network shaping wraps a port.

Every backend translates its library's exceptions into `agent.errors.TransportError`
(and subclasses) here, at this one boundary. HTTP error statuses are *not* exceptions:
the caller gets the status and decides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout_s: float = 20.0


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
