"""CodePush package integrity, device side: the package hash and the `.codepushrelease` JWT.

The package hash is the SHA-256 hex of the JSON array (compact, as `JSON.stringify` writes it)
of the sorted `relative/path:sha256hex` entries of every file of the unzipped package, leaving
out `__MACOSX/...`, `.DS_Store` and `.codepushrelease` files (the CodePush SDK's and server's
rule). It is checked after unzipping, never against the download's bytes (servers differ in the
zip they serve for the same package: padding, directory entries).

With code signing (the app embeds the publisher's RSA public key), the package must hold a
`.codepushrelease` JWT (RS256 only) whose `contentHash` claim is that package hash. otasim
checks the hash the server announced as well, signed or not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.errors import VerificationError

SIGNATURE_FILE: Final = ".codepushrelease"
MAX_SIGNATURE_BYTES: Final = 64 * 1024


class SigningKeyError(ValueError):
    """The text is not a usable CodePush code-signing public key."""


def load_signing_key(text: str) -> rsa.RSAPublicKey:
    """The app's CodePush public key (an SPKI or PKCS#1 PEM).

    Raises:
        SigningKeyError: not such a PEM, or not RSA.
    """
    try:
        key = serialization.load_pem_public_key(text.strip().encode())
    except ValueError as exc:
        raise SigningKeyError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SigningKeyError("a CodePush signing key is RSA (RS256)")
    return key


def ignored(relative: str) -> bool:
    """Files the package hash leaves out."""
    return (
        relative.startswith("__MACOSX/")
        or relative == ".DS_Store"
        or relative.endswith("/.DS_Store")
        or relative == SIGNATURE_FILE
        or relative.endswith("/" + SIGNATURE_FILE)
    )


def package_hash(folder: Path) -> str:
    """The CodePush package hash of the files under `folder` (see the module docstring)."""
    entries = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and not ignored(relative):
            with open(path, "rb") as handle:
                entries.append(f"{relative}:{hashlib.file_digest(handle, 'sha256').hexdigest()}")
    entries.sort()
    text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def signature_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(SIGNATURE_FILE) if p.is_file())


def verify_package(folder: Path, expected_hash: str, key: rsa.RSAPublicKey | None) -> None:
    """Check an unzipped package against the announced hash and, with a key, its signature.

    Raises:
        VerificationError: `checksum_fail` (the files do not hash to `expected_hash`),
            `signature_required` (a key but no `.codepushrelease`), `signature_fail` (a JWT
            that is not RS256 by this key, or whose contentHash is not the package's).
    """
    actual = package_hash(folder)
    if actual != expected_hash.lower():
        raise VerificationError("checksum_fail", "the package's files do not match its hash")
    if key is None:
        return
    found = signature_files(folder)
    if not found:
        raise VerificationError("signature_required", "the app signs releases; none came")
    if len(found) > 1 or found[0].stat().st_size > MAX_SIGNATURE_BYTES:
        raise VerificationError("signature_fail", "the package holds an unusable signature file")
    token = found[0].read_text(encoding="utf-8", errors="replace").strip()
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], options={"verify_iat": False})
    except jwt.PyJWTError as exc:
        raise VerificationError("signature_fail", f"release signature: {exc}") from None
    if claims.get("contentHash") != actual:
        raise VerificationError("signature_fail", "the signature is for another package")
