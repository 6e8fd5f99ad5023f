"""Delta (manifest) bundles, device side: parse the manifest and verify each file as it streams.

Each entry is one file of the bundle (capgo-protocol §6.2). Its bytes are AES-128-CBC
encrypted with the bundle's session key and IV when the app has a public key, brotli-compressed
when `file_name` ends in `.br` (the file is placed without the suffix), and its `file_hash` is
the SHA-256 hex of the final file (RSA-signed when the app has a public key). The plugin
compares file hashes without regard to case; so does this module.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

import brotli  # type: ignore[import-untyped]  # no stubs published

from agent.bundles.unzip import check_relative_path
from agent.errors import ProtocolError, VerificationError
from agent.protocol.base import ManifestEntry
from agent.protocol.bounds import url_problem
from agent.security.checksum import expected_checksum
from agent.security.keys import PublicKey
from agent.security.session import SessionKey
from agent.security.stream import AesCbcDecrypter

BROTLI_SUFFIX: Final = ".br"
DEFAULT_MAX_FILE_BYTES: Final = 512 * 1024 * 1024
_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")


def parse_manifest(raw: object) -> list[ManifestEntry]:
    """Parse the `manifest` array of an update response.

    Raises:
        ProtocolError: not a list of objects with non-empty string `file_name`, `file_hash`
            and `download_url`.
    """
    if not isinstance(raw, list):
        raise ProtocolError(f"manifest is {type(raw).__name__}, expected a list")
    entries = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ProtocolError(f"manifest[{index}] is {type(item).__name__}, expected an object")
        fields = [item.get(k) for k in ("file_name", "file_hash", "download_url")]
        if not all(isinstance(f, str) and f for f in fields):
            raise ProtocolError(
                f"manifest[{index}] needs non-empty string file_name, file_hash, download_url"
            )
        problem = url_problem(str(fields[2]))
        if problem:
            raise ProtocolError(f"manifest[{index}] download_url: {problem}")
        entries.append(ManifestEntry(str(fields[0]), str(fields[1]), str(fields[2])))
    return entries


def target_name(file_name: str) -> str:
    """Where a manifest file goes in the bundle: its name without `.br`, checked.

    Raises:
        VerificationError: `manifest_path_fail` for absolute, `..`, Windows, NUL or empty paths.
    """
    name = file_name.removesuffix(BROTLI_SUFFIX)
    try:
        return "/".join(check_relative_path(name))
    except VerificationError as exc:
        raise VerificationError("manifest_path_fail", exc.reason) from None


def check_manifest_targets(entries: list[ManifestEntry]) -> list[str]:
    """The target names of a whole manifest, refusing bad or duplicate ones.

    Raises:
        VerificationError: `manifest_path_fail` (see `target_name`; also two entries with one
            target, compared without regard to case).
    """
    seen: set[str] = set()
    names = []
    for entry in entries:
        name = target_name(entry.file_name)
        if name.casefold() in seen:
            raise VerificationError("manifest_path_fail", f"two manifest files write {name!r}")
        seen.add(name.casefold())
        names.append(name)
    return names


def expected_file_hash(file_hash: str, public_key: PublicKey | None) -> str:
    """The SHA-256 hex a manifest file must have (RSA-recovered when the app has a key).

    Raises:
        VerificationError: `download_manifest_checksum_fail` when the hash is not a SHA-256
            hex (no key), or is not a valid signed hash for the key.
    """
    if public_key is None:
        if not _SHA256_HEX.fullmatch(file_hash):
            raise VerificationError(
                "download_manifest_checksum_fail", f"file_hash {file_hash!r} is not SHA-256 hex"
            )
        return file_hash.lower()
    try:
        expected = expected_checksum(file_hash, public_key)
    except VerificationError as exc:
        raise VerificationError("download_manifest_checksum_fail", exc.reason) from None
    assert expected is not None  # never None with a public key
    return expected.hex.lower()


class DeltaFileVerifier:
    """Verify one manifest file as it streams: decrypt -> un-brotli -> SHA-256.

    `session` is the bundle's recovered session key (None for unencrypted bundles); it is
    only used when the app has a public key, as on the device.
    """

    def __init__(
        self,
        entry: ManifestEntry,
        session: SessionKey | None,
        public_key: PublicKey | None,
        *,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        """Check the entry's path and hash before any byte arrives.

        Raises:
            VerificationError: `manifest_path_fail`, `download_manifest_checksum_fail`, or
                `checksum_required` when the app has a key but the bundle has no session key.
        """
        self.entry = entry
        self.target_name = target_name(entry.file_name)
        self.expected_hash = expected_file_hash(entry.file_hash, public_key)
        if public_key is not None and session is None:
            raise VerificationError(
                "checksum_required", "the app has a public key but the bundle is not encrypted"
            )
        self._decrypter = AesCbcDecrypter(session) if public_key and session else None
        is_brotli = entry.file_name.endswith(BROTLI_SUFFIX)
        self._brotli = brotli.Decompressor() if is_brotli else None
        self._sha256 = hashlib.sha256()
        self._max_bytes = max_bytes
        self.bytes_in = 0
        self.bytes_out = 0
        self.sha256_hex = ""

    def update(self, chunk: bytes | memoryview) -> bytes:
        """Take the next downloaded bytes; return the file bytes ready to write.

        Raises:
            VerificationError: `download_manifest_brotli_fail` (corrupt brotli stream, or the
                file grows past `max_bytes`).
        """
        self.bytes_in += len(chunk)
        data = bytes(chunk) if self._decrypter is None else self._decrypter.update(chunk)
        return self._out(self._inflate(data))

    def finish(self) -> bytes:
        """End the file; return its last bytes once its hash matched.

        Raises:
            VerificationError: `decrypt_fail`, `download_manifest_brotli_fail` (truncated
                stream), `download_manifest_checksum_fail` (hash mismatch).
        """
        data = b"" if self._decrypter is None else self._decrypter.finish()
        tail = self._out(self._inflate(data))
        if self._brotli is not None and not self._brotli.is_finished():
            raise self._brotli_fail("brotli stream is truncated")
        self.sha256_hex = self._sha256.hexdigest()
        if self.sha256_hex != self.expected_hash:
            raise VerificationError(
                "download_manifest_checksum_fail",
                f"{self.target_name}: SHA-256 is {self.sha256_hex}, manifest says "
                f"{self.expected_hash}",
            )
        return tail

    def _inflate(self, data: bytes) -> bytes:
        if self._brotli is None or not data:
            return data
        limit = self._max_bytes - self.bytes_out + 1
        try:
            pieces = [self._brotli.process(data, output_buffer_limit=limit)]
            while not self._brotli.can_accept_more_data():
                if sum(map(len, pieces)) >= limit:
                    break
                pieces.append(self._brotli.process(b"", output_buffer_limit=limit))
        except brotli.error as exc:
            raise self._brotli_fail(f"corrupt brotli stream: {exc}") from None
        return b"".join(pieces)

    def _out(self, data: bytes) -> bytes:
        self.bytes_out += len(data)
        if self.bytes_out > self._max_bytes:
            raise self._brotli_fail(f"file is larger than {self._max_bytes} bytes")
        self._sha256.update(data)
        return data

    def _brotli_fail(self, reason: str) -> VerificationError:
        return VerificationError("download_manifest_brotli_fail", f"{self.target_name}: {reason}")
