"""Release artefacts, the developer side: keys, zips, encrypted bundles (Capgo CLI compatible).

Byte-compatible with `npx @capgo/cli` (capgo-protocol §6-7): RSA-2048 keys as PKCS#1 PEM; zips
with files at the root and no directory entries; AES-128-CBC/PKCS#7 with a random key and IV;
`session_key = base64(IV) ":" base64(private-key PKCS#1 v1.5 type-1 block of the AES key)`;
the checksum is the SHA-256 of the plain zip, signed the same way ("V3": 512 hex characters;
"legacy": the base64-decoded hex string, signed, as base64, for updaters before 5.30/6.30/7.30).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import brotli
from agent.bundles.manifest import expected_file_hash
from agent.errors import VerificationError
from agent.protocol.base import ReleaseDocument
from agent.security.keys import key_id, load_public_key
from agent.security.release import sign_release
from agent.security.session import (
    AES_IV_BYTES,
    AES_KEY_BYTES,
    SessionKey,
    recover_session_key,
)
from cryptography.hazmat.primitives import hashes, padding, serialization
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


@functools.lru_cache(maxsize=8)
def load_private_key(private_pem: bytes) -> rsa.RSAPrivateKey:
    """Load an unencrypted RSA-2048 private key (PKCS#1 or PKCS#8 PEM); the last few loaded
    are kept (loading checks the key, ~60 ms: `otasim prove` encrypts thousands of bundles).

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


def sign_file_digest(private_pem: bytes, sha256_hex: str) -> str:
    """SHA256withRSA (PKCS#1 v1.5) over the file whose SHA-256 is `sha256_hex`, base64: the
    detached signature of the "file" integrity scheme (Capawesome).

    Raises:
        ReleaseError: the key is unusable.
    """
    signature = load_private_key(private_pem).sign(
        bytes.fromhex(sha256_hex), rsa_padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )
    return base64.b64encode(signature).decode()


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


# Delta (manifest) bundles: one entry per file of the dist folder (capgo-protocol §6.2).

BROTLI_MIN_BYTES: Final = 8192  # the CLI compresses files of at least this size...
BROTLI_MIN_SAVING: Final = 10  # ...when brotli saves more than this many bytes
MANIFEST_SKIPPED: Final = frozenset(
    {".DS_Store", ".git", ".gitignore", "node_modules", "package-lock.json"}
    | {"tsconfig.json", "tsconfig.app.json", "tsconfig.spec.json"}
)


@dataclass(frozen=True)
class DeltaFile:
    """One manifest file: its name (keeps `.br`), its (signed) hash, its bytes on disk."""

    file_name: str
    file_hash: str
    path: Path


@dataclass(frozen=True)
class DeltaManifest:
    """The files of a delta bundle and the session key they are encrypted with ("" if not)."""

    files: list[DeltaFile]
    session_key: str

    def entries(self) -> list[dict[str, str]]:
        """`[{file_name, file_hash}]`, what `manifest.json` holds (servers add download_url)."""
        return [{"file_name": f.file_name, "file_hash": f.file_hash} for f in self.files]


def build_manifest(
    dist: Path,
    out_dir: Path,
    private_pem: bytes | None = None,
    session_key: str | None = None,
    *,
    checksum_format: ChecksumFormat = "v3",
) -> DeltaManifest:
    """Write the delta files of `dist` under `out_dir/files/` and `out_dir/manifest.json`.

    Like the CLI: empty files and tooling names are skipped; each file's hash is the SHA-256
    of the original; files of at least 8192 bytes are brotli-compressed (as `<name>.br`) when
    that saves more than 10 bytes; with `private_pem` each file is AES-encrypted with the
    bundle's key and IV (recovered from `session_key`, or new) and its hash is signed.

    Raises:
        ReleaseError: see `dist_files`; `out_dir` is not empty; a name with a space or
            clashing with a `.br` name; a `session_key` without `private_pem`, or one that
            key did not make. Nothing is left in `out_dir` then.
    """
    private, session, session_text = _manifest_crypto(private_pem, session_key)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReleaseError(f"{out_dir} must not exist or be an empty folder")
    files = dist_files(dist)
    try:
        delta = [
            _delta_file(dist, path, out_dir / "files", private, session, checksum_format)
            for path in files
        ]
        manifest = DeltaManifest([d for d in delta if d is not None], session_text)
        (out_dir / "manifest.json").write_text(json.dumps(manifest.entries(), indent=2) + "\n")
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return manifest


def _delta_file(
    dist: Path,
    path: Path,
    files_dir: Path,
    private: rsa.RSAPrivateKey | None,
    session: SessionKey | None,
    checksum_format: ChecksumFormat,
) -> DeltaFile | None:
    rel = path.relative_to(dist).as_posix()
    data = path.read_bytes()
    if not data or MANIFEST_SKIPPED.intersection(rel.split("/")):
        return None
    if " " in rel:
        raise ReleaseError(f"{rel!r}: file names with spaces cannot go in a manifest")
    digest = hashlib.sha256(data).hexdigest()
    name, payload = _maybe_brotli(rel, data)
    if session is not None and private is not None:
        payload = _encrypt_bytes(payload, session)
        digest = sign_checksum(private, digest, checksum_format)
    return DeltaFile(name, digest, _write_new(files_dir / name, payload))


def _manifest_crypto(
    private_pem: bytes | None, session_key: str | None
) -> tuple[rsa.RSAPrivateKey | None, SessionKey | None, str]:
    if private_pem is None:
        if session_key:
            raise ReleaseError("a session key needs the private key that made it")
        return None, None, ""
    private = load_private_key(private_pem)
    if not session_key:
        session = new_session_key()
        return private, session, session_key_text(private, session)
    public = load_public_key(public_pem_of(private).decode())
    try:
        return private, recover_session_key(session_key, public), session_key
    except VerificationError as exc:
        raise ReleaseError(f"session key does not match the private key: {exc.reason}") from None


def _maybe_brotli(rel: str, data: bytes) -> tuple[str, bytes]:
    if len(data) < BROTLI_MIN_BYTES:
        return rel, data
    packed: bytes = brotli.compress(data)
    if len(packed) >= len(data) - BROTLI_MIN_SAVING:
        return rel, data
    return rel + ".br", packed


def _encrypt_bytes(data: bytes, session: SessionKey) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, session)
    return out.getvalue()


def _write_new(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("xb") as handle:
            handle.write(data)
    except FileExistsError:
        raise ReleaseError(f"{path} exists: a file and its '.br' name clash") from None
    return path


def sign_release_document(
    private_pem: bytes,
    *,
    app_id: str,
    version: str,
    counter: int,
    expires: int,
    plain_checksum: str,
    manifest: DeltaManifest | None,
) -> dict[str, str]:
    """The signed release document of strict mode (`agent.security.release`): the version,
    a monotonic counter, an expiry, the plain zip's SHA-256 and every delta file's SHA-256
    (recovered from the manifest's signed hashes, as a device recovers them).

    Raises:
        ReleaseError: bad private key.
    """
    private = load_private_key(private_pem)
    public = load_public_key(public_pem_of(private).decode())
    files = {}
    for delta_file in manifest.files if manifest is not None else ():
        files[delta_file.file_name] = expected_file_hash(delta_file.file_hash, public)
    document = ReleaseDocument(app_id, version, counter, expires, plain_checksum, files)
    return sign_release(document, private)
