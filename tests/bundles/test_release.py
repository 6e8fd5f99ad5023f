import os
import zipfile

import pytest

from agent.security.keys import load_public_key
from simulator.release import ReleaseError, create_keys, encrypt_bundle, file_sha256, zip_dist


def make_dist(root):
    (root / "js" / "deep").mkdir(parents=True)
    (root / "index.html").write_text("<html>")
    (root / "js" / "deep" / "a.js").write_bytes(os.urandom(1000))
    (root / "empty.txt").write_bytes(b"")
    return root


def test_keys_are_capgo_formats():
    private_pem, public_pem = create_keys()
    assert private_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert public_pem.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    assert load_public_key(public_pem.decode()).key.key_size == 2048


def test_zip_has_files_at_root_and_no_directory_entries(tmp_path):
    dist = make_dist(tmp_path / "dist")
    checksum = zip_dist(dist, tmp_path / "b.zip")
    assert checksum == file_sha256(tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:
        assert zf.namelist() == ["empty.txt", "index.html", "js/deep/a.js"]
        assert not any(info.is_dir() for info in zf.infolist())


def test_zip_is_reproducible(tmp_path):
    dist = make_dist(tmp_path / "dist")
    assert zip_dist(dist, tmp_path / "a.zip") == zip_dist(dist, tmp_path / "b.zip")


@pytest.mark.parametrize("case", ["missing", "empty", "symlink", "out-inside"])
def test_zip_refuses_bad_input_and_leaves_no_file(tmp_path, case):
    dist = tmp_path / "dist"
    out = tmp_path / "b.zip"
    if case != "missing":
        dist.mkdir()
    if case == "symlink":
        (dist / "index.html").write_text("x")
        (dist / "link").symlink_to("/etc/hostname")
    if case == "out-inside":
        (dist / "index.html").write_text("x")
        out = dist / "b.zip"
    with pytest.raises(ReleaseError):
        zip_dist(dist, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if case == "missing" else ["dist"])


def test_encrypt_refuses_bad_keys(tmp_path):
    zip_dist(make_dist(tmp_path / "dist"), tmp_path / "b.zip")
    with pytest.raises(ReleaseError):
        encrypt_bundle(tmp_path / "b.zip", b"not a key", tmp_path / "e.zip")
    with pytest.raises(ReleaseError):
        encrypt_bundle(tmp_path / "missing.zip", create_keys()[0], tmp_path / "e.zip")
    assert not (tmp_path / "e.zip").exists()
