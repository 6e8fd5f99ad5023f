"""What digest a bundle must have: the server's `checksum`, RSA-recovered when the app has a key.

Forms a server may send (capgo-protocol §6.1, §7.2):

- no public key: SHA-256 hex (64 chars) of the plain zip; CRC32 hex (8 chars) from old CLIs,
  accepted with a `DeprecationWarning`; empty means "nothing to compare".
- public key: a 256-byte RSA block (private-key PKCS#1 v1.5 type 1), either hex (512 chars,
  "V3": it wraps the 32 raw digest bytes) or base64 (legacy "V2": it wraps the base64-decoding
  of the 64-char hex digest, so the recovered bytes re-encode to that hex). Anything else is
  an unsigned bundle and is refused, as the plugin refuses it.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature

from agent.errors import VerificationError
from agent.security.keys import RSA_BLOCK_BYTES, PublicKey, recover_block

Algorithm = Literal["sha256", "crc32"]

_HEX: Final = re.compile(r"[0-9a-fA-F]+")
SHA256_HEX_CHARS: Final = 64
CRC32_HEX_CHARS: Final = 8


@dataclass(frozen=True)
class ExpectedChecksum:
    """The digest the plain bundle must have; `hex` is compared exactly, as the plugin does."""

    algorithm: Algorithm
    hex: str


def expected_checksum(
    checksum: str | None, public_key: PublicKey | None
) -> ExpectedChecksum | None:
    """Turn the server's `checksum` into the digest to compare, as the device would.

    Returns None only when no public key is configured and the checksum is empty.

    Raises:
        VerificationError: `checksum_required` when a public key is configured and the checksum
            is empty or is not a 256-byte RSA block; `checksum_fail` when the block does not
            verify with the key, wraps no SHA-256 digest, or (without a key) the checksum is
            neither 64 nor 8 hex characters.
    """
    text = checksum or ""
    if public_key is None:
        return _plain(text)
    if not text:
        raise VerificationError(
            "checksum_required", "the app has a public key but the server sent no checksum"
        )
    legacy = _HEX.fullmatch(text) is None
    block = _decode_block(text, legacy)
    try:
        data = recover_block(block, public_key)
    except InvalidSignature:
        raise VerificationError(
            "checksum_fail", "checksum signature does not verify with the app's public key"
        ) from None
    digest_hex = base64.b64encode(data).decode() if legacy else data.hex()
    if len(digest_hex) != SHA256_HEX_CHARS or _HEX.fullmatch(digest_hex) is None:
        raise VerificationError(
            "checksum_fail", f"signed checksum holds {len(data)} bytes, not a SHA-256 digest"
        )
    return ExpectedChecksum("sha256", digest_hex)


def signed_content_id(checksum: str | None, public_key: PublicKey) -> str | None:
    """The content identity a signed checksum names: the SHA-256 hex recovered from it.

    No re-encoding of the checksum field (case, base64 variants) changes it. Never raises:
    None when the checksum names no digest (the download then fails verification).
    """
    try:
        expected = expected_checksum(checksum, public_key)
    except VerificationError:
        return None
    return expected.hex.lower() if expected else None


def _plain(text: str) -> ExpectedChecksum | None:
    if not text:
        return None
    if _HEX.fullmatch(text) and len(text) == SHA256_HEX_CHARS:
        return ExpectedChecksum("sha256", text)
    if _HEX.fullmatch(text) and len(text) == CRC32_HEX_CHARS:
        warnings.warn(
            "CRC32 bundle checksum: deprecated by Capgo, re-upload with a SHA-256 checksum",
            DeprecationWarning,
            stacklevel=3,
        )
        return ExpectedChecksum("crc32", text)
    raise VerificationError(
        "checksum_fail",
        f"checksum ({len(text)} chars) is neither SHA-256 (64 hex) nor CRC32 (8 hex); "
        "a signed checksum needs the app's public key",
    )


def _decode_block(text: str, legacy: bool) -> bytes:
    try:
        block = base64.b64decode(text, validate=True) if legacy else bytes.fromhex(text)
    except (binascii.Error, ValueError):
        block = b""
    if len(block) != RSA_BLOCK_BYTES:
        raise VerificationError(
            "checksum_required",
            "the app has a public key but the checksum is not signed "
            "(publish the bundle encrypted with the matching private key)",
        )
    return block
