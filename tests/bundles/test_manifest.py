import json
import os

import brotli
import pytest

from agent.bundles.manifest import (
    DeltaFileVerifier,
    ManifestEntry,
    check_manifest_targets,
    parse_manifest,
    target_name,
)
from agent.errors import ProtocolError, VerificationError
from agent.security.session import recover_session_key
from simulator.release import (
    ReleaseError,
    build_manifest,
    load_private_key,
    new_session_key,
    session_key_text,
    sign_checksum,
)

BIG_TEXT = b"const answer = 42;\n" * 1000  # compresses well, >= 8192 bytes


def make_dist(root):
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<html>")
    (root / "js" / "app.js").write_bytes(BIG_TEXT)
    (root / "random.bin").write_bytes(os.urandom(9000))  # brotli saves nothing
    (root / "empty.txt").write_bytes(b"")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "x.js").write_text("x")
    return root


def apply(manifest, session, public_key, chunk=1000) -> dict[str, bytes]:
    """Run every manifest file through DeltaFileVerifier as a device would."""
    out = {}
    for f in manifest.files:
        entry = ManifestEntry(f.file_name, f.file_hash, f"http://127.0.0.1/{f.file_name}")
        verifier = DeltaFileVerifier(entry, session, public_key)
        data = f.path.read_bytes()
        body = b"".join(verifier.update(data[i : i + chunk]) for i in range(0, len(data), chunk))
        out[verifier.target_name] = body + verifier.finish()
    return out


def test_plain_manifest_round_trip(tmp_path):
    manifest = build_manifest(make_dist(tmp_path / "dist"), tmp_path / "out")
    names = {f.file_name for f in manifest.files}
    assert names == {"index.html", "js/app.js.br", "random.bin"}
    assert manifest.session_key == ""
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest.entries()
    assert apply(manifest, None, None) == {
        "index.html": b"<html>",
        "js/app.js": BIG_TEXT,
        "random.bin": (tmp_path / "dist" / "random.bin").read_bytes(),
    }


def test_encrypted_manifest_shares_the_bundle_key(tmp_path, private_pem, public_key):
    session = new_session_key()
    text = session_key_text(load_private_key(private_pem), session)
    manifest = build_manifest(make_dist(tmp_path / "dist"), tmp_path / "out", private_pem, text)
    assert manifest.session_key == text
    assert all(len(f.file_hash) == 512 for f in manifest.files)
    assert apply(manifest, session, public_key, chunk=7)["js/app.js"] == BIG_TEXT


def test_new_session_key_when_none_given(tmp_path, private_pem, public_key):
    manifest = build_manifest(make_dist(tmp_path / "dist"), tmp_path / "out", private_pem)
    session = recover_session_key(manifest.session_key, public_key)
    assert apply(manifest, session, public_key)["index.html"] == b"<html>"


def test_build_refusals_leave_nothing(tmp_path, private_pem):
    dist = make_dist(tmp_path / "dist")
    with pytest.raises(ReleaseError):
        build_manifest(dist, tmp_path / "a", None, "iv:key")
    with pytest.raises(ReleaseError):
        build_manifest(dist, tmp_path / "b", private_pem, "AAAAAAAAAAAAAAAAAAAAAA==:AAAA")
    (dist / "my file.js").write_text("x")
    with pytest.raises(ReleaseError, match="spaces"):
        build_manifest(dist, tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def _entry(name="a.js", file_hash="00" * 32):
    return ManifestEntry(name, file_hash, "http://127.0.0.1/a")


def test_tampered_file_is_checksum_fail():
    verifier = DeltaFileVerifier(_entry(), None, None)
    verifier.update(b"content")
    with pytest.raises(VerificationError) as err:
        verifier.finish()
    assert err.value.action == "download_manifest_checksum_fail"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"\xff" * 100, "corrupt"), (brotli.compress(BIG_TEXT)[:-20], "truncated")],
)
def test_bad_brotli_is_brotli_fail(payload, reason):
    verifier = DeltaFileVerifier(_entry("a.js.br"), None, None)
    with pytest.raises(VerificationError) as err:
        verifier.update(payload)
        verifier.finish()
    assert err.value.action == "download_manifest_brotli_fail"
    assert reason in err.value.reason


def test_brotli_output_is_capped():
    verifier = DeltaFileVerifier(_entry("a.js.br"), None, None, max_bytes=10_000)
    with pytest.raises(VerificationError) as err:
        verifier.update(brotli.compress(bytes(1_000_000)))
    assert err.value.action == "download_manifest_brotli_fail"


def test_encrypted_file_with_bad_padding_is_decrypt_fail(public_key, private_pem):
    signed = sign_checksum(load_private_key(private_pem), "00" * 32, "v3")
    verifier = DeltaFileVerifier(_entry(file_hash=signed), new_session_key(), public_key)
    verifier.update(os.urandom(15))
    with pytest.raises(VerificationError) as err:
        verifier.finish()
    assert err.value.action == "decrypt_fail"


def test_hash_checks(public_key):
    with pytest.raises(VerificationError) as err:
        DeltaFileVerifier(_entry(file_hash="abc"), None, None)
    assert err.value.action == "download_manifest_checksum_fail"
    with pytest.raises(VerificationError) as err:  # unsigned hash with a key
        DeltaFileVerifier(_entry(), new_session_key(), public_key)
    assert err.value.action == "download_manifest_checksum_fail"
    assert DeltaFileVerifier(_entry(file_hash="AB" * 32), None, None).expected_hash == "ab" * 32


@pytest.mark.parametrize("name", ["../a.js", "/a.js", "a\\b.js", "C:a.js", ".br", "a/../../b.br"])
def test_bad_target_names_are_manifest_path_fail(name):
    with pytest.raises(VerificationError) as err:
        target_name(name)
    assert err.value.action == "manifest_path_fail"


def test_duplicate_targets_are_manifest_path_fail():
    assert check_manifest_targets([_entry("a/b.js.br"), _entry("c.js")]) == ["a/b.js", "c.js"]
    with pytest.raises(VerificationError) as err:
        check_manifest_targets([_entry("a.js.br"), _entry("A.js")])
    assert err.value.action == "manifest_path_fail"


def test_parse_manifest():
    url = "https://cdn.test/a.js"
    raw = [{"file_name": "a.js", "file_hash": "h", "download_url": url, "extra": 1}]
    assert parse_manifest(raw) == [ManifestEntry("a.js", "h", url)]
    for bad in [
        {},
        "x",
        [1],
        [{"file_name": "a"}],
        [{"file_name": "", "file_hash": "h", "download_url": url}],
        [{"file_name": "a.js", "file_hash": "h", "download_url": "u"}],  # not a URL
        [{"file_name": "a.js", "file_hash": "h", "download_url": "http://[::1"}],
    ]:
        with pytest.raises(ProtocolError):
            parse_manifest(bad)
