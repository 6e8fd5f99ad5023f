"""CodePush release artefacts, the developer side: the package hash and the signed package.

Like the CodePush CLI (`release` with `--privateKeyPath`): the package hash is computed over the
files of the dist folder (`agent.security.codepush.package_hash`, the rule the SDK and the
server share), and with a private key a `.codepushrelease` JWT (RS256; claims `claimVersion`,
`contentHash` = that hash, `iat`) is written beside the files. The zip holds no directory
entries (servers differ on whether they count) and the files at its root.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import jwt
from agent.security.codepush import SIGNATURE_FILE, package_hash
from cryptography.hazmat.primitives import serialization

from simulator.release import ReleaseError, dist_files, load_private_key, zip_dist

CLAIM_VERSION: Final = "1.0.0"


@dataclass(frozen=True)
class Package:
    zip_path: Path
    package_hash: str
    zip_checksum: str  # SHA-256 hex of the zip (the Capgo checksum of the same bundle)


def public_pem_for(private_pem: bytes) -> str:
    """The public key (SPKI PEM) an app embeds as its CodePushPublicKey.

    Raises:
        ReleaseError: the key is not an RSA private key PEM.
    """
    public = load_private_key(private_pem).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def signed_claims_token(content_hash: str, private_pem: bytes) -> str:
    """The `.codepushrelease` JWT for a package hash.

    Raises:
        ReleaseError: the key is not an RSA private key PEM.
    """
    key = load_private_key(private_pem)
    claims = {"claimVersion": CLAIM_VERSION, "contentHash": content_hash, "iat": int(time.time())}
    return jwt.encode(claims, key, algorithm="RS256")


def make_package(dist: Path, out: Path, private_pem: bytes | None) -> Package:
    """Zip `dist` into `out` as a CodePush package (signed with `private_pem` when given).

    Raises:
        ReleaseError: see `dist_files` / `zip_dist`; a dist that already holds a signature.
    """
    if any(p.name == SIGNATURE_FILE for p in dist_files(dist)):
        raise ReleaseError(f"{dist} already holds a {SIGNATURE_FILE}")
    content_hash = package_hash(dist)
    with tempfile.TemporaryDirectory(prefix="otasim-codepush-") as tmp:
        staged = Path(tmp) / "package"
        shutil.copytree(dist, staged)
        if private_pem is not None:
            token = signed_claims_token(content_hash, private_pem)
            (staged / SIGNATURE_FILE).write_text(token, encoding="utf-8")
        checksum = zip_dist(staged, out)
    return Package(out, content_hash, checksum)
