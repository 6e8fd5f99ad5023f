"""The app's RSA public key, as the Capgo plugin reads it, and the raw RSA recovery.

Capgo v2 ships the developer's *public* key inside the app (`plugins.CapacitorUpdater.publicKey`
in `capacitor.config.json`), as a PKCS#1 PEM (`-----BEGIN RSA PUBLIC KEY-----`). The CLI
"encrypts" the session key and the checksum with the *private* key (PKCS#1 v1.5 type-1 padding,
no DigestInfo), so the device recovers them with a public-key signature recovery.

The plugin only understands PKCS#1 PEM; otasim also accepts an SPKI PEM (`-----BEGIN PUBLIC
KEY-----`) and converts it to PKCS#1, so `pem` and `key_id` are what the plugin would see had the
key been configured in its PKCS#1 form.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

PKCS1_PUBLIC_HEADER: Final = "-----BEGIN RSA PUBLIC KEY-----"
PKCS1_PUBLIC_FOOTER: Final = "-----END RSA PUBLIC KEY-----"
RSA_BLOCK_BYTES: Final = 256  # RSA-2048, the only size the plugin accepts
KEY_ID_CHARS: Final = 20


class PublicKeyError(ValueError):
    """The text is not a usable RSA-2048 public key (or config holding one)."""


@dataclass(frozen=True)
class PublicKey:
    """An app's public key: its PKCS#1 PEM text, its Capgo `key_id`, the key object."""

    pem: str
    key_id: str
    key: rsa.RSAPublicKey = field(repr=False, compare=False)


def key_id(public_pem: str) -> str:
    """The `key_id` the plugin sends: the first 20 characters of the PEM's base64 body.

    Like the plugin (`CryptoCipher.calcKeyId`) this removes all whitespace and the PKCS#1
    header/footer, then keeps 20 characters; an empty key gives "".
    """
    cleaned = "".join(public_pem.split())
    for marker in (PKCS1_PUBLIC_HEADER, PKCS1_PUBLIC_FOOTER):
        cleaned = cleaned.replace("".join(marker.split()), "")
    return cleaned[:KEY_ID_CHARS]


@functools.lru_cache(maxsize=16)
def load_public_key(text: str) -> PublicKey:
    """Load an app public key from PEM text or from capacitor.config JSON text.

    Cached (a `PublicKey` is immutable): a fleet's devices share their app's key, and each
    reopens its agent many times a day.

    Accepts a PKCS#1 (`RSA PUBLIC KEY`) or SPKI (`PUBLIC KEY`) PEM, or the JSON of a
    `capacitor.config.json` whose `plugins.CapacitorUpdater.publicKey` holds such a PEM.

    Raises:
        PublicKeyError: not PEM nor such JSON, not RSA, or not a 2048-bit key.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        stripped = _public_key_from_config(stripped).strip()
    try:
        key = serialization.load_pem_public_key(stripped.encode())
    except ValueError as exc:
        raise PublicKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PublicKeyError("not an RSA public key")
    if key.key_size != RSA_BLOCK_BYTES * 8:
        raise PublicKeyError(f"RSA key is {key.key_size} bits; Capgo devices need 2048")
    if not stripped.startswith(PKCS1_PUBLIC_HEADER):
        stripped = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ).decode()
    return PublicKey(pem=stripped, key_id=key_id(stripped), key=key)


def _public_key_from_config(text: str) -> str:
    try:
        config = json.loads(text)
        value = config["plugins"]["CapacitorUpdater"]["publicKey"]
    except (ValueError, KeyError, TypeError):
        raise PublicKeyError(
            "JSON has no plugins.CapacitorUpdater.publicKey (is it a capacitor.config.json?)"
        ) from None
    if not isinstance(value, str) or not value.strip():
        raise PublicKeyError("plugins.CapacitorUpdater.publicKey is empty or not a string")
    return value


def recover_block(block: bytes, public_key: PublicKey) -> bytes:
    """Recover the data a private-key PKCS#1 v1.5 type-1 operation wrapped in `block`.

    Raises:
        InvalidSignature: the block is not `RSA_BLOCK_BYTES` long or its padding is wrong
            (wrong key, tampered block).
    """
    if len(block) != RSA_BLOCK_BYTES:
        raise InvalidSignature(f"RSA block is {len(block)} bytes, expected {RSA_BLOCK_BYTES}")
    return public_key.key.recover_data_from_signature(
        block, padding.PKCS1v15(), utils.NoDigestInfo()
    )
