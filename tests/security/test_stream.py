import hashlib
import io
import os
import zlib

import pytest

from agent.errors import VerificationError
from agent.security.checksum import ExpectedChecksum
from agent.security.stream import StreamingVerifier, check_digest
from simulator.release import encrypt_stream, new_session_key

PLAIN = os.urandom(100_000)


def encrypt(data: bytes, session) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, session)
    return out.getvalue()


def run(verifier: StreamingVerifier, data: bytes, chunk: int = 4096) -> bytes:
    out = b"".join(verifier.update(data[i : i + chunk]) for i in range(0, len(data), chunk))
    return out + verifier.finish()


def test_plain_passthrough_computes_both_digests():
    verifier = StreamingVerifier(None, crc32=True)
    assert run(verifier, PLAIN) == PLAIN
    assert verifier.sha256_hex == hashlib.sha256(PLAIN).hexdigest()
    assert verifier.crc32_hex == f"{zlib.crc32(PLAIN):08x}"
    assert verifier.bytes_in == verifier.bytes_out == len(PLAIN)
    check_digest(ExpectedChecksum("sha256", verifier.sha256_hex), verifier)
    check_digest(ExpectedChecksum("crc32", verifier.crc32_hex), verifier)
    check_digest(None, verifier)


def test_decrypts_and_hashes_the_plaintext():
    session = new_session_key()
    cipher = encrypt(PLAIN, session)
    verifier = StreamingVerifier(session)
    assert run(verifier, cipher, chunk=1000) == PLAIN
    assert verifier.sha256_hex == hashlib.sha256(PLAIN).hexdigest()
    assert (verifier.bytes_in, verifier.bytes_out) == (len(cipher), len(PLAIN))


def test_mismatch_is_checksum_fail():
    verifier = StreamingVerifier(None)
    run(verifier, PLAIN)
    with pytest.raises(VerificationError) as err:
        check_digest(ExpectedChecksum("sha256", hashlib.sha256(b"other").hexdigest()), verifier)
    assert err.value.action == "checksum_fail"
    with pytest.raises(VerificationError):  # exact comparison, as on the device
        check_digest(ExpectedChecksum("sha256", verifier.sha256_hex.upper()), verifier)


@pytest.mark.parametrize("cut", [lambda c: c[:-5], lambda c: b"", lambda c: c + b"x"])
def test_bad_length_is_decrypt_fail(cut):
    session = new_session_key()
    verifier = StreamingVerifier(session)
    with pytest.raises(VerificationError) as err:
        run(verifier, cut(encrypt(PLAIN, session)))
    assert err.value.action == "decrypt_fail"


def test_wrong_key_is_rejected():
    cipher = encrypt(PLAIN, new_session_key())
    verifier = StreamingVerifier(new_session_key())
    with pytest.raises(VerificationError) as err:
        run(verifier, cipher)
        check_digest(ExpectedChecksum("sha256", hashlib.sha256(PLAIN).hexdigest()), verifier)
    assert err.value.action in ("decrypt_fail", "checksum_fail")


def test_misuse_raises_runtime_error():
    verifier = StreamingVerifier(None)
    with pytest.raises(RuntimeError):
        check_digest(ExpectedChecksum("sha256", "00" * 32), verifier)
    verifier.finish()
    with pytest.raises(RuntimeError):
        verifier.update(b"x")
    with pytest.raises(RuntimeError):
        verifier.finish()
    with pytest.raises(RuntimeError, match="crc32=True"):
        check_digest(ExpectedChecksum("crc32", "00000000"), verifier)
