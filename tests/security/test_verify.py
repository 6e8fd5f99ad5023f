import hashlib

import pytest

from agent.errors import VerificationError
from agent.security.verify import plan_bundle_verification
from simulator.release import new_session_key, session_key_text, sign_checksum

DIGEST = hashlib.sha256(b"zip").hexdigest()


def test_encrypted_bundle_plan(keys):
    session = new_session_key()
    plan = plan_bundle_verification(
        sign_checksum(keys.private, DIGEST, "v3"),
        session_key_text(keys.private, session),
        keys.public,
    )
    assert plan.session == session and plan.expected.hex == DIGEST
    assert plan.verifier().update(b"") == b""


def test_plain_bundle_without_key_ignores_the_session_key(keys):
    plan = plan_bundle_verification(DIGEST, session_key_text(keys.private, new_session_key()), None)
    assert plan.session is None and plan.expected.hex == DIGEST


def test_crc32_plan_builds_a_crc32_verifier():
    with pytest.warns(DeprecationWarning):
        plan = plan_bundle_verification("0a1b2c3d", "", None)
    verifier = plan.verifier()
    verifier.finish()
    assert verifier.crc32_hex == "00000000"


@pytest.mark.parametrize("session_key", ["", None, "abc"])
def test_key_without_encryption_is_checksum_required(keys, session_key):
    with pytest.raises(VerificationError) as err:
        plan_bundle_verification(
            sign_checksum(keys.private, DIGEST, "v3"), session_key, keys.public
        )
    assert err.value.action == "checksum_required"


def test_session_key_from_another_key_is_decrypt_fail(keys, other_keys):
    with pytest.raises(VerificationError) as err:
        plan_bundle_verification(
            sign_checksum(keys.private, DIGEST, "v3"),
            session_key_text(other_keys.private, new_session_key()),
            keys.public,
        )
    assert err.value.action == "decrypt_fail"
