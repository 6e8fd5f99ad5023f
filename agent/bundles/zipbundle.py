"""A full-zip bundle file on disk: verify (decrypt + hash) it, then unpack it atomically."""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Final

from agent.bundles.unzip import DEFAULT_LIMITS, UnzipLimits, safe_unzip
from agent.bundles.writer import BackgroundWriter
from agent.errors import LocalError
from agent.security.stream import StreamingVerifier
from agent.security.verify import BundleVerification

VERIFY_CHUNK_BYTES: Final = 256 * 1024  # measured: tests/benchmarks/bench_verify.py


def verify_file(
    src: Path,
    plain_out: Path | None,
    verification: BundleVerification,
    chunk_bytes: int = VERIFY_CHUNK_BYTES,
) -> StreamingVerifier:
    """Stream `src` through the verifier, writing the plain zip to `plain_out` (if given).

    The writes run in a helper thread (`BackgroundWriter`) so they overlap decryption and
    hashing.

    On failure `plain_out` is removed. Returns the finished verifier (digests, byte counts).

    Raises:
        VerificationError: `decrypt_fail` or `checksum_fail`.
        LocalError: `download_fail` when `src` cannot be read or `plain_out` written.
    """
    verifier = verification.verifier()
    try:
        sink = BackgroundWriter(plain_out) if plain_out is not None else nullcontext(None)
        with src.open("rb") as reader, sink as writer:
            while chunk := reader.read(chunk_bytes):
                plain = verifier.update(chunk)
                if writer is not None:
                    writer.write(plain)
            plain = verifier.finish()
            if writer is not None:
                writer.write(plain)
        verification.check(verifier)
    except OSError as exc:
        _remove(plain_out)
        raise LocalError("download_fail", f"cannot read or write the bundle: {exc}") from None
    except BaseException:
        _remove(plain_out)
        raise
    return verifier


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
        safe_unzip(plain, staging, limits)
        os.replace(staging, dest)
    return verifier


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)
