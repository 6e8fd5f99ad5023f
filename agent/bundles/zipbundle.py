"""The one verify-and-unpack pipeline of a full-zip bundle, wherever its bytes come from.

A device downloading a bundle (`agent.drivers.fetch.BundleFetch`), `otasim bundle verify`,
the server checker, the property tests and the Capgo interop test all run these pieces:

1. `ZipPipeline`: raw bundle bytes in (as they arrive from the network, or read from a
   file), decrypted (Capgo v2 session key) and hashed by a `StreamingVerifier`; the plain
   zip out to a sink. `finish` checks the digest (and signature) against the plan.
2. `unpack_zip`: the verified plain zip unzipped safely (`safe_unzip`: no traversal, no
   links, size caps) into a staging folder that is then moved into place by one rename --
   by `DeviceStore.install` on a device, by `unpack_file` here.

`verify_file` and `unpack_file` run the pipeline over a file on disk (the writes of the plain
zip in a helper thread, `BackgroundWriter`, so they overlap decryption and hashing).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Final, Protocol

from agent.bundles.unzip import DEFAULT_LIMITS, UnzipLimits, safe_unzip
from agent.bundles.writer import BackgroundWriter
from agent.errors import LocalError
from agent.security.stream import StreamingVerifier
from agent.security.verify import BundleVerification

VERIFY_CHUNK_BYTES: Final = 256 * 1024  # measured: tests/benchmarks/test_bench_verify.py


class PlainSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class ZipPipeline:
    """Raw bundle bytes in, the plain zip out to `sink` (None: hash only), verified at the end.

    `feed` and `finish` raise `VerificationError` (`decrypt_fail`, `checksum_fail`) and
    whatever the sink raises (`OSError`: the caller names the disk failure).
    """

    def __init__(self, verification: BundleVerification, sink: PlainSink | None) -> None:
        self._plan = verification
        self._sink = sink
        self.verifier = verification.verifier()

    def check_against(self, verification: BundleVerification) -> None:
        """Check the end against `verification` (the same decryption; a digest, checksum or
        signature learned since, from the download's response head)."""
        self._plan = verification

    @property
    def bytes_in(self) -> int:
        """Raw bytes fed so far."""
        return self.verifier.bytes_in

    def feed(self, raw: bytes) -> None:
        plain = self.verifier.update(raw)
        if self._sink is not None and plain:
            self._sink.write(plain)

    def finish(self) -> StreamingVerifier:
        """Flush the last plain bytes, then check the digest. Returns the verifier.

        Raises:
            VerificationError: `decrypt_fail` or `checksum_fail`.
        """
        plain = self.verifier.finish()
        if self._sink is not None and plain:
            self._sink.write(plain)
        self._plan.check(self.verifier)
        return self.verifier


def unpack_zip(plain_zip: Path, staging: Path, limits: UnzipLimits = DEFAULT_LIMITS) -> None:
    """Unzip a verified plain zip safely into `staging` (a fresh folder).

    Raises:
        VerificationError: the zip is unsafe or broken (`unzip_fail`, `*_path_fail`).
        LocalError: the disk failed (`insufficient_disk_space`, `unzip_fail`).
    """
    try:
        safe_unzip(plain_zip, staging, limits)
    except OSError as exc:
        raise LocalError.from_os_error(exc, "unzip_fail", "unpack the bundle") from exc


def verify_file(
    src: Path,
    plain_out: Path | None,
    verification: BundleVerification,
    chunk_bytes: int = VERIFY_CHUNK_BYTES,
) -> StreamingVerifier:
    """Stream `src` through a `ZipPipeline`, writing the plain zip to `plain_out` (if given).

    On failure `plain_out` is removed. Returns the finished verifier (digests, byte counts).

    Raises:
        VerificationError: `decrypt_fail` or `checksum_fail`.
        LocalError: `download_fail` when `src` cannot be read or `plain_out` written.
    """
    try:
        sink = BackgroundWriter(plain_out) if plain_out is not None else nullcontext(None)
        with src.open("rb") as reader, sink as writer:
            pipeline = ZipPipeline(verification, writer)
            while chunk := reader.read(chunk_bytes):
                pipeline.feed(chunk)
            return pipeline.finish()
    except OSError as exc:
        _remove(plain_out)
        raise LocalError("download_fail", f"cannot read or write the bundle: {exc}") from None
    except BaseException:
        _remove(plain_out)
        raise


def unpack_file(
    src: Path, dest: Path, verification: BundleVerification, limits: UnzipLimits = DEFAULT_LIMITS
) -> StreamingVerifier:
    """Verify the bundle file `src`, then unzip it safely so that `dest` appears all at once.

    Work happens in a temporary folder beside `dest` (same file system), which is removed
    whatever happens; `dest` (absent or an empty folder, in an existing folder) is only
    replaced on success.

    Raises:
        ValueError: `dest` exists and is not an empty folder.
        VerificationError: any verification or unzip action (see `verify_file`, `safe_unzip`).
        LocalError: disk failures.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest} must not exist or be an empty folder")
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as work:
        plain = Path(work) / "bundle.zip"
        verifier = verify_file(src, plain, verification)
        staging = Path(work) / "files"
        unpack_zip(plain, staging, limits)
        os.replace(staging, dest)
    return verifier


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
