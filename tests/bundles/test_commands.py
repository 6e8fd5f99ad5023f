"""`otasim keys` and `otasim bundle`, run through the real CLI entry point."""

import hashlib
import json
import os
import stat
import subprocess
import sys
import zlib

import pytest

from simulator.cli import main

from .zips import make_zip, tree


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def release(tmp_path, capsys, monkeypatch):
    """keys, a dist folder, its zip and its encrypted zip, made with the CLI in tmp_path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dist" / "js").mkdir(parents=True)
    (tmp_path / "dist" / "index.html").write_text("<html>")
    (tmp_path / "dist" / "js" / "app.js").write_bytes(os.urandom(20_000))
    assert run(capsys, "keys", "create", "--out", "keys")[0] == 0
    assert run(capsys, "bundle", "zip", "dist", "--out", "b.zip")[0] == 0
    code, out, _ = run(capsys, "bundle", "encrypt", "b.zip", "--key", "keys/private.pem", "--json")
    assert code == 0
    return json.loads(out)


def test_keys_create(tmp_path, capsys):
    code, out, _ = run(capsys, "keys", "create", "--out", tmp_path / "k", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["key_id"].startswith("MIIBCgKCAQEA") and len(info["key_id"]) == 20
    private = tmp_path / "k" / "private.pem"
    assert private.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    before = private.read_bytes()
    code, _, err = run(capsys, "keys", "create", "--out", tmp_path / "k")
    assert code == 2 and "--force" in err and private.read_bytes() == before
    assert run(capsys, "keys", "create", "--out", tmp_path / "k", "--force")[0] == 0
    assert private.read_bytes() != before


def test_zip_prints_the_checksum(tmp_path, capsys, release):
    code, out, _ = run(capsys, "bundle", "zip", "dist", "--out", "c.zip")
    assert code == 0
    assert out.strip() == hashlib.sha256((tmp_path / "c.zip").read_bytes()).hexdigest()


def test_encrypt_output(release):
    assert len(release["checksum"]) == 512
    assert release["file"] == "b.zip_encrypted.zip"
    assert release["session_key"].count(":") == 1


def test_verify_accepts_and_unpacks(tmp_path, capsys, release):
    code, out, _ = run(
        capsys,
        "bundle",
        "verify",
        release["file"],
        "--checksum",
        release["checksum"],
        "--session-key",
        release["session_key"],
        "--public-key",
        "keys/public.pem",
        "--unpack",
        "out",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result == {
        "ok": True,
        "sha256": release["plain_checksum"],
        "decrypted": True,
        "signed": True,
        "files": 2,
        "unpacked": "out",
    }
    assert tree(tmp_path / "out") == tree(tmp_path / "dist")


def test_verify_with_capacitor_config(tmp_path, capsys, release):
    config = {
        "plugins": {"CapacitorUpdater": {"publicKey": (tmp_path / "keys/public.pem").read_text()}}
    }
    (tmp_path / "capacitor.config.json").write_text(json.dumps(config))
    code, out, _ = run(
        capsys,
        "bundle",
        "verify",
        release["file"],
        "--checksum",
        release["checksum"],
        "--session-key",
        release["session_key"],
        "--public-key",
        "capacitor.config.json",
    )
    assert code == 0 and out.startswith("accepted: sha256 " + release["plain_checksum"])


def test_refusal_prints_action_and_writes_nothing(tmp_path, capsys, release):
    data = bytearray((tmp_path / release["file"]).read_bytes())
    data[100] ^= 0x40
    (tmp_path / "bad.zip").write_bytes(bytes(data))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, _ = run(
        capsys,
        "bundle",
        "verify",
        "bad.zip",
        "--checksum",
        release["checksum"],
        "--session-key",
        release["session_key"],
        "--public-key",
        "keys/public.pem",
        "--unpack",
        "out",
        "--json",
    )
    assert code == 1
    result = json.loads(out)
    assert result["ok"] is False and result["action"] in ("checksum_fail", "decrypt_fail")
    assert result["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no "out", no temp


@pytest.mark.parametrize(
    ("args", "action"),
    [
        (["--checksum", ""], "checksum_required"),  # key, no checksum
        (["--checksum", "CHECKSUM"], "checksum_required"),  # key, not encrypted
        (["--checksum", "CHECKSUM", "--session-key", "AAAA:BBBB"], "decrypt_fail"),
    ],
)
def test_refusal_actions_in_plain_text(capsys, release, args, action):
    args = [release["checksum"] if a == "CHECKSUM" else a for a in args]
    code, out, _ = run(
        capsys, "bundle", "verify", release["file"], "--public-key", "keys/public.pem", *args
    )
    assert code == 1
    assert out.startswith(f"{action}: ") and out.count("\n") == 1


def test_unsafe_zip_is_refused_with_its_path_action(tmp_path, capsys, release):
    (tmp_path / "evil.zip").write_bytes(make_zip([("index.html", b"i"), ("../x.js", b"x")]))
    digest = hashlib.sha256((tmp_path / "evil.zip").read_bytes()).hexdigest()
    code, out, _ = run(
        capsys, "bundle", "verify", "evil.zip", "--checksum", digest, "--unpack", "u"
    )
    assert code == 1 and out.startswith("canonical_path_fail: ")
    assert not (tmp_path / "u").exists() and not (tmp_path.parent / "x.js").exists()


def test_crc32_is_accepted_with_a_warning(tmp_path, capsys, release):
    crc = f"{zlib.crc32((tmp_path / 'b.zip').read_bytes()):08x}"
    code, out, err = run(capsys, "bundle", "verify", "b.zip", "--checksum", crc)
    assert code == 0 and out.startswith("accepted")
    assert "warning: CRC32" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["bundle", "verify", "missing.zip", "--checksum", ""],
        ["bundle", "verify", "b.zip", "--checksum", "", "--public-key", "dist/index.html"],
        ["bundle", "verify", "b.zip", "--checksum", "", "--unpack", "dist"],
        ["bundle", "encrypt", "b.zip", "--key", "keys/public.pem"],
        ["bundle", "zip", "nowhere", "--out", "x.zip"],
        ["bundle", "manifest", "dist", "--out", "dist"],
    ],
)
def test_input_errors_are_one_line_exit_2(capsys, release, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("otasim: error: ") and err.count("\n") == 1


def test_manifest_command(tmp_path, capsys, release):
    code, out, _ = run(
        capsys,
        "bundle",
        "manifest",
        "dist",
        "--out",
        "m",
        "--key",
        "keys/private.pem",
        "--session-key",
        release["session_key"],
        "--json",
    )
    assert code == 0
    info = json.loads(out)
    assert info["files"] == 2 and info["session_key"] == release["session_key"]
    entries = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert sorted(e["file_name"] for e in entries) == ["index.html", "js/app.js"]


def test_help_documents_exit_codes():
    out = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "bundle", "verify", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "exit codes:" in out and "checksum_required" in out


def test_unpack_parent_must_exist(tmp_path, capsys, release):
    code, _, err = run(
        capsys, "bundle", "verify", "b.zip", "--checksum", "", "--unpack", "no/such/out"
    )
    assert code == 2 and "no such folder" in err
    assert not (tmp_path / "no").exists()
