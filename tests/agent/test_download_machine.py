"""The download machine of the core (`agent.core.download`), driven without sockets.

Examples pin each decision (resume, 200/206/416, caps, short bodies, torn partials, deadline,
stall, statuses); a hypothesis state machine then drives whole downloads -- chunks of any
size, stalls, kills between any two chunks, torn partials, servers that ignore or botch the
range -- through an in-memory fetcher that keeps a partial and hashes like the real one, and
checks that only the true file ever verifies and that every decision matches the bytes held.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from agent.core.download import (
    DOWNLOAD_TRANSITIONS,
    ZIP_ESTIMATE,
    AttemptStarted,
    BodyEnded,
    CheckDigest,
    ChunkReceived,
    DigestChecked,
    Download,
    DownloadEffect,
    DownloadEvent,
    EnsureFreeSpace,
    FetchRange,
    HeadReceived,
    KeepVerified,
    Pace,
    Phase,
    ReportProgress,
    RestartFromZero,
    StopAttempt,
)
from agent.errors import DownloadStopped, RateLimited, TransportError, VerificationError


def machine(cap: int = 1000, timeout_s: float = 100.0, window_s: float = 10.0) -> Download:
    return Download(Pace(timeout_s, 10.0, window_s, cap), "bundle 1.0.1")


def stop(effects: list[DownloadEffect]) -> Exception | None:
    last = effects[-1] if effects else None
    return last.error if isinstance(last, StopAttempt) else None


def head(status: int, at: float = 0.0, **headers: str) -> HeadReceived:
    return HeadReceived(status, {k.replace("_", "-"): v for k, v in headers.items()}, at)


# -- examples -------------------------------------------------------------------------------


def test_every_phase_has_a_row_and_an_event_out_of_turn_is_a_bug() -> None:
    assert set(DOWNLOAD_TRANSITIONS) == set(Phase)
    with pytest.raises(RuntimeError, match="not allowed while new"):
        machine().handle(ChunkReceived(10, 0.0))
    d = machine()
    d.handle(AttemptStarted(0, 0.0))
    with pytest.raises(RuntimeError, match="DigestChecked is not allowed while requested"):
        d.handle(DigestChecked(None))


def test_a_fresh_download_asks_for_space_then_the_whole_file() -> None:
    d = machine()
    assert d.handle(AttemptStarted(0, 5.0)) == [
        EnsureFreeSpace(2 * ZIP_ESTIMATE),
        FetchRange(0, 105.0),
    ]
    assert d.handle(head(200, content_length="400")) == [EnsureFreeSpace(800)]
    assert d.handle(ChunkReceived(200, 6.0)) == [ReportProgress(35)]
    assert d.handle(ChunkReceived(200, 7.0)) == [ReportProgress(70)]
    assert d.handle(BodyEnded(7.0)) == [CheckDigest()]
    assert d.handle(DigestChecked(None)) == [KeepVerified()]
    assert d.phase is Phase.VERIFIED


def test_a_kept_partial_is_resumed_with_its_range() -> None:
    d = machine()
    assert d.handle(AttemptStarted(300, 0.0))[-1] == FetchRange(300, 100.0)
    effects = d.handle(head(206, content_range="bytes 300-399/400", content_length="100"))
    assert effects == [EnsureFreeSpace(200)]
    assert (d.offset, d.total, d.resumed) == (300, 400, True)


@pytest.mark.parametrize(
    ("answer", "retried"),
    [
        (head(200, content_length="400"), False),  # range ignored: the whole file, same attempt
        (head(416), True),
        (head(206, content_range="bytes 0-399/400"), True),  # not the range asked for
        (head(206), True),  # no content-range at all
    ],
)
def test_a_range_the_server_does_not_honour_restarts_from_zero(
    answer: HeadReceived, retried: bool
) -> None:
    d = machine()
    d.handle(AttemptStarted(300, 0.0))
    effects = d.handle(answer)
    assert effects[0] == RestartFromZero()
    assert d.offset == 0 and not d.resumed
    assert isinstance(stop(effects), TransportError) is retried
    assert d.phase is (Phase.INTERRUPTED if retried else Phase.RECEIVING)


def test_the_cap_refuses_an_announced_or_a_growing_body_for_good() -> None:
    d = machine(cap=1000)
    d.handle(AttemptStarted(0, 0.0))
    error = stop(d.handle(head(200, content_length="1001")))
    assert isinstance(error, VerificationError) and error.action == "download_fail"
    assert d.phase is Phase.FAILED
    d = machine(cap=1000)
    d.handle(AttemptStarted(600, 0.0))
    d.handle(head(206, content_range="bytes 600-999/*"))  # no length announced
    assert stop(d.handle(ChunkReceived(400, 1.0))) is None
    assert isinstance(stop(d.handle(ChunkReceived(1, 1.0))), VerificationError)


def test_a_partial_kept_over_the_cap_is_refused_before_any_request() -> None:
    """Found by the state machine below: a partial kept from a run with a larger cap, resumed
    by a 206 without a length, was over the cap until the next chunk (and an empty rest would
    have verified it)."""
    d = machine(cap=600)
    error = stop(d.handle(AttemptStarted(601, 0.0)))
    assert isinstance(error, VerificationError) and error.action == "download_fail"
    assert d.phase is Phase.FAILED


def test_a_shared_cap_counts_every_byte_of_every_file_and_attempt() -> None:
    pace = Pace(100.0, 0.0, 0.0, 1000, shared_cap=True)
    first, second = Download(pace, "a"), Download(pace, "b")
    for d in (first, second):
        d.handle(AttemptStarted(0, 0.0))
        d.handle(head(200))
    assert stop(first.handle(ChunkReceived(600, 1.0))) is None
    assert isinstance(stop(second.handle(ChunkReceived(401, 1.0))), VerificationError)


def test_a_short_body_is_retried_and_a_bad_digest_from_zero_is_final() -> None:
    d = machine()
    d.handle(AttemptStarted(0, 0.0))
    d.handle(head(200, content_length="400"))
    d.handle(ChunkReceived(399, 1.0))
    assert isinstance(stop(d.handle(BodyEnded(1.0))), TransportError)
    d.handle(AttemptStarted(399, 2.0))
    d.handle(head(206, content_range="bytes 399-399/400", content_length="1"))
    d.handle(ChunkReceived(1, 2.0))
    assert d.handle(BodyEnded(2.0)) == [CheckDigest()]
    bad = VerificationError("checksum_fail", "no")
    effects = d.handle(DigestChecked(bad))  # resumed: the partial may be torn
    assert effects[0] == RestartFromZero() and isinstance(stop(effects), TransportError)
    d.handle(AttemptStarted(0, 3.0))
    d.handle(head(200, content_length="400"))
    d.handle(ChunkReceived(400, 3.0))
    d.handle(BodyEnded(3.0))
    assert stop(d.handle(DigestChecked(bad))) is bad
    assert d.phase is Phase.FAILED


def test_the_deadline_and_the_stall_window_stop_the_download() -> None:
    d = machine(timeout_s=100.0, window_s=10.0)  # at least 10 bytes/s over each 10 s
    d.handle(AttemptStarted(0, 0.0))
    d.handle(head(200))
    assert stop(d.handle(ChunkReceived(150, 11.0))) is None  # 150 bytes in 11 s: fine
    error = stop(d.handle(ChunkReceived(5, 22.0)))  # 5 bytes in the next 11 s: stalled
    assert isinstance(error, DownloadStopped) and "stalled" in str(error)
    assert d.phase is Phase.FAILED
    late = machine(timeout_s=100.0, window_s=0.0)
    late.handle(AttemptStarted(0, 0.0))
    late.handle(head(200))
    assert isinstance(stop(late.handle(ChunkReceived(10, 100.5))), DownloadStopped)
    again = machine(timeout_s=100.0)
    again.handle(AttemptStarted(0, 0.0))
    again.handle(head(200))
    again.handle(AttemptStarted(0, 101.0))  # a retry after the deadline never asks
    assert again.phase is Phase.FAILED


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, RateLimited), (503, TransportError), (408, TransportError), (404, DownloadStopped)],
)
def test_statuses(status: int, kind: type) -> None:
    d = machine()
    d.handle(AttemptStarted(0, 0.0))
    error = stop(d.handle(HeadReceived(status, {}, 0.0, 30.0)))
    assert type(error) is kind
    if status == 429:
        assert isinstance(error, RateLimited) and error.retry_after_s == 30.0


# -- whole downloads, generated -------------------------------------------------------------


@dataclass
class Fetcher:
    """What `BundleFetch` does with the machine's effects, in memory: a kept partial, a
    running hash of the bytes held, a check against the true digest."""

    digest: str
    partial: bytearray = field(default_factory=bytearray)
    verified: bytes | None = None
    errors: list[Exception] = field(default_factory=list)

    def step(self, d: Download, event: DownloadEvent) -> FetchRange | None:
        fetch = None
        for effect in d.handle(event):
            if isinstance(effect, FetchRange):
                fetch = effect
            elif isinstance(effect, RestartFromZero):
                self.partial.clear()
            elif isinstance(effect, CheckDigest):
                ok = hashlib.sha256(self.partial).hexdigest() == self.digest
                error = None if ok else VerificationError("checksum_fail", "digest")
                self.step(d, DigestChecked(error))
            elif isinstance(effect, KeepVerified):
                self.verified = bytes(self.partial)
            elif isinstance(effect, StopAttempt):
                self.errors.append(effect.error)
        return fetch


FILE = bytes(range(256)) * 4  # 1 KiB


class DownloadLife(RuleBasedStateMachine):
    """Attempts of one download against a server that may misbehave, with kills between any
    two chunks (the partial is kept, possibly torn), stalls and a cap (above or below the
    file's size)."""

    def __init__(self) -> None:
        super().__init__()
        self.cap = 2048
        self.d = Download(Pace(1e9, 1.0, 5.0, self.cap), "bundle")
        self.f = Fetcher(hashlib.sha256(FILE).hexdigest())
        self.now = 0.0
        self.stream: bytes | None = None  # what the server still sends in this attempt
        self.from_zero = False  # this attempt's bytes start at 0 (no partial held)

    @initialize(cap=st.sampled_from([2048, len(FILE), 600]))
    def cap_is(self, cap: int) -> None:
        self.cap = cap
        self.d = Download(Pace(1e9, 1.0, 5.0, cap), "bundle")

    def _live(self) -> bool:
        return self.d.phase not in (Phase.VERIFIED, Phase.FAILED)

    @precondition(lambda self: self._live() and self.stream is None)
    @rule(
        server=st.sampled_from(
            ["honours", "ignores range", "416", "wrong range", "truncates", "no length"]
        ),
        torn=st.booleans(),
    )
    def attempt(self, server: str, torn: bool) -> None:
        if torn and self.f.partial:  # an earlier run was killed mid-write
            self.f.partial[-1] ^= 0xFF
        fetch = self.f.step(self.d, AttemptStarted(len(self.f.partial), self.now))
        if fetch is None:
            return
        assert fetch.offset == len(self.f.partial)  # it asks for exactly what it lacks
        offset = fetch.offset
        if offset and server == "416":
            self.f.step(self.d, head(416))
            assert not self.f.partial and self.d.phase is Phase.INTERRUPTED
            return
        if offset and server == "wrong range":
            self.f.step(self.d, head(206, content_range=f"bytes 0-{len(FILE) - 1}/{len(FILE)}"))
            assert not self.f.partial and self.d.phase is Phase.INTERRUPTED
            return
        length = {} if server == "no length" else {"content_length": ""}
        if offset and server in ("honours", "truncates", "no length"):
            rest = FILE[offset:]
            last = len(FILE) - 1
            headers = {"content_range": f"bytes {offset}-{last}/{len(FILE)}"}
            if length:
                length["content_length"] = str(len(rest))
            self.f.step(self.d, head(206, **length, **headers))
        else:
            rest = FILE
            if length:
                length["content_length"] = str(len(FILE))
            self.f.step(self.d, head(200, **length))
            assert not self.f.partial  # a whole file restarts the partial
        if self.d.phase is Phase.FAILED:  # announced over the cap
            assert length and len(FILE) > self.cap
            assert isinstance(self.f.errors[-1], VerificationError)
            return
        self.stream = rest[: len(rest) // 2] if server == "truncates" else rest
        self.from_zero = not self.f.partial

    @precondition(lambda self: self.stream is not None and self.d.phase is Phase.RECEIVING)
    @rule(size=st.integers(1, 700), pause=st.sampled_from([0.0, 0.1, 30.0]))
    def chunk(self, size: int, pause: float) -> None:
        assert self.stream is not None
        piece, self.stream = self.stream[:size], self.stream[size:]
        if not piece:
            return
        self.now += pause
        self.f.partial += piece
        self.f.step(self.d, ChunkReceived(len(piece), self.now))
        if self.d.phase is Phase.FAILED:
            error = self.f.errors[-1]
            if isinstance(error, VerificationError):  # grew past the cap
                assert error.action == "download_fail" and len(self.f.partial) > self.cap
            else:
                assert isinstance(error, DownloadStopped) and "stalled" in str(error)
            self.stream = None

    @precondition(lambda self: self.stream is not None and not self.stream and self._receiving())
    @rule()
    def body_ends(self) -> None:
        before = len(self.f.errors)
        self.f.step(self.d, BodyEnded(self.now))
        self.stream = None
        if self.d.phase is Phase.FAILED:  # final only for a transfer that began at byte 0
            assert self.from_zero and isinstance(self.f.errors[before], VerificationError)

    def _receiving(self) -> bool:
        return self.d.phase is Phase.RECEIVING

    @precondition(lambda self: self.stream is not None and self._receiving())
    @rule()
    def connection_dies(self) -> None:
        """Killed or cut between two chunks: the bytes held stay as the partial."""
        self.stream = None

    @precondition(lambda self: not self._live())
    @rule()
    def offered_again(self) -> None:
        """The next offer of the same artefact: a new download over the partial kept."""
        if self.d.phase is Phase.VERIFIED:
            self.f.partial.clear()  # a verified download drops its partial
        self.d = Download(Pace(1e9, 1.0, 5.0, self.cap), "bundle")
        self.stream = None

    @invariant()
    def only_the_true_file_verifies(self) -> None:
        if self.d.phase is Phase.VERIFIED:
            assert self.f.verified == FILE and len(FILE) <= self.cap
        assert self.d.position <= self.cap or self.d.phase is Phase.FAILED

    @invariant()
    def it_knows_what_it_holds(self) -> None:
        if self.d.phase is Phase.RECEIVING:
            assert self.d.position == len(self.f.partial)


DownloadLife.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDownloadLife = DownloadLife.TestCase
