"""Byte compatibility with the real Capgo CLI (`@capgo/cli`, pinned in package.json).

The fixtures were made by that CLI (make-fixtures.sh, README.md). They go through the one
verify-and-unpack pipeline twice: from the file (`unpack_file`, as `otasim bundle verify`) and
as a device receives them (a `SyncDevice` downloading them over loopback HTTP, killed midway
and resumed). The last test runs the CLI itself on otasim's output when Node is installed (it
is on developer machines and in CI, where `make test` installs the pinned package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agent.bundles.zipbundle import unpack_file
from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.api import AgentObserver
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from agent.errors import VerificationError
from agent.security.keys import key_id, load_public_key
from agent.security.verify import plan_bundle_verification
from simulator.release import (
    create_keys,
    encrypt_bundle,
    file_sha256,
    load_private_key,
    sign_checksum,
)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "agent"))  # the loopback Capgo peer of the agent tests
from capgo_peer import serve_peer  # noqa: E402

FIXTURES = HERE / "fixtures"
CAPGO = HERE / "node_modules" / ".bin" / "capgo"


def fixture_json(name: str) -> dict[str, str]:
    return json.loads((FIXTURES / name).read_text())


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def public_key():
    return load_public_key((FIXTURES / "capacitor.config.json").read_text())


def test_key_files_and_config_agree(public_key):
    pub = (FIXTURES / "capgo_key_v2.pub").read_text()
    assert load_public_key(pub).key_id == public_key.key_id == key_id(pub)
    private = load_private_key((FIXTURES / "capgo_key_v2").read_bytes())
    assert private.public_key().public_numbers() == public_key.key.public_numbers()


def test_cli_zip_checksum_is_its_sha256():
    assert file_sha256(FIXTURES / "bundle.zip") == fixture_json("zip.json")["checksum"]


@pytest.mark.parametrize("made", ["encrypt.json", "legacy.json"])
def test_cli_encrypted_bundles_verify_and_unpack(tmp_path, public_key, made):
    info = fixture_json(made)
    plan = plan_bundle_verification(info["checksum"], info["ivSessionKey"], public_key)
    encrypted = FIXTURES / ("legacy_encrypted.zip" if made == "legacy.json" else info["filename"])
    verifier = unpack_file(encrypted, tmp_path / "out", plan)
    assert verifier.sha256_hex == fixture_json("zip.json")["checksum"]
    assert tree(tmp_path / "out") == tree(FIXTURES / "www")


class _Killed(BaseException):
    pass


class _KillAt(AgentObserver):
    """Kills the device once its download passes `percent` (a process dying mid-download)."""

    def __init__(self, percent: int) -> None:
        self.percent = percent

    def on_event(self, name, payload):
        if name == "download" and int(payload["percent"]) >= self.percent:
            self.percent = 101
            raise _Killed


@pytest.mark.parametrize("made", ["encrypt.json", "legacy.json"])
def test_a_device_downloads_and_installs_the_clis_encrypted_bundles(tmp_path, made):
    """The shipped path: streamed over HTTP, killed at 30 %, resumed with a Range request,
    replayed, decrypted, hashed, signature-checked, unpacked and moved into place."""
    info = fixture_json(made)
    encrypted = FIXTURES / ("legacy_encrypted.zip" if made == "legacy.json" else info["filename"])
    payload = encrypted.read_bytes()
    config_json = json.loads((FIXTURES / "capacitor.config.json").read_text())
    public_pem = config_json["plugins"]["CapacitorUpdater"]["publicKey"]
    identity = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "android", "1.0.0")
    with serve_peer() as peer:
        peer.publish("2.0.0", payload, checksum=info["checksum"], session_key=info["ivSessionKey"])
        peer.chunk_bytes, peer.slow_bundle_s = 128, 0.02  # chunks arrive apart: killed mid-body
        config = AgentConfig(
            update_url=f"{peer.url}/updates",
            stats_url="",
            channel_url=f"{peer.url}/channel_self",
            public_key=public_pem,
            auto_update="always",
        )
        port = make_sync_port()
        try:
            killer = _KillAt(30)
            device = SyncDevice.open(tmp_path / "device", config, identity, port, observer=killer)
            with pytest.raises(_Killed):
                device.launch()
            device = SyncDevice.open(tmp_path / "device", config, identity, port)
            device.launch()
        finally:
            port.close()
        ranges = [h.get("range") for h in peer.bundle_requests()]
    status = device.status()
    assert status.current.version == "2.0.0", ranges
    assert status.current.path is not None
    assert tree(status.current.path) == tree(FIXTURES / "www")
    assert len(ranges) == 2 and ranges[0] is None
    assert 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) < len(payload)


def test_cli_bundle_with_another_key_is_refused():
    other = load_public_key(create_keys()[1].decode())
    info = fixture_json("encrypt.json")
    with pytest.raises(VerificationError) as err:
        plan_bundle_verification(info["checksum"], info["ivSessionKey"], other)
    assert err.value.action == "checksum_fail"


@pytest.mark.parametrize(("made", "fmt"), [("encrypt.json", "v3"), ("legacy.json", "legacy")])
def test_our_signed_checksum_is_byte_identical_to_the_clis(made, fmt):
    private = load_private_key((FIXTURES / "capgo_key_v2").read_bytes())
    digest = fixture_json("zip.json")["checksum"]
    assert sign_checksum(private, digest, fmt) == fixture_json(made)["checksum"]


def _capgo_app(tmp_path: Path, public_pem: str) -> Path:
    """An app folder as the CLI wants it: package.json, node_modules, capacitor.config.json."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(HERE / "package.json", app / "package.json")
    (app / "node_modules").symlink_to(HERE / "node_modules")
    config = {
        "appId": "com.otasim.interop",
        "webDir": "www",
        "plugins": {"CapacitorUpdater": {"publicKey": public_pem}},
    }
    (app / "capacitor.config.json").write_text(json.dumps(config))
    return app


def _capgo_decrypt(app: Path, enc: Path, session_key: str, key: Path, checksum: str):
    return subprocess.run(
        [
            str(CAPGO),
            "bundle",
            "decrypt",
            str(enc),
            session_key,
            "--key",
            str(key),
            "--checksum",
            checksum,
        ],
        cwd=app,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CI": "true"},
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_capgo_cli_decrypts_what_otasim_encrypts(tmp_path):
    assert CAPGO.exists(), "run `make test` (it installs tests/interop/node_modules)"
    key = FIXTURES / "capgo_key_v2"
    shutil.copy(FIXTURES / "bundle.zip", tmp_path / "bundle.zip")
    ours = encrypt_bundle(tmp_path / "bundle.zip", key.read_bytes(), tmp_path / "ours.zip")
    app = _capgo_app(tmp_path, (FIXTURES / "capgo_key_v2.pub").read_text())

    done = _capgo_decrypt(app, ours.path, ours.session_key, key, ours.checksum)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Checksum matches" in done.stdout + done.stderr
    decrypted = tmp_path / "ours.zip_decrypted.zip"
    assert decrypted.read_bytes() == (tmp_path / "bundle.zip").read_bytes()

    decrypted.unlink()  # and the CLI refuses a checksum signed by another key
    wrong = fixture_json("encrypt.json")["checksum"][:-2] + "00"
    assert _capgo_decrypt(app, ours.path, ours.session_key, key, wrong).returncode != 0
