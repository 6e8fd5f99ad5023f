"""A delta (manifest) bundle download, shared by both drivers: one transfer per file.

Every file of the manifest is fetched from its own URL, decrypted with the bundle's session
key (when the app has a public key), un-brotlied when its name ends in `.br`, hashed and
compared with its `file_hash`, and written under its checked name into the staging folder.
When all files are in, the folder moves into `bundles/<id>` by one rename, as a zip bundle
does. Files are small, so a failed file restarts from byte 0 instead of resuming. A file whose
content the device already holds (in its current or fallback bundle) is copied, not fetched.
Each file's transfer is decided by its own `agent.core.download.Download` machine (status,
length, the body's end); all of them share one `Pace`: the deadline (`download_timeout_s`, in
real time), the stall window and the size cap over every byte of the bundle. Indexing the
contents of the current bundles (hashing every file) is `prepare`, which the asyncio driver
runs off the event loop.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from agent.bundles.manifest import DeltaFileVerifier, check_manifest_targets
from agent.config import AgentConfig
from agent.core.download import (
    ZIP_ESTIMATE,
    Download,
    DownloadEffect,
    EnsureFreeSpace,
    Pace,
)
from agent.drivers.fetch import (
    MachineTransfer,
    Transfer,
    check_free_space,
    close_quietly,
    disk_writes,
)
from agent.drivers.http import HttpRequest
from agent.errors import LocalError
from agent.protocol.base import ManifestEntry, UpdateOffer
from agent.security.keys import PublicKey
from agent.security.session import SessionKey, is_session_key, recover_session_key
from agent.store import DeviceStore

FILE_ESTIMATE = 100 * 1024  # the plugin's per-file size estimate
FIRST_PERCENT, LAST_PERCENT = 10, 70  # the plugin reports 10..70 by file count


def digest_index(folders: Iterable[Path]) -> dict[str, Path]:
    """SHA-256 hex -> one regular file with that content, over every file of `folders`."""
    index: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as handle:
                    index.setdefault(hashlib.file_digest(handle, "sha256").hexdigest(), path)
    return index


class FileTransfer(MachineTransfer):
    """One manifest file, streamed through its `DeltaFileVerifier` into `target`."""

    name = "delta file"
    heavy_start = False

    def __init__(
        self,
        entry: ManifestEntry,
        make_verifier: Callable[[], DeltaFileVerifier],
        target: Path,
        pace: Pace,
        config: AgentConfig,
        now: Callable[[], float],
    ) -> None:
        super().__init__(Download(pace, f"delta file {entry.file_name}"), now)
        self._entry = entry
        self._make_verifier = make_verifier
        self._target = target
        self._config = config
        self._verifier: DeltaFileVerifier | None = None
        self._out: BinaryIO | None = None

    def start(self) -> HttpRequest:
        self.close()
        self._verifier = self._make_verifier()
        with disk_writes("creating a delta file"):
            self._target.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self._target, "wb")  # noqa: SIM115 - closed in close()
        fetch = self._attempt(0)  # a file restarts from 0: it is never resumed
        return HttpRequest(
            "GET",
            self._entry.download_url,
            dict(self._entry.headers),
            timeout_s=self._config.response_timeout_s,
            deadline=fetch.deadline,
        )

    def feed(self, chunk: bytes) -> None:
        assert self._out is not None and self._verifier is not None
        with disk_writes("writing a delta file"):
            self._out.write(self._verifier.update(chunk))
        self._received(len(chunk))

    def _finish(self) -> None:
        assert self._out is not None and self._verifier is not None
        with disk_writes("writing a delta file"):
            self._out.write(self._verifier.finish())
            self._out.flush()

    def _perform(self, effect: DownloadEffect) -> None:
        """Nothing to do: the manifest asked for its space before its first file
        (`ManifestFetch.prepare`), reports progress by file count, and keeps no partial."""

    def close(self) -> None:
        close_quietly(self._out)
        self._out = None


class ManifestFetch:
    """Download, verify and install one manifest bundle (see the module docstring)."""

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
        reuse_from: Sequence[Path] = (),
    ) -> None:
        assert offer.manifest is not None
        self.store = store
        self.bundle_id = bundle_id
        self.entries = list(offer.manifest)
        self.offer = offer
        self.config = config
        self._public_key = public_key
        self._now = now
        self._progress = progress
        self._staged: Path | None = None
        self._current: FileTransfer | None = None
        self._reuse_from = reuse_from
        self._index: dict[str, Path] = {}
        self._targets: list[str] = []
        self._session: SessionKey | None = None
        estimate = 2 * max(len(self.entries) * FILE_ESTIMATE, ZIP_ESTIMATE)
        self._pace = Pace.of(config, shared_cap=True, estimate=estimate)
        self._what = f"delta {offer.version}"

    def prepare(self) -> None:
        """Check free space, every path and the session key before the first file, and index
        what the device already holds (hashing every file of its current bundles).

        Raises:
            VerificationError: `manifest_path_fail`, `decrypt_fail`, `checksum_required`.
            LocalError: `insufficient_disk_space`.
        """
        for effect in self._pace.begin(time.monotonic()):
            assert isinstance(effect, EnsureFreeSpace)
            check_free_space(self.store, effect.bytes)
        self._targets = check_manifest_targets(self.entries)
        if self._public_key is not None and is_session_key(self.offer.session_key):
            self._session = recover_session_key(self.offer.session_key, self._public_key)
        self._index = digest_index(self._reuse_from)

    def transfers(self) -> Iterator[Transfer]:
        """The files to fetch, in order, after `prepare`.

        Raises:
            VerificationError: `download_manifest_checksum_fail`, over the cap.
            DownloadStopped: the download deadline passed.
        """
        self._staged = self.store.fresh_staging(self.bundle_id)
        session = self._session
        for done, (entry, name) in enumerate(zip(self.entries, self._targets, strict=True)):
            make_verifier = functools.partial(DeltaFileVerifier, entry, session, self._public_key)
            target = self._staged / name
            late = self._pace.overdue(time.monotonic(), self._what)
            if late is not None:
                raise late
            if not self._reuse(make_verifier().expected_hash, target):
                self._current = FileTransfer(
                    entry, make_verifier, target, self._pace, self.config, self._now
                )
                yield self._current
            span = LAST_PERCENT - FIRST_PERCENT
            self._progress(FIRST_PERCENT + span * (done + 1) // len(self.entries))

    def _reuse(self, sha256_hex: str, target: Path) -> bool:
        """Copy a file the device already has with exactly this content, instead of fetching it
        (the plugin's file-level dedup; here from the current and fallback bundles)."""
        source = self._index.get(sha256_hex)
        if source is None:
            return False
        with disk_writes("copying a delta file"):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return True

    def install(self) -> None:
        """Move the complete staging folder into place. Raises LocalError."""
        if self._staged is None:
            raise LocalError("set_fail", "no delta files were staged")
        self.store.install(self.bundle_id, self._staged)

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
