"""Property tests: tampering anything is rejected; chunking never changes the verdict."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import VerificationError
from agent.security.verify import plan_bundle_verification
from simulator.release import encrypt_stream, new_session_key, session_key_text, sign_checksum

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _plain_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("index.html", "<html>" * 50)
        zf.writestr("js/app.js", bytes(range(256)) * 8)
    return buf.getvalue()


PLAIN = _plain_zip()


@pytest.fixture(scope="module", params=["v3", "legacy"])
def bundle(keys, request):
    """(ciphertext, checksum, session_key) of PLAIN, as a server would hand them out, with a
    V3 (hex) or legacy (base64) signed checksum."""
    session = new_session_key()
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(PLAIN), out, session)
    checksum = sign_checksum(keys.private, hashlib.sha256(PLAIN).hexdigest(), request.param)
    return out.getvalue(), checksum, session_key_text(keys.private, session)


def verdict(data: bytes, checksum: str, session_key: str, public_key, cuts=()) -> tuple[str, str]:
    """('ok', sha256) or (action, '') for the bundle fed in chunks cut at `cuts`."""
    try:
        plan = plan_bundle_verification(checksum, session_key, public_key)
        verifier = plan.verifier()
        bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
        for start, end in itertools.pairwise(bounds):
            verifier.update(data[start:end])
        verifier.finish()
        plan.check(verifier)
    except VerificationError as exc:
        return exc.action, ""
    return "ok", verifier.sha256_hex


def _flip(data: bytes, index: int, mask: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def _flip_b64(text: str, index: int, mask: int) -> str:
    return base64.b64encode(_flip(base64.b64decode(text), index, mask)).decode()


MUTATIONS = st.one_of(
    st.tuples(st.just("zip-byte"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 64), st.integers(0, 255)),
    st.tuples(st.just("iv"), st.integers(0, 15), st.integers(1, 255)),
    st.tuples(st.just("key-block"), st.integers(0, 255), st.integers(1, 255)),
    st.tuples(st.just("checksum"), st.integers(0, 255), st.integers(1, 255)),
)


def mutate(bundle, mutation):
    data, checksum, session_key = bundle
    kind, a, b = mutation
    iv, block = session_key.split(":")
    if kind == "zip-byte":
        data = _flip(data, a, b)
    elif kind == "truncate":
        data = data[: a % len(data)]
    elif kind == "extend":
        data = data + bytes([b]) * a
    elif kind == "iv":
        session_key = f"{_flip_b64(iv, a, b)}:{block}"
    elif kind == "key-block":
        session_key = f"{iv}:{_flip_b64(block, a, b)}"
    else:
        legacy = len(checksum) != 512
        checksum = (
            _flip_b64(checksum, a, b) if legacy else _flip(bytes.fromhex(checksum), a, b).hex()
        )
    return data, checksum, session_key


def test_the_untouched_bundle_is_accepted(bundle, keys):
    assert verdict(*bundle, keys.public) == ("ok", hashlib.sha256(PLAIN).hexdigest())


@SETTINGS
@given(mutation=MUTATIONS)
def test_any_tampering_is_rejected(bundle, keys, mutation):
    action, _ = verdict(*mutate(bundle, mutation), keys.public)
    assert action in ("checksum_fail", "decrypt_fail")


@SETTINGS
@given(
    mutation=st.one_of(st.none(), MUTATIONS),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_chunking_never_changes_verdict_or_digest(bundle, keys, mutation, cuts):
    tampered = bundle if mutation is None else mutate(bundle, mutation)
    assert verdict(*tampered, keys.public, cuts) == verdict(*tampered, keys.public)


@SETTINGS
@given(index=st.integers(0, 10**6), mask=st.integers(1, 255), cuts=st.lists(st.integers(0, 3000)))
def test_plain_bundles_too(index, mask, cuts):
    digest = hashlib.sha256(PLAIN).hexdigest()
    assert verdict(PLAIN, digest, "", None, cuts) == ("ok", digest)
    assert verdict(_flip(PLAIN, index, mask), digest, "", None, cuts) == ("checksum_fail", "")
