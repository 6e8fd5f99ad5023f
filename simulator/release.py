"""Release artefacts, the developer side: keys, zips, encrypted bundles (Capgo CLI compatible).

Byte-compatible with `npx @capgo/cli` (capgo-protocol §6-7): RSA-2048 keys as PKCS#1 PEM; zips
with files at the root and no directory entries; AES-128-CBC/PKCS#7 with a random key and IV;
`session_key = base64(IV) ":" base64(private-key PKCS#1 v1.5 type-1 block of the AES key)`;
the checksum is the SHA-256 of the plain zip, signed the same way ("V3": 512 hex characters;
"legacy": the base64-decoded hex string, signed, as base64, for updaters before 5.30/6.30/7.30).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

from agent.security.keys import key_id
from agent.security.session import AES_IV_BYTES, AES_KEY_BYTES, SessionKey
from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CHUNK_BYTES: Final = 1024 * 1024
ZIP_DATE_TIME: Final = (1980, 1, 1, 0, 0, 0)  # fixed, so the same tree always zips the same
ChecksumFormat = Literal["v3", "legacy"]


class ReleaseError(Exception):
    """A release input is unusable (missing folder, bad key file); the message says why."""


@dataclass(frozen=True)
class EncryptedBundle:
    """An encrypted zip and what the server hands devices with it."""

    path: Path
    checksum: str  # signed checksum (V3: 512 hex chars; legacy: base64)
    session_key: str  # base64(IV):base64(RSA block)
    key_id: str
    plain_checksum: str  # SHA-256 hex of the plain zip


def create_keys() -> tuple[bytes, bytes]:
    """A new RSA-2048 key pair: (private PKCS#1 PEM, public PKCS#1 PEM), as `key create` makes."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return private_pem, public_pem_of(private)


def public_pem_of(private: rsa.RSAPrivateKey) -> bytes:
    """The PKCS#1 PEM of a private key's public half (what goes in capacitor.config)."""
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )


def load_private_key(private_pem: bytes) -> rsa.RSAPrivateKey:
    """Load an unencrypted RSA-2048 private key (PKCS#1 or PKCS#8 PEM).

    Raises:
        ReleaseError: not such a key.
    """
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ReleaseError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != 2048:
        raise ReleaseError("the private key must be RSA-2048 (made by `keys create`)")
    return key


def private_encrypt(private: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """Node's `privateEncrypt` with RSA_PKCS1_PADDING: a type-1 block over `data`, no DigestInfo."""
    return private.sign(data, rsa_padding.PKCS1v15(), utils.NoDigestInfo())


def sign_checksum(private: rsa.RSAPrivateKey, sha256_hex: str, fmt: ChecksumFormat) -> str:
    """The CLI's encrypted checksum: V3 (`encryptChecksumV3`) or legacy base64."""
    if fmt == "v3":
        return private_encrypt(private, bytes.fromhex(sha256_hex)).hex()
    return base64.b64encode(private_encrypt(private, base64.b64decode(sha256_hex))).decode()


def new_session_key() -> SessionKey:
    """A fresh random AES-128 key and IV (one per bundle; its delta files share it)."""
    return SessionKey(key=secrets.token_bytes(AES_KEY_BYTES), iv=secrets.token_bytes(AES_IV_BYTES))


def session_key_text(private: rsa.RSAPrivateKey, session: SessionKey) -> str:
    """`base64(IV):base64(RSA block of the key)`, the `session_key` devices receive."""
    block = private_encrypt(private, session.key)
    return f"{base64.b64encode(session.iv).decode()}:{base64.b64encode(block).decode()}"


def dist_files(dist: Path) -> list[Path]:
    """The regular files under `dist`, sorted, as the bundle will hold them.

    Raises:
        ReleaseError: `dist` is not a folder, holds a symlink, or holds no file.
    """
    if not dist.is_dir():
        raise ReleaseError(f"{dist} is not a folder")
    files: list[Path] = []
    for path in sorted(dist.rglob("*")):
        if path.is_symlink():
            raise ReleaseError(f"{path} is a symlink; bundles hold regular files only")
        if path.is_file():
            files.append(path)
    if not files:
        raise ReleaseError(f"{dist} holds no file")
    return files


def zip_dist(dist: Path, out: Path) -> str:
    """Zip the files of `dist` (at the zip root, no directory entries) into `out`.

    Returns the SHA-256 hex of the zip, the bundle's plain checksum. `out` is replaced
    atomically; the same tree always gives the same bytes.

    Raises:
        ReleaseError: see `dist_files`, or `out` is inside `dist`.
    """
    if out.resolve().is_relative_to(dist.resolve()):
        raise ReleaseError(f"the zip {out} must not be inside the folder it zips")
    files = dist_files(dist)
    with _atomic_output(out) as handle, zipfile.ZipFile(handle, "w") as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(dist).as_posix(), ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with path.open("rb") as src, archive.open(info, "w") as dst:
                while chunk := src.read(CHUNK_BYTES):
                    dst.write(chunk)
    return file_sha256(out)


def encrypt_bundle(
    zip_path: Path, private_pem: bytes, out: Path, *, checksum_format: ChecksumFormat = "v3"
) -> EncryptedBundle:
    """Encrypt a bundle zip as `npx @capgo/cli bundle encrypt` does, into `out`.

    Raises:
        ReleaseError: bad private key, or `zip_path` is missing.
    """
    private = load_private_key(private_pem)
    session = SessionKey(
        key=secrets.token_bytes(AES_KEY_BYTES), iv=secrets.token_bytes(AES_IV_BYTES)
    )
    plain_checksum = file_sha256(zip_path)
    with zip_path.open("rb") as src, _atomic_output(out) as dst:
        encrypt_stream(src, dst, session)
    return EncryptedBundle(
        path=out,
        checksum=sign_checksum(private, plain_checksum, checksum_format),
        session_key=session_key_text(private, session),
        key_id=key_id(public_pem_of(private).decode()),
        plain_checksum=plain_checksum,
    )


def encrypt_stream(src: BinaryIO, dst: BinaryIO, session: SessionKey) -> None:
    """AES-128-CBC with PKCS#7 padding from `src` to `dst`, chunk by chunk."""
    encryptor = Cipher(algorithms.AES(session.key), modes.CBC(session.iv)).encryptor()
    padder = padding.PKCS7(128).padder()
    while chunk := src.read(CHUNK_BYTES):
        dst.write(encryptor.update(padder.update(chunk)))
    dst.write(encryptor.update(padder.finalize()) + encryptor.finalize())


def file_sha256(path: Path) -> str:
    """SHA-256 hex of a file.

    Raises:
        ReleaseError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with path.open("rb") as src:
            while chunk := src.read(CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise ReleaseError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


@contextmanager
def _atomic_output(out: Path) -> Iterator[BinaryIO]:
    """Write to a temp file beside `out`, then `os.replace` it; nothing is left on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
