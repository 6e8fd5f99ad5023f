import hashlib

import pytest

from agent.bundles.zipbundle import unpack_file, verify_file
from agent.errors import VerificationError
from agent.security.verify import plan_bundle_verification
from simulator.release import encrypt_bundle, zip_dist

from .zips import make_zip, tree, write


@pytest.fixture
def encrypted(tmp_path, private_pem):
    dist = tmp_path / "dist"
    (dist / "js").mkdir(parents=True)
    (dist / "index.html").write_text("<html>")
    (dist / "js" / "app.js").write_bytes(bytes(range(256)) * 100)
    zip_dist(dist, tmp_path / "plain.zip")
    return encrypt_bundle(tmp_path / "plain.zip", private_pem, tmp_path / "enc.zip")


def test_unpack_encrypted_bundle(tmp_path, encrypted, public_key):
    plan = plan_bundle_verification(encrypted.checksum, encrypted.session_key, public_key)
    verifier = unpack_file(encrypted.path, tmp_path / "out", plan)
    assert verifier.sha256_hex == encrypted.plain_checksum
    assert tree(tmp_path / "out") == tree(tmp_path / "dist")


def test_verify_only_writes_nothing(tmp_path, encrypted, public_key):
    plan = plan_bundle_verification(encrypted.checksum, encrypted.session_key, public_key)
    before = sorted(tmp_path.iterdir())
    assert verify_file(encrypted.path, None, plan).sha256_hex == encrypted.plain_checksum
    assert sorted(tmp_path.iterdir()) == before


def test_failed_checksum_leaves_no_folder_and_no_temp(tmp_path, encrypted, public_key):
    plan = plan_bundle_verification(encrypted.checksum, encrypted.session_key, public_key)
    data = bytearray(encrypted.path.read_bytes())
    data[40] ^= 1
    bad = write(tmp_path, bytes(data), "bad.zip")
    (tmp_path / "stage").mkdir()
    with pytest.raises(VerificationError) as err:
        unpack_file(bad, tmp_path / "stage" / "out", plan)
    assert err.value.action in ("checksum_fail", "decrypt_fail")
    assert list((tmp_path / "stage").iterdir()) == []


def test_unsafe_zip_with_good_checksum_leaves_nothing(tmp_path):
    data = make_zip([("../evil.js", b"x")])
    plan = plan_bundle_verification(hashlib.sha256(data).hexdigest(), "", None)
    (tmp_path / "stage").mkdir()
    with pytest.raises(VerificationError) as err:
        unpack_file(write(tmp_path, data), tmp_path / "stage" / "out", plan)
    assert err.value.action == "canonical_path_fail"
    assert list((tmp_path / "stage").iterdir()) == []
    assert not (tmp_path.parent / "evil.js").exists()


def test_destination_must_be_empty(tmp_path, encrypted, public_key):
    plan = plan_bundle_verification(encrypted.checksum, encrypted.session_key, public_key)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep")
    with pytest.raises(ValueError):
        unpack_file(encrypted.path, tmp_path / "out", plan)
    assert tree(tmp_path / "out") == {"x": b"keep"}
