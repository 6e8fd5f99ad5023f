import base64
import hashlib

import pytest

from agent.errors import VerificationError
from agent.security.checksum import ExpectedChecksum, expected_checksum, signed_content_id
from simulator.release import private_encrypt, sign_checksum

DIGEST = hashlib.sha256(b"bundle").hexdigest()


def _action(checksum, key):
    with pytest.raises(VerificationError) as err:
        expected_checksum(checksum, key)
    return err.value.action


def test_without_key_plain_forms():
    assert expected_checksum(None, None) is None
    assert expected_checksum("", None) is None
    assert expected_checksum(DIGEST, None) == ExpectedChecksum("sha256", DIGEST)
    assert expected_checksum(DIGEST.upper(), None).hex == DIGEST.upper()  # compared exactly


def test_crc32_is_accepted_only_without_key_and_warns(keys):
    with pytest.warns(DeprecationWarning, match="CRC32"):
        assert expected_checksum("0a1b2c3d", None) == ExpectedChecksum("crc32", "0a1b2c3d")
    assert _action("0a1b2c3d", keys.public) == "checksum_required"


@pytest.mark.parametrize("checksum", ["abc", DIGEST + "0", "zz" * 32, "0a1b2c3"])
def test_without_key_other_forms_fail(checksum):
    assert _action(checksum, None) == "checksum_fail"


def test_signed_checksum_without_key_cannot_match(keys):
    assert _action(sign_checksum(keys.private, DIGEST, "v3"), None) == "checksum_fail"


@pytest.mark.parametrize("fmt", ["v3", "legacy"])
def test_signed_forms_recover_the_digest(keys, fmt):
    signed = sign_checksum(keys.private, DIGEST, fmt)
    assert len(signed) == (512 if fmt == "v3" else 344)
    assert expected_checksum(signed, keys.public) == ExpectedChecksum("sha256", DIGEST)


@pytest.mark.parametrize(
    "checksum", [None, "", DIGEST, "ab" * 255, base64.b64encode(bytes(200)).decode(), "not base64!"]
)
def test_with_key_unsigned_is_checksum_required(keys, checksum):
    assert _action(checksum, keys.public) == "checksum_required"


def test_with_key_wrong_signer_or_payload_is_checksum_fail(keys, other_keys):
    assert _action(sign_checksum(other_keys.private, DIGEST, "v3"), keys.public) == "checksum_fail"
    assert (
        _action(sign_checksum(other_keys.private, DIGEST, "legacy"), keys.public) == "checksum_fail"
    )
    assert _action(private_encrypt(keys.private, bytes(16)).hex(), keys.public) == "checksum_fail"
    assert _action(bytes(256).hex(), keys.public) == "checksum_fail"


def test_signed_content_id_names_the_content_whatever_the_encoding(keys, other_keys):
    """Anti-rollback keys on content: re-encoding a signed checksum (case, legacy base64)
    must not make replayed content look new."""
    v3 = sign_checksum(keys.private, DIGEST, "v3")
    forms = [v3, v3.upper(), sign_checksum(keys.private, DIGEST, "legacy")]
    assert {signed_content_id(form, keys.public) for form in forms} == {DIGEST}
    assert signed_content_id(sign_checksum(other_keys.private, DIGEST, "v3"), keys.public) is None
    assert signed_content_id(DIGEST, keys.public) is None  # unsigned: names nothing
