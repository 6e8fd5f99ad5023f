"""The driver loop, written once for both drivers: retry, observe, download, as generators.

`DriverLoop` turns one lifecycle event into everything it leads to, in the manner of httpx's
`auth_flow`: a generator that yields *operations* (`Send`, `Stream`, `Sleep`, `Offload`) and
receives their results. The asyncio driver (`aio.py`) and the blocking driver (`sync.py`) each
only perform those four operations with their own I/O (`drive`), so the retry-and-observe flow,
the order of effects, the download steps and the "a device interrupted by anything but an
`AgentError` is closed" rule exist once.

An operation that raises sends its exception back into the generator (`Exception` only; a
cancellation or an interrupt closes the generator instead), exactly where an inline call
would have raised it. Tenacity's retry policy runs in its plain iterator form; its waits are
not slept here but yielded as `Sleep`, so the asyncio driver awaits them on its clock.

Measured against writing the loop twice (tests/benchmarks, `agent check` group): see
docs/agent.md, "One driver loop".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tenacity import Retrying

from agent.core.effects import DownloadBundle, SendRequest
from agent.core.events import Event, ResponseReceived, TransportFailed
from agent.drivers.fetch import Transfer
from agent.drivers.http import HttpRequest, HttpResponse
from agent.drivers.runtime import DeviceRuntime, IoEffect, ServerBusy
from agent.errors import AgentError, TransportError
from agent.protocol.base import OutgoingRequest

T = TypeVar("T")


@dataclass(frozen=True)
class Send:
    """Send `request`, read its small body: reply with the `HttpResponse`."""

    request: HttpRequest


@dataclass(frozen=True)
class Stream:
    """Open `request` as a stream; pass the head to `sink.open`, each body chunk to
    `sink.feed`, in order (the driver's only per-chunk work). Reply with None."""

    request: HttpRequest
    sink: Transfer


@dataclass(frozen=True)
class Sleep:
    """Wait `seconds` on the device's clock (a retry backoff)."""

    seconds: float


@dataclass(frozen=True)
class Offload:
    """Run CPU- or disk-heavy `work` (hashing, replaying a partial, unpacking) and reply with
    its result: in a worker thread under asyncio, so the event loop never blocks on it."""

    work: Callable[[], Any]


Op = Send | Stream | Sleep | Offload
Ops = Generator[Op, Any, T]


class _Counted:
    """A transfer seen through the observer: remembers the status and counts the bytes."""

    def __init__(self, inner: Transfer) -> None:
        self.name = inner.name
        self.heavy_start = inner.heavy_start
        self._inner = inner
        self.status: int | None = None
        self.size = 0

    def start(self) -> HttpRequest:
        return self._inner.start()

    def open(self, status: int, headers: Mapping[str, str]) -> None:
        self.status = status
        self._inner.open(status, headers)

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._inner.feed(chunk)

    def complete(self) -> None:
        self._inner.complete()


class DriverLoop:
    """The I/O flow of one device, as operations; one per device, used under its lock."""

    def __init__(self, runtime: DeviceRuntime) -> None:
        self._rt = runtime
        self._waits: list[float] = []
        # One policy object per device, reused by every exchange and transfer (building one
        # per request cost more than the agent's decisions); its waits come back as `Sleep`.
        self._retrying = Retrying(sleep=self._waits.append, **runtime.retry_policy())
        self.closed = False

    def run(self, event: Event) -> Ops[None]:
        """Handle one lifecycle event and everything it triggers, to completion.

        Raises:
            LocalError: the disk failed (the device stays usable).
            RuntimeError: the device was killed or closed.
        """
        if self.closed:
            raise RuntimeError("this device was killed or closed; open it again")
        flow = self._rt.flow(event)
        try:
            effect = next(flow)
            while True:
                effect = flow.send((yield from self._perform(effect)))
        except StopIteration:
            pass
        except AgentError:
            raise  # a local failure: the next commit writes the whole state again
        except BaseException:
            self.closed = True  # killed, cancelled or a bug: reopen the folder
            raise

    def _perform(self, effect: IoEffect) -> Ops[list[Event]]:
        if isinstance(effect, SendRequest):
            name = effect.request.name
            try:
                response = yield from self.exchange(effect.request)
            except TransportError as exc:
                return [TransportFailed(name, exc)]
            return [
                ResponseReceived(
                    name, response.status, response.headers, response.body, response.url
                )
            ]
        return (yield from self._download(effect))

    def exchange(self, outgoing: OutgoingRequest) -> Ops[HttpResponse]:
        """One request with its retries; a busy server's last answer is returned as it is.

        Raises:
            TransportError: every attempt failed (or one that a retry cannot fix).
        """
        request = self._rt.http_request(outgoing)
        try:
            for attempt in self._retrying:
                with attempt:
                    yield from self._backoff()
                    started = time.perf_counter()
                    try:
                        response: HttpResponse = yield Send(request)
                    except TransportError as exc:
                        self._rt.observe(outgoing.name, request, None, started, 0, exc)
                        raise
                    self._rt.observe(
                        outgoing.name, request, response.status, started, len(response.body), None
                    )
                    return self._rt.check_answer(response)
        except ServerBusy as busy:
            return busy.response
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _backoff(self) -> Ops[None]:
        while self._waits:
            yield Sleep(self._waits.pop())

    def _download(self, effect: DownloadBundle) -> Ops[list[Event]]:
        fetch = self._rt.fetch(effect)
        try:
            yield Offload(fetch.prepare)
            for transfer in fetch.transfers():
                yield from self._transfer(transfer)
            yield Offload(fetch.install)
        except AgentError as exc:
            return self._rt.download_failed(fetch, exc)
        finally:
            fetch.close()
        return self._rt.installed(effect.bundle_id)

    def _transfer(self, transfer: Transfer) -> Ops[None]:
        for attempt in self._retrying:
            with attempt:
                yield from self._backoff()
                counted = _Counted(transfer)
                if transfer.heavy_start:
                    request: HttpRequest = yield Offload(transfer.start)
                else:
                    request = transfer.start()
                started, error = time.perf_counter(), None
                try:
                    yield Stream(request, counted)
                    transfer.complete()
                except AgentError as exc:
                    error = exc
                    raise
                finally:
                    rt, size = self._rt, counted.size
                    rt.observe(transfer.name, request, counted.status, started, size, error)


@dataclass(frozen=True)
class Done(Generic[T]):
    """The generator returned `value`."""

    value: T


def step(ops: Ops[T], reply: Any, error: Exception | None) -> Op | Done[T]:
    """Advance `ops` with the last operation's result (or its exception)."""
    try:
        return ops.throw(error) if error is not None else ops.send(reply)
    except StopIteration as stop:
        return Done(stop.value)
