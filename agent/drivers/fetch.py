"""One full-zip bundle download, shared by both drivers: the I/O of `agent.core.download`.

`BundleFetch` moves and stores the bytes; the core's `Download` machine decides (which range
to ask for, resume or restart, the size cap, the deadline and the stall window, a torn
partial); verifying and unpacking is the one pipeline of `agent.bundles.zipbundle`
(`ZipPipeline`, `unpack_zip`), the same that `otasim bundle verify` runs. It keeps the raw
bytes received so far in `downloads/<id>.part`. Each attempt replays that file through a
fresh `ZipPipeline` (so hashing and decryption restart from byte 0 without holding anything
in memory; the asyncio driver runs the replay in a worker thread), then reports how many
bytes it holds and performs the machine's `FetchRange`. Every body chunk is written to the
`.part` and, through the pipeline, to the plain `.zip`, and reported as `ChunkReceived`; the
machine's effects are performed in order, its `StopAttempt` raised. The
time it passes is `time.monotonic()`: the download deadline is a network timeout, never on the
device's injected clock (which the simulator speeds up). A write that fails (disk full:
`insufficient_disk_space`) is a `LocalError`: the core then forgets the bundle and its files.
When the body verified, the `.part` is dropped; `install` unpacks the zip into staging and
moves it into `bundles/<id>` by one rename.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from agent.bundles.zipbundle import ZipPipeline, unpack_zip
from agent.config import AgentConfig
from agent.core.download import (
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
    ReportProgress,
    RestartFromZero,
    StopAttempt,
)
from agent.drivers.http import HttpRequest
from agent.errors import LocalError, VerificationError
from agent.protocol.base import UpdateOffer
from agent.protocol.capgo import retry_hint
from agent.security.keys import PublicKey
from agent.security.verify import BundleVerification, plan_offer_verification
from agent.store import DeviceStore

REPLAY_CHUNK = 256 * 1024


def check_free_space(store: DeviceStore, needed: int) -> None:
    """Refuse to go on without `needed` bytes free (at the start, twice the plugin's estimate).

    Raises:
        LocalError: `insufficient_disk_space`.
    """
    free = store.free_bytes()
    if free < needed:
        raise LocalError("insufficient_disk_space", f"{free} bytes free, {needed} needed")


@contextmanager
def disk_writes(what: str) -> Iterator[None]:
    """Turn a failed write of the download's own files into a `LocalError`.

    Raises:
        LocalError: `insufficient_disk_space` (disk or quota full), else `finish_download_fail`.
    """
    try:
        yield
    except OSError as exc:
        raise LocalError.from_os_error(exc, "finish_download_fail", what) from exc


def close_quietly(handle: BinaryIO | None) -> None:
    """Close a download file in cleanup. Completed files were flushed under `disk_writes`, so
    a flush failing here (disk full) only loses bytes of a download that failed anyway."""
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()


def head_received(status: int, headers: Mapping[str, str], now: float) -> HeadReceived:
    """The core's event for an answer's head (the server's 429 hint read here)."""
    hint = retry_hint(headers, None, now) if status == 429 else None
    return HeadReceived(status, headers, time.monotonic(), hint)


class Transfer(Protocol):
    """One file to move over HTTP. Drivers run, per attempt: `start` (off the event loop when
    `heavy_start`), `open`, `feed`* and `complete`; `name` labels the request for observers."""

    name: str
    heavy_start: bool

    def start(self) -> HttpRequest: ...

    def open(self, status: int, headers: Mapping[str, str]) -> None: ...

    def feed(self, chunk: bytes) -> None: ...

    def complete(self) -> None: ...


class Fetch(Protocol):
    """One bundle download: `prepare` (heavy: off the event loop), its `transfers`, `install`
    (heavy), `close`."""

    bundle_id: str

    def prepare(self) -> None: ...

    def transfers(self) -> Iterator[Transfer]: ...

    def install(self) -> None: ...

    def close(self) -> None: ...


class MachineTransfer:
    """A transfer decided by the core's `Download` machine: what both fetchers share. It feeds
    the machine the attempt, the head, each chunk and the body's end, and performs the effects:
    `StopAttempt` raises, `CheckDigest` asks `_finish` (the fetcher's verifier), the rest goes
    to `_perform`."""

    name: str
    heavy_start: bool

    def __init__(self, machine: Download, now: Callable[[], float]) -> None:
        self._machine = machine
        self._now = now

    def open(self, status: int, headers: Mapping[str, str]) -> None:
        """Check the response head of an attempt (raises what the core's `StopAttempt` says:
        TransportError to retry, DownloadStopped, VerificationError over the cap)."""
        self._step(head_received(status, headers, self._now()))

    def complete(self) -> None:
        """The body ended: the core checks its length, then its digest (raises
        TransportError for a short body or a torn partial, VerificationError else)."""
        try:
            self._step(BodyEnded(time.monotonic()))
        finally:
            self.close()

    def _attempt(self, partial_bytes: int) -> FetchRange:
        fetch = self._step(AttemptStarted(partial_bytes, time.monotonic()))
        assert fetch is not None  # else the machine stopped the attempt (raised)
        return fetch

    def _received(self, size: int) -> None:
        self._step(ChunkReceived(size, time.monotonic()))

    def _step(self, event: DownloadEvent) -> FetchRange | None:
        """Feed the core one event and perform its effects, in order."""
        fetch = None
        for effect in self._machine.handle(event):
            if isinstance(effect, FetchRange):
                fetch = effect
            elif isinstance(effect, StopAttempt):
                raise effect.error
            elif isinstance(effect, CheckDigest):
                self._step(DigestChecked(self._digest_error()))
            else:
                self._perform(effect)
        return fetch

    def _digest_error(self) -> VerificationError | None:
        try:
            self._finish()
        except VerificationError as exc:
            return exc
        return None

    def _finish(self) -> None:
        """Finish the verifier and flush the files. Raises VerificationError, LocalError."""
        raise NotImplementedError

    def _perform(self, effect: DownloadEffect) -> None:
        """Space, progress, restart and keep (what this fetcher has to do with them)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class BundleFetch(MachineTransfer):
    """Download, verify and install one full-zip bundle: its only transfer is itself."""

    name = "bundle"
    heavy_start = True  # replays the partial download through AES and SHA-256

    def __init__(
        self,
        store: DeviceStore,
        bundle_id: str,
        offer: UpdateOffer,
        config: AgentConfig,
        public_key: PublicKey | None,
        *,
        now: Callable[[], float],
        progress: Callable[[int], None],
        check_unpacked: Callable[[Path], None] | None = None,
    ) -> None:
        self.store = store
        self.bundle_id = bundle_id
        self.offer = offer
        self.config = config
        self._public_key = public_key
        self._progress = progress
        self._check_unpacked = check_unpacked  # a dialect's check of the unzipped files
        super().__init__(Download(Pace.of(config), f"bundle {offer.version}"), now)
        self._plan: BundleVerification | None = None
        self._pipeline: ZipPipeline | None = None
        self._part: BinaryIO | None = None
        self._plain: BinaryIO | None = None

    def prepare(self) -> None:
        """Raises:
        VerificationError: the offer can never verify (`checksum_required`, `decrypt_fail`).
        """
        self._plan = plan_offer_verification(self.offer, self._public_key)

    def transfers(self) -> Iterator[Transfer]:
        yield self

    def start(self) -> HttpRequest:
        """Start an attempt: replay the partial download, then ask for what the core says.

        Raises:
            DownloadStopped: the download deadline has passed.
            LocalError: the disk is full or failed.
        """
        assert self._plan is not None
        self.close()
        part_path = self.store.part_path(self.bundle_id)
        with disk_writes("replaying the partial download"):
            part_path.parent.mkdir(exist_ok=True)
            self._part = open(part_path, "ab")  # noqa: SIM115 - closed in close()
            self._plain = open(self.store.zip_path(self.bundle_id), "wb")  # noqa: SIM115
            self._pipeline = ZipPipeline(self._plan, self._plain)
            with open(part_path, "rb") as replay:
                while chunk := replay.read(REPLAY_CHUNK):
                    self._pipeline.feed(chunk)
        fetch = self._attempt(self._pipeline.bytes_in)
        headers = {"range": f"bytes={fetch.offset}-"} if fetch.offset else {}
        return HttpRequest(
            "GET",
            self.offer.url,
            headers,
            timeout_s=self.config.response_timeout_s,
            deadline=fetch.deadline,
        )

    def open(self, status: int, headers: Mapping[str, str]) -> None:
        """Check the response head (see `MachineTransfer.open`); the "file" integrity scheme
        may take its checksum from it (`X-Checksum`, `agent.security.file_integrity`)."""
        super().open(status, headers)
        assert self._plan is not None and self._pipeline is not None
        self._plan = self._plan.with_headers(headers)
        self._pipeline.check_against(self._plan)

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body (raises the core's `StopAttempt`)."""
        assert self._part is not None and self._pipeline is not None
        with disk_writes("writing the download"):
            self._part.write(chunk)
            self._pipeline.feed(chunk)
        self._received(len(chunk))

    def _perform(self, effect: DownloadEffect) -> None:
        if isinstance(effect, ReportProgress):
            self._progress(effect.percent)
        elif isinstance(effect, EnsureFreeSpace):
            check_free_space(self.store, effect.bytes)
        elif isinstance(effect, RestartFromZero):
            assert self._part is not None and self._plain is not None and self._plan is not None
            self._part.truncate(0)
            self._plain.seek(0)
            self._plain.truncate(0)
            self._pipeline = ZipPipeline(self._plan, self._plain)
        elif isinstance(effect, KeepVerified):
            self.store.part_path(self.bundle_id).unlink(missing_ok=True)  # not resumed

    def _finish(self) -> None:
        assert self._plain is not None and self._part is not None and self._pipeline is not None
        with disk_writes("writing the download"):
            self._pipeline.finish()
            self._plain.flush()
            self._part.flush()

    def install(self) -> None:
        """Unpack the verified zip into staging and move it into place.

        Raises:
            VerificationError: the zip is unsafe or broken (`unzip_fail`, `*_path_fail`), or
                the unzipped files fail the dialect's check (CodePush's package hash).
            LocalError: the disk failed.
        """
        staged = self.store.fresh_staging(self.bundle_id)
        unpack_zip(self.store.zip_path(self.bundle_id), staged)
        if self._check_unpacked is not None:
            self._check_unpacked(staged)
        self.store.install(self.bundle_id, staged)

    def close(self) -> None:
        close_quietly(self._part)
        close_quietly(self._plain)
        self._part = self._plain = None
