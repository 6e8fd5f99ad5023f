"""Signed release metadata (otasim's opt-in strict mode; Capgo v2 has no equivalent).

A Capgo v2 answer signs each bundle's checksum (and each delta file's hash) but not the
version label, nothing binds a set of delta files together, and nothing says how fresh an
answer is. So a server or a man in the middle can replay an older genuine release the device
never ran (under any label), keep a device frozen on an old release forever, or mix the delta
files of two releases. The release document closes those gaps. The publisher signs, with the
app's RSA key (RSASSA-PSS, SHA-256), the canonical JSON of:

```
{"app_id": ..., "version": "1.2.3", "counter": 7, "expires": 1767312000,
 "bundle": "<sha256 hex of the plain zip>", "files": {"<file name>": "<sha256 hex>", ...}}
```

`counter` grows with every release of the app (monotonic); `expires` is a Unix time after
which the document no longer vouches for anything (re-sign to keep devices fresh). The
server sends it beside the Capgo fields as `"otasim_release": {"signed": base64(document),
"signature": base64(signature)}`, with offers and with "no new version" answers (so a device
notices a freeze once the newest document it holds expires). A strict device refuses an offer
without a valid document for that exact version and content, with a counter below the
highest it accepted, or expired; the anti-rollback floor then binds to authenticated versions.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from agent.bundles.manifest import expected_file_hash
from agent.errors import VerificationError
from agent.protocol.base import ManifestEntry, ReleaseDocument
from agent.security.keys import PublicKey

MAX_FILES: Final = 20_000
_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def sign_release(document: ReleaseDocument, private: rsa.RSAPrivateKey) -> dict[str, str]:
    """The `otasim_release` field for `document` (the publisher's side)."""
    signed = document.encode()
    signature = private.sign(signed, _PSS, hashes.SHA256())
    return {
        "signed": base64.b64encode(signed).decode(),
        "signature": base64.b64encode(signature).decode(),
    }


def open_release(raw: Any, public_key: PublicKey) -> ReleaseDocument:
    """Verify the `otasim_release` field of an answer and return its document.

    Raises:
        VerificationError: `release_unsigned` (missing or malformed), `release_signature_fail`.
    """
    if not isinstance(raw, Mapping) or not all(
        isinstance(raw.get(k), str) for k in ("signed", "signature")
    ):
        raise VerificationError("release_unsigned", "no signed release document in the answer")
    try:
        signed = base64.b64decode(raw["signed"], validate=True)
        signature = base64.b64decode(raw["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("release_unsigned", "release document is not base64") from None
    try:
        public_key.key.verify(signature, signed, _PSS, hashes.SHA256())
    except InvalidSignature:
        raise VerificationError(
            "release_signature_fail", "release document signature does not verify"
        ) from None
    return _parse(signed)


def _parse(signed: bytes) -> ReleaseDocument:
    try:
        data = json.loads(signed)
        files = data["files"]
        document = ReleaseDocument(
            app_id=data["app_id"],
            version=data["version"],
            counter=data["counter"],
            expires=data["expires"],
            bundle=data["bundle"],
            files=dict(files),
        )
    except (ValueError, KeyError, TypeError):
        raise VerificationError("release_unsigned", "release document is malformed") from None
    strings = [document.app_id, document.version, document.bundle, *files, *files.values()]
    numbers = [document.counter, document.expires]
    if (
        not all(isinstance(s, str) for s in strings)
        or not all(type(n) is int for n in numbers)
        or len(files) > MAX_FILES
    ):
        raise VerificationError("release_unsigned", "release document has wrong field types")
    return document


def verified_release(
    raw: Any, manifest: Sequence[ManifestEntry] | None, public_key: PublicKey
) -> ReleaseDocument:
    """`open_release`, and for a delta offer its files must be exactly the document's.

    Raises:
        VerificationError: as `open_release`, or `release_mismatch` (delta files of another
            release, a file missing or added).
    """
    document = open_release(raw, public_key)
    if manifest is not None:
        try:
            offered = {e.file_name: expected_file_hash(e.file_hash, public_key) for e in manifest}
        except VerificationError as exc:
            raise VerificationError("release_mismatch", exc.reason) from None
        if offered != {name: digest.lower() for name, digest in document.files.items()}:
            raise VerificationError(
                "release_mismatch", "the delta files are not the signed release's files"
            )
    return document
