"""Streaming verification: hash the plain bundle while AES-128-CBC decrypting it, chunk by chunk.

Pure: bytes in, bytes out. The caller writes the plaintext where it wants and enforces size
caps and deadlines; memory stays bounded by the chunk size whatever the bundle size.
"""

from __future__ import annotations

import hashlib
import zlib

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.errors import VerificationError
from agent.security.checksum import ExpectedChecksum
from agent.security.session import SessionKey

AES_BLOCK_BITS = 128


class AesCbcDecrypter:
    """AES-128-CBC with PKCS#7 padding, incremental: what `npx @capgo/cli` encrypts with."""

    def __init__(self, session: SessionKey) -> None:
        cipher = Cipher(algorithms.AES(session.key), modes.CBC(session.iv))
        self._decryptor = cipher.decryptor()
        self._unpadder = padding.PKCS7(AES_BLOCK_BITS).unpadder()
        self.bytes_in = 0

    def update(self, chunk: bytes | memoryview) -> bytes:
        """Decrypt the next ciphertext bytes; the last block is held back for `finish`."""
        self.bytes_in += len(chunk)
        return self._unpadder.update(self._decryptor.update(chunk))

    def finish(self) -> bytes:
        """Return the last plaintext bytes, padding removed.

        Raises:
            VerificationError: `decrypt_fail` when the ciphertext is empty, not a whole number
                of AES blocks, or its padding is wrong (wrong key or IV, truncated, tampered).
        """
        try:
            return self._unpadder.update(self._decryptor.finalize()) + self._unpadder.finalize()
        except ValueError:
            raise VerificationError(
                "decrypt_fail",
                f"AES-CBC decryption failed after {self.bytes_in} bytes: "
                "bad padding or length (wrong session key, truncated or tampered file)",
            ) from None


class StreamingVerifier:
    """Feed the downloaded bytes in any chunking; get the plaintext and its digests.

    With a `SessionKey` the input is AES-128-CBC ciphertext with PKCS#7 padding (what
    `npx @capgo/cli bundle encrypt` writes); without one it passes through unchanged.
    SHA-256 (and, with `crc32=True`, CRC32) is computed over the plaintext.
    """

    def __init__(self, session: SessionKey | None, *, crc32: bool = False) -> None:
        self._decrypter = AesCbcDecrypter(session) if session is not None else None
        self._sha256 = hashlib.sha256()
        self._crc32: int | None = 0 if crc32 else None
        self._finished = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.sha256_hex = ""
        self.crc32_hex = ""

    def update(self, chunk: bytes | memoryview) -> bytes:
        """Take the next input bytes; return the plaintext that is ready to write.

        Raises:
            RuntimeError: called after `finish`.
        """
        if self._finished:
            raise RuntimeError("StreamingVerifier.update after finish")
        self.bytes_in += len(chunk)
        plain = bytes(chunk) if self._decrypter is None else self._decrypter.update(chunk)
        self._digest(plain)
        return plain

    def finish(self) -> bytes:
        """End the stream; return the last plaintext and set `sha256_hex` / `crc32_hex`.

        Raises:
            VerificationError: `decrypt_fail` (see `AesCbcDecrypter.finish`).
            RuntimeError: called twice.
        """
        if self._finished:
            raise RuntimeError("StreamingVerifier.finish called twice")
        self._finished = True
        plain = b"" if self._decrypter is None else self._decrypter.finish()
        self._digest(plain)
        self.sha256_hex = self._sha256.hexdigest()
        if self._crc32 is not None:
            self.crc32_hex = f"{self._crc32:08x}"
        return plain

    def _digest(self, plain: bytes) -> None:
        self.bytes_out += len(plain)
        self._sha256.update(plain)
        if self._crc32 is not None:
            self._crc32 = zlib.crc32(plain, self._crc32)


def check_digest(expected: ExpectedChecksum | None, verifier: StreamingVerifier) -> None:
    """Compare the finished verifier's digest with the expected checksum (None: nothing to do).

    The comparison is exact, as the plugin's (`expectedChecksum.equals(checksum)`).

    Raises:
        VerificationError: `checksum_fail` on a mismatch.
        RuntimeError: the verifier is not finished, or CRC32 is expected but was not computed.
    """
    if expected is None:
        return
    if not verifier.sha256_hex:
        raise RuntimeError("check_digest before StreamingVerifier.finish")
    if expected.algorithm == "crc32" and not verifier.crc32_hex:
        raise RuntimeError("CRC32 expected: build the verifier with crc32=True")
    actual = verifier.sha256_hex if expected.algorithm == "sha256" else verifier.crc32_hex
    if actual != expected.hex:
        raise VerificationError(
            "checksum_fail",
            f"{expected.algorithm} of the bundle is {actual}, the server said {expected.hex}",
        )
