import base64

import pytest

from agent.errors import VerificationError
from agent.security.session import SessionKey, is_session_key, recover_session_key
from simulator.release import new_session_key, private_encrypt, session_key_text


def test_round_trip(keys):
    session = new_session_key()
    text = session_key_text(keys.private, session)
    iv_b64, block_b64 = text.split(":")
    assert base64.b64decode(iv_b64) == session.iv
    assert len(base64.b64decode(block_b64)) == 256
    assert recover_session_key(text, keys.public) == session


def test_other_key_fails(keys, other_keys):
    text = session_key_text(other_keys.private, new_session_key())
    with pytest.raises(VerificationError) as err:
        recover_session_key(text, keys.public)
    assert err.value.action == "decrypt_fail"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "make",
    [
        lambda k: "",
        lambda k: "abc",
        lambda k: ":" + _b64(private_encrypt(k, bytes(16))),
        lambda k: _b64(bytes(16)) + ":",
        lambda k: _b64(bytes(16)) + ":" + _b64(private_encrypt(k, bytes(16))) + ":x",
        lambda k: "!!!!" + ":" + _b64(private_encrypt(k, bytes(16))),
        lambda k: _b64(bytes(15)) + ":" + _b64(private_encrypt(k, bytes(16))),
        lambda k: _b64(bytes(16)) + ":" + _b64(private_encrypt(k, bytes(17))),
        lambda k: _b64(bytes(16)) + ":" + _b64(private_encrypt(k, bytes(16))[:-1]),
        lambda k: _b64(bytes(16)) + ":" + _b64(bytes(256)),
    ],
    ids=[
        "empty",
        "no-colon",
        "no-iv",
        "no-key",
        "three-parts",
        "bad-base64",
        "short-iv",
        "17-byte-key",
        "short-block",
        "zero-block",
    ],
)
def test_malformed_session_keys_are_decrypt_fail(keys, make):
    with pytest.raises(VerificationError) as err:
        recover_session_key(make(keys.private), keys.public)
    assert err.value.action == "decrypt_fail"


def test_shape_check_and_misuse():
    assert is_session_key("a:b") and not is_session_key(None) and not is_session_key("a:")
    with pytest.raises(ValueError):
        SessionKey(key=bytes(16), iv=bytes(8))
