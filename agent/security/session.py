"""Capgo v2 session keys: `base64(IV) ":" base64(RSA block of the 16-byte AES key)`."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature

from agent.errors import VerificationError
from agent.security.keys import PublicKey, recover_block

AES_KEY_BYTES: Final = 16  # AES-128, as the CLI and both plugins use
AES_IV_BYTES: Final = 16


@dataclass(frozen=True)
class SessionKey:
    """The AES-128-CBC key and IV of one bundle (shared by its delta files)."""

    key: bytes
    iv: bytes

    def __post_init__(self) -> None:
        if len(self.key) != AES_KEY_BYTES or len(self.iv) != AES_IV_BYTES:
            raise ValueError("SessionKey needs a 16-byte key and a 16-byte IV")


def is_session_key(session_key: str | None) -> bool:
    """True when `session_key` has the plugin's shape: two non-empty parts around one ':'."""
    if not session_key:
        return False
    parts = session_key.split(":")
    return len(parts) == 2 and all(parts)


def recover_session_key(session_key: str, public_key: PublicKey) -> SessionKey:
    """Recover the bundle's AES key and IV from its `session_key` with the app's public key.

    Raises:
        VerificationError: action `decrypt_fail` when the text is malformed, the IV is not
            16 bytes, the RSA block does not verify with this key, or it holds no 16-byte key.
    """
    if not is_session_key(session_key):
        raise VerificationError("decrypt_fail", "session key is not 'IV:KEY' (two base64 parts)")
    iv_b64, block_b64 = session_key.split(":")
    iv = _b64(iv_b64, "IV")
    if len(iv) != AES_IV_BYTES:
        raise VerificationError("decrypt_fail", f"session key IV is {len(iv)} bytes, expected 16")
    try:
        key = recover_block(_b64(block_b64, "key block"), public_key)
    except InvalidSignature:
        raise VerificationError(
            "decrypt_fail", "session key was not made with this app's private key"
        ) from None
    if len(key) != AES_KEY_BYTES:
        raise VerificationError("decrypt_fail", f"session key holds {len(key)} bytes, expected 16")
    return SessionKey(key=key, iv=iv)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise VerificationError("decrypt_fail", f"session key {what} is not base64") from None
