"""A delta (manifest) bundle download, shared by both drivers: one transfer per file.

Every file of the manifest is fetched from its own URL, decrypted with the bundle's session
key (when the app has a public key), un-brotlied when its name ends in `.br`, hashed and
compared with its `file_hash`, and written under its checked name into the staging folder.
When all files are in, the folder moves into `bundles/<id>` by one rename, as a zip bundle
does. Files are small, so a failed file restarts from byte 0 instead of resuming. A file whose
content the device already holds (in its current or fallback bundle) is copied, not fetched.
The whole download shares one `DownloadDeadline` (`download_timeout_s`, in real time).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from agent.bundles.manifest import DeltaFileVerifier, check_manifest_targets
from agent.config import AgentConfig
from agent.drivers.fetch import (
    ZIP_ESTIMATE,
    DownloadDeadline,
    Transfer,
    check_free_space,
    check_status,
)
from agent.drivers.http import HttpRequest
from agent.errors import LocalError, VerificationError
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


class FileTransfer:
    """One manifest file, streamed through its `DeltaFileVerifier` into `target`."""

    name = "delta file"

    def __init__(
        self,
        entry: ManifestEntry,
        make_verifier: Callable[[], DeltaFileVerifier],
        target: Path,
        budget: Callable[[int], None],
        config: AgentConfig,
        now: Callable[[], float],
    ) -> None:
        self._entry = entry
        self._make_verifier = make_verifier
        self._target = target
        self._budget = budget
        self._config = config
        self._now = now
        self._verifier: DeltaFileVerifier | None = None
        self._out: BinaryIO | None = None

    def request(self) -> HttpRequest:
        self.close()
        self._verifier = self._make_verifier()
        self._target.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(self._target, "wb")  # noqa: SIM115 - closed in close()
        return HttpRequest(
            "GET", self._entry.download_url, timeout_s=self._config.response_timeout_s
        )

    def open(self, status: int, headers: Mapping[str, str]) -> None:
        check_status(status, headers, self._now())

    def feed(self, chunk: bytes) -> None:
        assert self._out is not None and self._verifier is not None
        self._budget(len(chunk))
        self._out.write(self._verifier.update(chunk))

    def complete(self) -> None:
        assert self._out is not None and self._verifier is not None
        try:
            self._out.write(self._verifier.finish())
        finally:
            self.close()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
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
        self._received = 0
        self._staged: Path | None = None
        self._current: FileTransfer | None = None
        self._reuse_from = reuse_from
        self._index: dict[str, Path] | None = None
        self._deadline = DownloadDeadline(config.download_timeout_s, f"delta {offer.version}")

    def _session(self) -> SessionKey | None:
        if self._public_key is None or not is_session_key(self.offer.session_key):
            return None
        return recover_session_key(self.offer.session_key, self._public_key)

    def _spend(self, size: int) -> None:
        self._deadline.check()
        self._received += size
        if self._received > self.config.max_bundle_bytes:
            raise VerificationError("download_fail", "delta bundle is larger than the cap")

    def transfers(self) -> Iterator[Transfer]:
        """The files to fetch, in order (paths and keys are checked before the first).

        Raises:
            VerificationError: `manifest_path_fail`, `decrypt_fail`, `checksum_required`,
                `download_manifest_checksum_fail`.
            DownloadStopped: the download deadline passed.
        """
        check_free_space(self.store, max(len(self.entries) * FILE_ESTIMATE, ZIP_ESTIMATE))
        targets = check_manifest_targets(self.entries)
        session = self._session()
        self._staged = self.store.fresh_staging(self.bundle_id)
        for done, (entry, name) in enumerate(zip(self.entries, targets, strict=True)):
            make_verifier = functools.partial(DeltaFileVerifier, entry, session, self._public_key)
            target = self._staged / name
            self._deadline.check()
            if not self._reuse(make_verifier().expected_hash, target):
                self._current = FileTransfer(
                    entry, make_verifier, target, self._spend, self.config, self._now
                )
                yield self._current
            span = LAST_PERCENT - FIRST_PERCENT
            self._progress(FIRST_PERCENT + span * (done + 1) // len(self.entries))

    def _reuse(self, sha256_hex: str, target: Path) -> bool:
        """Copy a file the device already has with exactly this content, instead of fetching it
        (the plugin's file-level dedup; here from the current and fallback bundles)."""
        if self._index is None:
            self._index = digest_index(self._reuse_from)
        source = self._index.get(sha256_hex)
        if source is None:
            return False
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
