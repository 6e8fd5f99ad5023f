"""One full-zip bundle download, shared by both drivers: they only move the bytes.

`BundleFetch` keeps the raw bytes received so far in `downloads/<id>.part`. Each attempt
replays that file through a fresh `StreamingVerifier` (so hashing and decryption restart from
byte 0 without holding anything in memory), then asks the server for the rest with
`Range: bytes=<n>-`. A server that ignores the range (200) restarts the file. Free space is
checked against what the download really writes (the raw `.part` and the plain `.zip`, from
the announced length) and, before unpacking, the unpacked size; the `.part` is dropped once the
digest verified. A write that fails (disk full: `insufficient_disk_space`) is a `LocalError`:
the core then forgets the bundle and its files. Size is capped
by `AgentConfig.max_bundle_bytes` and time by `download_timeout_s`, a network timeout measured
on the real monotonic clock (`DownloadDeadline`), never on the device's injected clock (which
the simulator speeds up). When the last byte is in,
the digest is checked, the zip unpacked into staging and moved into `bundles/<id>` by one rename.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import BinaryIO, Protocol

from agent.bundles.unzip import safe_unzip
from agent.config import AgentConfig
from agent.drivers.http import HttpRequest
from agent.errors import LocalError, RateLimited, TransportError, VerificationError
from agent.protocol.base import UpdateOffer
from agent.protocol.capgo import retry_hint
from agent.security.keys import PublicKey
from agent.security.stream import StreamingVerifier
from agent.security.verify import BundleVerification, plan_offer_verification
from agent.store import DeviceStore

REPLAY_CHUNK = 256 * 1024
ZIP_ESTIMATE = 50 * 1024 * 1024  # the plugin's size estimate before a download
TRANSFER_PERCENT = 70  # as the plugin: 0..70 while transferring, 90 when unpacked
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadStopped(TransportError):
    """The download cannot go on now (deadline, refused URL); not retried in this attempt run.

    The partial download stays and resumes at the next offer of the same artefact.
    """


class DownloadDeadline:
    """The overall deadline of one download, started when the download starts.

    It is a network timeout, so it runs on `time.monotonic()`: a device clock that the
    simulator scales (or a test freezes) must not shorten or stretch it.
    """

    def __init__(self, config: AgentConfig, what: str) -> None:
        self.at = time.monotonic() + config.download_timeout_s  # also each request's `deadline`
        self._what = what
        self._min_rate = config.min_download_bytes_per_s
        self._window_s = config.stall_window_s
        self._window_start = time.monotonic()
        self._window_bytes = 0

    def check(self) -> None:
        """Raises:
        DownloadStopped: the deadline has passed.
        """
        if time.monotonic() > self.at:
            raise DownloadStopped(f"{self._what}: download deadline passed")

    def received(self, size: int) -> None:
        """Count `size` bytes just received: a body trickling in slower than
        `min_download_bytes_per_s` over `stall_window_s` stops long before the deadline (a
        slow-retrieval attack, or a dead network).

        Raises:
            DownloadStopped: the deadline has passed, or the transfer is stalled.
        """
        self.check()
        self._window_bytes += size
        elapsed = time.monotonic() - self._window_start
        if not self._window_s or elapsed < self._window_s:
            return
        if self._window_bytes < self._min_rate * elapsed:
            raise DownloadStopped(
                f"{self._what}: stalled ({self._window_bytes} bytes in {elapsed:.0f} s)"
            )
        self._window_start, self._window_bytes = time.monotonic(), 0


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


def check_status(status: int, headers: Mapping[str, str], now: float) -> None:
    """Accept a 200 answer; raise what any other status of a file download means.

    Raises:
        RateLimited: 429 (with the server's hint). TransportError: 408 or 5xx (retry).
        DownloadStopped: any other status (the URL is refused; retried at the next check).
    """
    if status == 200:
        return
    if status == 429:
        raise RateLimited("download rate-limited", retry_hint(headers, None, now))
    if status == 408 or status >= 500:
        raise TransportError(f"download answered HTTP {status}")
    raise DownloadStopped(f"download answered HTTP {status}")


class Transfer(Protocol):
    """One file to move over HTTP. Drivers run, per attempt: `request`, `open`, `feed`* and
    `complete`; `name` labels the request for observers."""

    name: str

    def request(self) -> HttpRequest: ...

    def open(self, status: int, headers: Mapping[str, str]) -> None: ...

    def feed(self, chunk: bytes) -> None: ...

    def complete(self) -> None: ...


class BundleFetch:
    """Download, verify and install one full-zip bundle: its only transfer is itself."""

    name = "bundle"

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
    ) -> None:
        self.store = store
        self.bundle_id = bundle_id
        self.offer = offer
        self.config = config
        self._public_key = public_key
        self._now = now
        self._progress = progress
        self._deadline = DownloadDeadline(config, f"bundle {offer.version}")
        self._plan: BundleVerification | None = None
        self._verifier: StreamingVerifier | None = None
        self._part: BinaryIO | None = None
        self._plain: BinaryIO | None = None
        self._offset = 0
        self._total: int | None = None
        self._resumed = False
        self._last_percent = 0

    def transfers(self) -> Iterator[Transfer]:
        yield self

    def request(self) -> HttpRequest:
        """Start an attempt: replay the partial download, then ask for the remaining bytes.

        Raises:
            VerificationError: the offer can never verify (`checksum_required`, `decrypt_fail`).
            DownloadStopped: the download deadline has passed.
        """
        self._deadline.check()
        if self._plan is None:
            check_free_space(self.store, 2 * ZIP_ESTIMATE)
            self._plan = plan_offer_verification(self.offer, self._public_key)
        self.close()
        part_path = self.store.part_path(self.bundle_id)
        self._verifier = self._plan.verifier()
        with disk_writes("replaying the partial download"):
            self._part = open(part_path, "ab")  # noqa: SIM115 - closed in close()
            self._plain = open(self.store.zip_path(self.bundle_id), "wb")  # noqa: SIM115
            with open(part_path, "rb") as replay:
                while chunk := replay.read(REPLAY_CHUNK):
                    self._plain.write(self._verifier.update(chunk))
        self._offset = self._verifier.bytes_in
        self._resumed = self._resumed or self._offset > 0
        headers = {"range": f"bytes={self._offset}-"} if self._offset else {}
        return HttpRequest(
            "GET",
            self.offer.url,
            headers,
            timeout_s=self.config.response_timeout_s,
            deadline=self._deadline.at,
        )

    def open(self, status: int, headers: Mapping[str, str]) -> None:
        """Check the response head of an attempt.

        Raises:
            TransportError: a status worth retrying (408, 429, 5xx, a bad or refused range).
            DownloadStopped: any other status (the URL is refused; retried at the next check).
            VerificationError: the announced size exceeds the cap (`download_fail`).
        """
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(headers.get("content-range", ""))
            if not match or int(match.group(1)) != self._offset:
                self._restart()
                raise TransportError("server answered a range we did not ask for")
        elif status == 416:
            self._restart()
            raise TransportError("range not satisfiable: restarting the download")
        elif status == 200 and self._offset:
            self._restart()
        else:
            check_status(status, headers, self._now())
        assert self._plan is not None
        self._plan = self._plan.with_headers(headers)
        length = headers.get("content-length")
        self._total = self._offset + int(length) if length and length.isdigit() else None
        if self._total is not None and self._total > self.config.max_bundle_bytes:
            raise VerificationError("download_fail", f"bundle is {self._total} bytes, over the cap")
        if self._total is not None:  # what is still to come, written twice: .part and .zip
            check_free_space(self.store, 2 * (self._total - self._offset))

    def _restart(self) -> None:
        assert self._part is not None and self._plain is not None and self._plan is not None
        self._part.truncate(0)
        self._plain.seek(0)
        self._plain.truncate(0)
        self._verifier = self._plan.verifier()
        self._offset = 0
        self._resumed = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the body.

        Raises:
            VerificationError: the body grew past the size cap (`download_fail`).
            DownloadStopped: the download deadline passed, or the transfer is stalled.
        """
        assert self._part is not None and self._plain is not None and self._verifier is not None
        self._deadline.received(len(chunk))
        if self._verifier.bytes_in + len(chunk) > self.config.max_bundle_bytes:
            raise VerificationError("download_fail", "bundle body is larger than the cap")
        with disk_writes("writing the download"):
            self._part.write(chunk)
            self._plain.write(self._verifier.update(chunk))
        if self._total:
            percent = TRANSFER_PERCENT * self._verifier.bytes_in // self._total
            if percent // 10 > self._last_percent // 10:
                self._last_percent = percent
                self._progress(percent)

    def complete(self) -> None:
        """The body ended: check its length and digest.

        Raises:
            TransportError: the body is shorter than announced, or a resumed download did not
                verify (the partial is dropped and the next attempt starts from zero).
            VerificationError: `checksum_fail` / `decrypt_fail` for a download from byte 0.
        """
        assert self._plain is not None and self._verifier is not None and self._plan is not None
        received = self._verifier.bytes_in
        if self._total is not None and received != self._total:
            raise TransportError(f"body ended after {received} of {self._total} bytes")
        try:
            with disk_writes("writing the download"):
                self._plain.write(self._verifier.finish())
                self._plain.flush()
                assert self._part is not None
                self._part.flush()
            self._plan.check(self._verifier)
        except VerificationError:
            if not self._resumed:
                raise
            self._restart()  # the partial from an earlier run may be torn: start over once
            raise TransportError("resumed download did not verify; restarting from zero") from None
        finally:
            self.close()
        self.store.part_path(self.bundle_id).unlink(missing_ok=True)  # verified: not resumed

    def install(self) -> None:
        """Unpack the verified zip into staging and move it into place.

        Raises:
            VerificationError: the zip is unsafe or broken (`unzip_fail`, `*_path_fail`).
            LocalError: the disk failed.
        """
        staged = self.store.fresh_staging(self.bundle_id)
        try:
            safe_unzip(self.store.zip_path(self.bundle_id), staged)
        except OSError as exc:
            raise LocalError.from_os_error(exc, "unzip_fail", "unpack the bundle") from exc
        self.store.install(self.bundle_id, staged)

    def close(self) -> None:
        close_quietly(self._part)
        close_quietly(self._plain)
        self._part = self._plain = None
