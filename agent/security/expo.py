"""Expo Updates code signing and asset hashes, device side (Expo Updates protocol v1).

A server signs the exact bytes of a manifest (or directive) part with RSASSA-PKCS1-v1_5 over
SHA-256 and sends `expo-signature: sig="<base64>", keyid="main", alg="rsa-v1_5-sha256"` (an
Expo structured-field dictionary). The device checks it against the certificate embedded in
the app: the certificate must be valid now, allow digital signatures and, when it lists
extended key usages, code signing. A different `keyid` or `alg` than the device expects is
refused, as is a signature that does not verify. Asset hashes are base64url SHA-256 (padding
optional); a hex digest is refused (a device that took one would be comparing against a
string no conforming server emits, so it is a broken or hostile server).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.errors import VerificationError

KEY_ID: Final = "main"
ALGORITHM: Final = "rsa-v1_5-sha256"
MAX_SIGNATURE_HEADER: Final = 4096
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]{43}=?")
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_MEMBER: Final = re.compile(r'\s*([a-z*][a-z0-9_.*-]*)(?:=("(?:[^"\\]|\\.)*"|[^,;\s"]+))?\s*')


class CertificateError(ValueError):
    """The text is not a usable Expo code-signing certificate."""


@dataclass(frozen=True)
class CodeSigningCertificate:
    """The certificate embedded in the app, and the `keyid` the app expects."""

    pem: str
    key: rsa.RSAPublicKey = field(repr=False, compare=False)
    not_before: float
    not_after: float
    key_id: str = KEY_ID


def load_certificate(text: str, key_id: str = KEY_ID) -> CodeSigningCertificate:
    """Load the app's code-signing certificate (PEM).

    Raises:
        CertificateError: not a PEM certificate, not RSA, no digital-signature key usage, or
            extended key usages without code signing.
    """
    try:
        cert = x509.load_pem_x509_certificate(text.strip().encode())
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate: {exc}") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateError("the certificate's key is not RSA (Expo signs rsa-v1_5-sha256)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise CertificateError("the certificate does not allow digital signatures")
    except x509.ExtensionNotFound:
        pass
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CODE_SIGNING not in extended:
            raise CertificateError("the certificate's extended key usage excludes code signing")
    except x509.ExtensionNotFound:
        pass
    return CodeSigningCertificate(
        pem=text.strip(),
        key=key,
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        key_id=key_id,
    )


def parse_signature_header(value: str) -> dict[str, str]:
    """The members of an Expo-SFV dictionary (`sig="...", keyid="main"`), strings unquoted.

    Raises:
        VerificationError: `signature_fail` for a header that is not such a dictionary.
    """
    if len(value) > MAX_SIGNATURE_HEADER:
        raise VerificationError("signature_fail", "expo-signature header is too long")
    members: dict[str, str] = {}
    for item in _split_members(value):
        match = _MEMBER.fullmatch(item)
        if match is None:
            raise VerificationError("signature_fail", "expo-signature is not an SFV dictionary")
        name, raw = match.group(1), match.group(2) or "?1"
        members[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
    return members


def _split_members(value: str) -> list[str]:
    """Split on commas outside quoted strings."""
    items, start, quoted, escaped = [], 0, False, False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(value[start:index])
            start = index + 1
    items.append(value[start:])
    return items


def verify_part(
    body: bytes, signature_header: str | None, cert: CodeSigningCertificate, now: float
) -> None:
    """Check a manifest or directive part's `expo-signature` against the app's certificate.

    Raises:
        VerificationError: `signature_required` (no header), `signature_fail` (malformed,
            another key id or algorithm, a certificate outside its validity, or a signature
            that does not verify over these exact bytes).
    """
    if not signature_header:
        raise VerificationError(
            "signature_required", "the app has a code-signing certificate but the part is unsigned"
        )
    members = parse_signature_header(signature_header)
    keyid = members.get("keyid", KEY_ID)
    if keyid != cert.key_id:
        raise VerificationError(
            "signature_fail", f"signed with key {keyid!r}, the app trusts {cert.key_id!r}"
        )
    alg = members.get("alg", ALGORITHM)
    if alg != ALGORITHM:
        raise VerificationError("signature_fail", f"signature algorithm {alg!r} is not {ALGORITHM}")
    if not cert.not_before <= now <= cert.not_after:
        raise VerificationError("signature_fail", "the code-signing certificate is not valid now")
    try:
        signature = base64.b64decode(members.get("sig", ""), validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("signature_fail", "expo-signature sig is not base64") from None
    try:
        cert.key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise VerificationError(
            "signature_fail", "the signature does not verify with the app's certificate"
        ) from None


def asset_hash_hex(value: object) -> str:
    """The SHA-256 hex of a base64url asset `hash` (padding optional).

    Raises:
        VerificationError: `checksum_fail` for a hex digest (refused: not what the protocol
            sends) or anything that is not 32 bytes of base64url.
    """
    if not isinstance(value, str):
        raise VerificationError("checksum_fail", "an asset hash must be a string")
    if _HEX64.fullmatch(value):
        raise VerificationError(
            "checksum_fail", "asset hash is hex; Expo asset hashes are base64url SHA-256"
        )
    if not _B64URL.fullmatch(value):
        raise VerificationError("checksum_fail", "asset hash is not base64url SHA-256")
    return base64.urlsafe_b64decode(value.rstrip("=") + "=").hex()  # 43 characters: 32 bytes


def created_at_ms(value: object) -> int:
    """Milliseconds since the epoch of an ISO 8601 `createdAt` (naive times are UTC).

    Raises:
        ValueError: not an ISO 8601 date and time.
    """
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("createdAt must be an ISO 8601 string")
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)
