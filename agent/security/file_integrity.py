"""Integrity of the dialects that hash or sign the downloaded file itself (Capawesome).

The server proves a bundle with a SHA-256 hex `checksum` of the file and/or a `signature`:
RSASSA-PKCS1-v1_5 with SHA-256 over the file, base64. Either may come in the answer or, when
the answer has none, as `X-Checksum` / `X-Signature` headers of the download. The rules:

- the app has a public key: the signature is required and must verify with that key (a
  checksum given too must also match);
- no key: a checksum is required (a signature cannot be checked and is ignored).

otasim refuses what the Capawesome plugin would install unverified (no checksum and no key).
The signature is checked against the streamed SHA-256 digest (`Prehashed`), so the file is
read once and never held in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

from agent.errors import VerificationError
from agent.security.keys import PublicKey

_SHA256_HEX: Final = re.compile(r"[0-9a-fA-F]{64}")
MAX_SIGNATURE_CHARS: Final = 4096


def checksum_problem(checksum: str) -> str | None:
    """Why `checksum` is not a SHA-256 hex digest (None when it is): never raises."""
    if _SHA256_HEX.fullmatch(checksum) is None:
        return f"checksum ({len(checksum)} chars) is not a SHA-256 hex digest"
    return None


def decode_signature(text: str, public_key: PublicKey) -> bytes:
    """The signature bytes of a base64 `text`, as long as the key's modulus.

    Raises:
        VerificationError: `checksum_fail` when it is not base64 of the right length.
    """
    try:
        raw = base64.b64decode(text.strip()[:MAX_SIGNATURE_CHARS], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != public_key.key.key_size // 8:
        raise VerificationError("checksum_fail", "the signature is not base64 of an RSA block")
    return raw


def signature_content_id(signature: str | None, public_key: PublicKey) -> str | None:
    """The content identity a file signature names: `sig:` and the SHA-256 of its bytes.

    PKCS#1 v1.5 signatures are deterministic: one content signed with one key has exactly one
    signature, so a replayed or relabelled signed bundle carries the identity it had when it
    was confirmed here. Never raises: None when the signature is malformed (the download
    then fails verification).
    """
    if not signature:
        return None
    try:
        raw = decode_signature(signature, public_key)
    except VerificationError:
        return None
    return "sig:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class FileIntegrity:
    """What the downloaded file must satisfy, known from the answer (and the download's
    headers once they arrive)."""

    checksum: str | None
    signature: str | None
    public_key: PublicKey | None

    def with_headers(self, headers: Mapping[str, str]) -> FileIntegrity:
        """Fill what the answer left out from the download's `x-checksum` / `x-signature`.

        A signature is taken from a header only when the app has no key (it is then never
        checked): with a key it must come in the answer, because the anti-rollback decision
        (is this content one confirmed here under another label or a newer version?) is made
        from the answer, before the download: a signature arriving later would let a replayed
        old bundle slip past it.
        """
        signature = self.signature
        if signature is None and self.public_key is None:
            signature = headers.get("x-signature") or None
        return replace(
            self, checksum=self.checksum or headers.get("x-checksum") or None, signature=signature
        )

    def check(self, sha256_hex: str) -> None:
        """Check the finished file's SHA-256 (hex) against the checksum and signature.

        Raises:
            VerificationError: `checksum_required` when nothing proves the file (a key but no
                signature, or no key and no checksum); `checksum_fail` on a malformed or
                mismatching checksum or a signature that does not verify.
        """
        if self.checksum is not None:
            problem = checksum_problem(self.checksum)
            if problem:
                raise VerificationError("checksum_fail", problem)
            if self.checksum.lower() != sha256_hex:
                raise VerificationError(
                    "checksum_fail",
                    f"sha256 of the bundle is {sha256_hex}, the server said {self.checksum}",
                )
        if self.public_key is None:
            if self.checksum is None:
                raise VerificationError(
                    "checksum_required", "the server gave no checksum: nothing proves the bundle"
                )
            return
        if not self.signature:
            raise VerificationError(
                "checksum_required",
                "the app has a public key but the answer carries no signature "
                "(a download header's signature is not taken with a key)",
            )
        signature = decode_signature(self.signature, self.public_key)
        try:
            self.public_key.key.verify(
                signature,
                bytes.fromhex(sha256_hex),
                padding.PKCS1v15(),
                utils.Prehashed(hashes.SHA256()),
            )
        except InvalidSignature:
            raise VerificationError(
                "checksum_fail", "the bundle's signature does not verify with the app's key"
            ) from None
