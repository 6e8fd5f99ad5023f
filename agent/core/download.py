"""One file download as a sans-I/O machine: which range to fetch, and when to stop.

The drivers' fetchers (`agent.drivers.fetch` for a full zip, `agent.drivers.delta` for each
file of a manifest) move the bytes, write them and run them through the verifier; every
decision about the transfer is taken here, from events they report, and comes back as effects
they perform in order:

    events (past tense)                      effects (imperative)
    AttemptStarted(partial_bytes, at)   ->   EnsureFreeSpace, FetchRange(offset, deadline)
    HeadReceived(status, headers, at)   ->   RestartFromZero, EnsureFreeSpace, StopAttempt
    ChunkReceived(size, at)             ->   ReportProgress, StopAttempt
    BodyEnded(at)                       ->   CheckDigest, StopAttempt
    DigestChecked(error)                ->   KeepVerified, RestartFromZero, StopAttempt

`StopAttempt(error)` is always last: the fetcher raises its error. A `TransportError` ends
the attempt and the driver's retry policy starts another (`AttemptStarted` again); a
`DownloadStopped` (the deadline passed, the transfer stalled, the URL was refused) and a
`VerificationError` (over the size cap, a digest that does not match a transfer from byte
0) end the download.

The decisions:

* **Resume.** An attempt asks for `Range: bytes=<partial>-` when a partial download is kept;
  a 206 must answer exactly that range, else the partial is dropped and the attempt retried.
  A 200 to a ranged request restarts from byte 0 in the same attempt; a 416 drops the
  partial and retries.
* **Torn partials.** A download that resumed a partial and does not verify may have been
  torn by an earlier kill: it restarts from zero once, as a transport failure. Only a
  download from byte 0 that does not verify is final.
* **Size cap.** A body announced (`content-length`), kept or grown past `max_bundle_bytes`
  is refused, final. With `shared_cap` (a manifest's files) the cap bounds every byte the
  download received, over all its files and attempts.
* **Deadline and stall.** `download_timeout_s` bounds the whole download; a body trickling
  in slower than `min_download_bytes_per_s` over `stall_window_s` stops long before it. Both
  run on the time the fetchers pass in `at`: the real monotonic clock, never the device's
  (which the simulator speeds up), because they are network timeouts.
* **Free space.** At the start, twice the plugin's size estimate; once the length is known,
  twice what is still to come (the raw partial and the plain zip are both written).

`DOWNLOAD_TRANSITIONS` lists which event may come in which phase; any other is a bug
(`RuntimeError`), as for `BUNDLE_TRANSITIONS` and `ACTIVITY_TRANSITIONS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from agent.config import AgentConfig
from agent.errors import (
    DownloadStopped,
    RateLimited,
    TransportError,
    VerificationError,
)

ZIP_ESTIMATE = 50 * 1024 * 1024  # the plugin's size estimate before a download
TRANSFER_PERCENT = 70  # as the plugin: 0..70 while transferring, 90 when unpacked
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


# -- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptStarted:
    """An attempt begins; `partial_bytes` of the file are kept from earlier attempts."""

    partial_bytes: int
    at: float


@dataclass(frozen=True)
class HeadReceived:
    """The status and headers (lower-cased) of the attempt's answer; `retry_after_s` is the
    server's hint on a 429."""

    status: int
    headers: Mapping[str, str]
    at: float
    retry_after_s: float | None = None


@dataclass(frozen=True)
class ChunkReceived:
    size: int
    at: float


@dataclass(frozen=True)
class BodyEnded:
    at: float


@dataclass(frozen=True)
class DigestChecked:
    """The verifier's verdict on the whole file (None: it matched)."""

    error: VerificationError | None


DownloadEvent = AttemptStarted | HeadReceived | ChunkReceived | BodyEnded | DigestChecked


# -- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsureFreeSpace:
    """Fail with `LocalError("insufficient_disk_space")` unless `bytes` are free."""

    bytes: int


@dataclass(frozen=True)
class FetchRange:
    """Ask for the file from byte `offset` (a `Range` header when > 0); the exchange must end
    by `deadline` (the same monotonic clock as the events' `at`)."""

    offset: int
    deadline: float


@dataclass(frozen=True)
class RestartFromZero:
    """Drop the partial download and restart the verifier: byte 0 comes next."""


@dataclass(frozen=True)
class ReportProgress:
    percent: int


@dataclass(frozen=True)
class CheckDigest:
    """Finish the verifier and report `DigestChecked`."""


@dataclass(frozen=True)
class KeepVerified:
    """The file verified: keep it (drop the partial download; it will not be resumed)."""


@dataclass(frozen=True)
class StopAttempt:
    """End the attempt by raising `error` (always the last effect)."""

    error: TransportError | VerificationError


DownloadEffect = (
    EnsureFreeSpace
    | FetchRange
    | RestartFromZero
    | ReportProgress
    | CheckDigest
    | KeepVerified
    | StopAttempt
)


# -- the machine --------------------------------------------------------------------------


class Phase(Enum):
    NEW = "new"  # no attempt yet
    REQUESTED = "requested"  # a range was asked for; the head has not come
    RECEIVING = "receiving"  # the head was accepted: body bytes arrive
    ENDED = "ended"  # the body ended at its announced length: the digest is checked
    INTERRUPTED = "interrupted"  # the attempt failed; another may start
    VERIFIED = "verified"  # final: the file is whole and verified
    FAILED = "failed"  # final: over the cap, does not verify, stopped


DOWNLOAD_TRANSITIONS: Mapping[Phase, Mapping[type, Phase]] = {
    Phase.NEW: {AttemptStarted: Phase.REQUESTED},
    # a connection cut mid-way is seen as the next attempt starting
    Phase.REQUESTED: {AttemptStarted: Phase.REQUESTED, HeadReceived: Phase.RECEIVING},
    Phase.RECEIVING: {
        AttemptStarted: Phase.REQUESTED,
        ChunkReceived: Phase.RECEIVING,
        BodyEnded: Phase.ENDED,
    },
    Phase.ENDED: {DigestChecked: Phase.VERIFIED},
    Phase.INTERRUPTED: {AttemptStarted: Phase.REQUESTED},
    Phase.VERIFIED: {},
    Phase.FAILED: {},
}
"""phase -> event type -> the phase it leads to when the event stops nothing. An event that
ends in `StopAttempt` leads to INTERRUPTED (a `TransportError`: retried) or FAILED."""


@dataclass
class Pace:
    """The deadline and stall window of one download, shared by all of its files; with
    `shared_cap`, the byte budget of all of them too."""

    timeout_s: float
    min_rate: float  # bytes per second over each stall window
    window_s: float
    cap: int
    shared_cap: bool = False
    estimate: int = 2 * ZIP_ESTIMATE  # free space asked for before the first byte
    deadline: float | None = None  # set when the first attempt starts
    spent: int = 0  # every byte received, all files and attempts
    _window_start: float = 0.0
    _window_bytes: int = 0

    @classmethod
    def of(cls, config: AgentConfig, *, shared_cap: bool = False, estimate: int = 0) -> Pace:
        return cls(
            config.download_timeout_s,
            config.min_download_bytes_per_s,
            config.stall_window_s,
            config.max_bundle_bytes,
            shared_cap,
            estimate or 2 * ZIP_ESTIMATE,
        )

    def begin(self, at: float) -> list[DownloadEffect]:
        """The download starts (first call only): fix the deadline, ask for the space."""
        if self.deadline is not None:
            return []
        self.deadline, self._window_start = at + self.timeout_s, at
        return [EnsureFreeSpace(self.estimate)]

    def overdue(self, at: float, what: str) -> DownloadStopped | None:
        if self.deadline is not None and at > self.deadline:
            return DownloadStopped(f"{what}: download deadline passed")
        return None

    def received(
        self, size: int, at: float, what: str
    ) -> DownloadStopped | VerificationError | None:
        """Count `size` bytes that arrived at `at`: what stops the download, if anything."""
        self.spent += size
        if self.shared_cap and self.spent > self.cap:
            return VerificationError("download_fail", f"{what} is larger than the cap")
        late = self.overdue(at, what)
        if late is not None:
            return late
        self._window_bytes += size
        elapsed = at - self._window_start
        if not self.window_s or elapsed < self.window_s:
            return None
        if self._window_bytes < self.min_rate * elapsed:
            return DownloadStopped(
                f"{what}: stalled ({self._window_bytes} bytes in {elapsed:.0f} s)"
            )
        self._window_start, self._window_bytes = at, 0
        return None


@dataclass
class Download:
    """One file's transfer decisions (see the module docstring); `what` names it in errors.
    A fetcher that never keeps a partial (a manifest's files) always reports 0 kept bytes."""

    pace: Pace
    what: str
    phase: Phase = Phase.NEW
    offset: int = 0  # the first byte this attempt asked for
    position: int = 0  # bytes of the file held so far (partial + this attempt)
    total: int | None = None  # the file's length, when the answer announced it
    resumed: bool = False  # bytes from an earlier attempt or run are part of the file
    _percent: int = 0
    _out: list[DownloadEffect] = field(default_factory=list)

    def handle(self, event: DownloadEvent) -> list[DownloadEffect]:
        """Take one event; the effects to perform, in order (`StopAttempt` last)."""
        after = DOWNLOAD_TRANSITIONS[self.phase].get(type(event))
        if after is None:
            name = type(event).__name__
            raise RuntimeError(f"{self.what}: {name} is not allowed while {self.phase.value}")
        self._out = []
        self.phase = after
        if isinstance(event, ChunkReceived):
            self._on_chunk(event)
        elif isinstance(event, AttemptStarted):
            self._on_attempt(event)
        elif isinstance(event, HeadReceived):
            self._on_head(event)
        elif isinstance(event, BodyEnded):
            self._on_end()
        else:
            self._on_digest(event)
        return self._out

    def _stop(self, error: TransportError | VerificationError) -> None:
        final = not isinstance(error, TransportError) or isinstance(error, DownloadStopped)
        self.phase = Phase.FAILED if final else Phase.INTERRUPTED
        self._out.append(StopAttempt(error))

    def _restart(self) -> None:
        self._out.append(RestartFromZero())
        self.offset = self.position = 0
        self.resumed = False

    def _on_attempt(self, event: AttemptStarted) -> None:
        self._out.extend(self.pace.begin(event.at))
        late = self.pace.overdue(event.at, self.what)
        if late is not None:
            self._stop(late)
            return
        kept = event.partial_bytes
        if kept > self.pace.cap:  # kept from a run with a larger cap: the file is too big
            too_big = f"{self.what}: {kept} bytes kept, over the cap"
            self._stop(VerificationError("download_fail", too_big))
            return
        self.offset = self.position = kept
        self.resumed = self.resumed or kept > 0
        self.total = None
        assert self.pace.deadline is not None
        self._out.append(FetchRange(kept, self.pace.deadline))

    def _on_head(self, event: HeadReceived) -> None:
        status, headers = event.status, event.headers
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(headers.get("content-range", ""))
            if not match or int(match.group(1)) != self.offset:
                self._restart()
                self._stop(TransportError("server answered a range we did not ask for"))
                return
        elif status == 416:
            self._restart()
            self._stop(TransportError("range not satisfiable: restarting the download"))
            return
        elif status == 200 and self.offset:
            self._restart()  # the server ignored the range: the whole file comes again
        elif status != 200:
            self._stop(_status_error(status, event.retry_after_s))
            return
        length = headers.get("content-length")
        self.total = self.offset + int(length) if length and length.isdigit() else None
        if self.total is not None and self.total > self.pace.cap:
            self._stop(
                VerificationError(
                    "download_fail", f"{self.what} is {self.total} bytes, over the cap"
                )
            )
        elif self.total is not None:  # what is still to come, written twice: partial and plain
            self._out.append(EnsureFreeSpace(2 * (self.total - self.offset)))

    def _on_chunk(self, event: ChunkReceived) -> None:
        self.position += event.size
        stop = self.pace.received(event.size, event.at, self.what)
        if stop is None and self.position > self.pace.cap:
            stop = VerificationError("download_fail", f"{self.what} body is larger than the cap")
        if stop is not None:
            self._stop(stop)
            return
        if self.total:
            percent = TRANSFER_PERCENT * self.position // self.total
            if percent // 10 > self._percent // 10:
                self._percent = percent
                self._out.append(ReportProgress(percent))

    def _on_end(self) -> None:
        if self.total is not None and self.position != self.total:
            self._stop(TransportError(f"body ended after {self.position} of {self.total} bytes"))
            return
        self._out.append(CheckDigest())

    def _on_digest(self, event: DigestChecked) -> None:
        if event.error is None:
            self._out.append(KeepVerified())
        elif self.resumed:  # the partial from an earlier run may be torn: start over once
            self._restart()
            self._stop(TransportError("resumed download did not verify; restarting from zero"))
        else:
            self._stop(event.error)


def _status_error(status: int, retry_after_s: float | None) -> TransportError:
    """What a status other than 200/206 means for a file download: 429 and 408/5xx are
    retried, anything else refuses the URL (retried at the next check)."""
    if status == 429:
        return RateLimited("download rate-limited", retry_after_s)
    if status == 408 or status >= 500:
        return TransportError(f"download answered HTTP {status}")
    return DownloadStopped(f"download answered HTTP {status}")
