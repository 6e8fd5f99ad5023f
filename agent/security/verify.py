"""How one full bundle is verified: the device's decision from the offer and the app's key
(Capgo's `checksum`/`session_key` forms, or a dialect's file checksum/signature)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from agent.errors import VerificationError
from agent.protocol.base import UpdateOffer
from agent.security.checksum import ExpectedChecksum, expected_checksum, signed_content_id
from agent.security.file_integrity import FileIntegrity, signature_content_id
from agent.security.keys import PublicKey
from agent.security.session import SessionKey, is_session_key, recover_session_key
from agent.security.stream import StreamingVerifier, check_digest


@dataclass(frozen=True)
class BundleVerification:
    """What to decrypt with and what digest to expect, decided before the first byte arrives."""

    expected: ExpectedChecksum | None
    session: SessionKey | None
    file: FileIntegrity | None = None  # the "file" scheme's checksum/signature (no Capgo form)

    def verifier(self) -> StreamingVerifier:
        """A fresh streaming verifier for this bundle (CRC32 only when it is expected)."""
        crc32 = self.expected is not None and self.expected.algorithm == "crc32"
        return StreamingVerifier(self.session, crc32=crc32)

    def check(self, verifier: StreamingVerifier) -> None:
        """Compare the finished verifier's digest with the expected one.

        Raises:
            VerificationError: `checksum_fail` on a mismatch; `checksum_required` when the
                file scheme got nothing that proves the file.
        """
        check_digest(self.expected, verifier)
        if self.file is not None:
            if not verifier.sha256_hex:
                raise RuntimeError("check before StreamingVerifier.finish")
            self.file.check(verifier.sha256_hex)

    def with_headers(self, headers: Mapping[str, str]) -> BundleVerification:
        """The plan once the download's response headers are known (the file scheme may take
        its checksum or signature from them)."""
        if self.file is None:
            return self
        return replace(self, file=self.file.with_headers(headers))


def offer_content_id(offer: UpdateOffer, public_key: PublicKey) -> str | None:
    """The content identity an offer names for a device with `public_key` (what anti-rollback
    remembers): the digest its signed checksum recovers (Capgo), or its file signature's own
    identity (the "file" scheme). Never raises: None when it names nothing."""
    if offer.integrity == "file":
        return signature_content_id(offer.signature, public_key)
    return signed_content_id(offer.checksum, public_key)


def plan_offer_verification(offer: UpdateOffer, public_key: PublicKey | None) -> BundleVerification:
    """How the full bundle of `offer` is verified, by the offer's integrity scheme.

    Raises:
        VerificationError: as `plan_bundle_verification` for Capgo's scheme.
    """
    if offer.integrity == "file":
        return BundleVerification(
            None, None, FileIntegrity(offer.checksum, offer.signature, public_key)
        )
    return plan_bundle_verification(offer.checksum, offer.session_key, public_key)


def plan_bundle_verification(
    checksum: str | None, session_key: str | None, public_key: PublicKey | None
) -> BundleVerification:
    """Decide, as the plugin does, how a full-zip bundle offered with these fields is verified.

    With a public key the checksum must be signed and the bundle encrypted; without one the
    session key is ignored (the plugin then hashes the ciphertext, so the check fails).

    Raises:
        VerificationError: `checksum_required`, `checksum_fail` (see `expected_checksum`), or
            `decrypt_fail` when the session key cannot be recovered.
    """
    expected = expected_checksum(checksum, public_key)
    if public_key is None:
        return BundleVerification(expected, None)
    if not is_session_key(session_key):
        raise VerificationError(
            "checksum_required",
            "the app has a public key but the bundle is not encrypted (no session key)",
        )
    assert session_key is not None  # is_session_key() is False for None
    return BundleVerification(expected, recover_session_key(session_key, public_key))
