"""Expo Updates release artefacts, the developer side: the code-signing pair and signed manifests.

`create_signing_pair` makes what `npx expo-updates codesigning:generate` makes: an RSA-2048
private key (PKCS#8 PEM, kept by the publisher) and a self-signed certificate with the
digital-signature key usage and the code-signing extended key usage (embedded in the app).
`build_manifest` turns a dist folder into an Expo Updates v1 manifest (`launchAsset` is
`index.html`, every other file an asset; `key` is the path without its extension,
`fileExtension` the extension, `hash` the base64url SHA-256 without padding, `url` where the
server serves the file) and `sign_manifest` signs its exact bytes (RSASSA-PKCS1-v1_5 SHA-256)
as the `expo-signature` header value. The private key never leaves the publisher: the server
stores the signed bytes and serves them as they are.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import mimetypes
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.security.expo import ALGORITHM, KEY_ID
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulator.clock import SIM_EPOCH
from simulator.release import ReleaseError, dist_files, load_private_key

LAUNCH_ASSET: Final = "index.html"
CERT_YEARS: Final = 10
VALID_FROM: Final = datetime.datetime.fromtimestamp(SIM_EPOCH, datetime.UTC)
"""Certificates are valid from the simulated devices' epoch at the latest (their clocks start
there, and a device checks the certificate's validity at its own time)."""
RUNTIME_VERSION: Final = "1.0.0"
"""The manifests' `runtimeVersion`: informational here (the reference server decides by the
channel's policy against the device's `expo-runtime-version`, as for Capgo's native build)."""


@dataclass(frozen=True)
class SigningPair:
    private_pem: bytes
    certificate_pem: bytes


@dataclass(frozen=True)
class ExpoAsset:
    """One file of the update: where it is in the dist, its SHA-256 hex, its manifest entry."""

    path: Path
    sha256_hex: str
    entry: dict[str, str]


def create_signing_pair() -> SigningPair:
    """A new RSA-2048 key and its self-signed code-signing certificate (valid 10 years)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningPair(private_pem, certificate_for(private_pem).encode())


def certificate_for(private_pem: bytes, common_name: str = "otasim expo code signing") -> str:
    """A self-signed code-signing certificate (PEM, valid 10 years from now, and from
    `VALID_FROM` if that is earlier) for an RSA private key:
    digital-signature key usage, code-signing extended key usage.

    Raises:
        ReleaseError: the key is not an RSA private key PEM.
    """
    key = load_private_key(private_pem)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - datetime.timedelta(minutes=5), VALID_FROM))
        .not_valid_after(now + datetime.timedelta(days=365 * CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def b64url_sha256(data: bytes) -> str:
    """The Expo asset hash of `data`: base64url SHA-256, no padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def dist_assets(dist: Path, file_url: str) -> list[ExpoAsset]:
    """The files of `dist` as manifest assets; `file_url` is formatted with `file_id` (the
    SHA-256 hex the reference server names a stored file by). `index.html` comes first.

    Raises:
        ReleaseError: see `dist_files`; the folder has no `index.html`.
    """
    assets = []
    for path in dist_files(dist):
        data = path.read_bytes()
        relative = path.relative_to(dist).as_posix()
        suffix = path.suffix
        digest = hashlib.sha256(data).hexdigest()
        entry = {
            "hash": b64url_sha256(data),
            "key": relative[: len(relative) - len(suffix)] if suffix else relative,
            "fileExtension": suffix,
            "contentType": mimetypes.guess_type(relative)[0] or "application/octet-stream",
            "url": file_url.format(file_id=digest),
        }
        assets.append(ExpoAsset(path, digest, entry))
    assets.sort(key=lambda a: a.path.relative_to(dist).as_posix() != LAUNCH_ASSET)
    if not assets or assets[0].path.relative_to(dist).as_posix() != LAUNCH_ASSET:
        raise ReleaseError(f"{dist} has no {LAUNCH_ASSET}: the launch asset of the update")
    return assets


def build_manifest(
    assets: Sequence[ExpoAsset],
    *,
    version: str,
    runtime_version: str,
    created_at: datetime.datetime | None = None,
    update_id: uuid.UUID | None = None,
) -> bytes:
    """The manifest bytes (compact JSON) of an update made of `assets` (launch asset first).

    `metadata.version` carries the release name, which otasim shows as the update's label.
    """
    moment = created_at or datetime.datetime.now(datetime.UTC)
    manifest = {
        "id": str(update_id or uuid.uuid4()),
        "createdAt": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "runtimeVersion": runtime_version,
        "launchAsset": assets[0].entry,
        "assets": [a.entry for a in assets[1:]],
        "metadata": {"version": version},
        "extra": {},
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def sign_manifest(body: bytes, private_pem: bytes) -> str:
    """The `expo-signature` header value for `body` signed with `private_pem`.

    Raises:
        ReleaseError: the key is not an RSA private key PEM.
    """
    signature = load_private_key(private_pem).sign(body, padding.PKCS1v15(), hashes.SHA256())
    encoded = base64.b64encode(signature).decode()
    return f'sig="{encoded}", keyid="{KEY_ID}", alg="{ALGORITHM}"'
