"""How one full bundle is verified: the device's decision from `checksum`, `session_key`, key."""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import VerificationError
from agent.security.checksum import ExpectedChecksum, expected_checksum
from agent.security.keys import PublicKey
from agent.security.session import SessionKey, is_session_key, recover_session_key
from agent.security.stream import StreamingVerifier, check_digest


@dataclass(frozen=True)
class BundleVerification:
    """What to decrypt with and what digest to expect, decided before the first byte arrives."""

    expected: ExpectedChecksum | None
    session: SessionKey | None

    def verifier(self) -> StreamingVerifier:
        """A fresh streaming verifier for this bundle (CRC32 only when it is expected)."""
        crc32 = self.expected is not None and self.expected.algorithm == "crc32"
        return StreamingVerifier(self.session, crc32=crc32)

    def check(self, verifier: StreamingVerifier) -> None:
        """Compare the finished verifier's digest with the expected one.

        Raises:
            VerificationError: `checksum_fail` on a mismatch.
        """
        check_digest(self.expected, verifier)


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
