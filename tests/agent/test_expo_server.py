"""Expo Updates round trips against the reference server over loopback: update, crash-on-boot
rollback, a failed update never again, no update, and the attacks a signed Expo app stops
(tampered asset, wrong key, unsigned manifest, replay of an older signed manifest)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from dialect_harness import RUNTIME, Phone, dist, new_app, publish_as

from simulator.expo_release import SigningPair, create_signing_pair
from simulator.server.client import AdminClient, AdminError
from simulator.server.embedded import RunningServer, run_server


def phone_for(server: RunningServer, app: str, folder: Path, certificate: bytes | None) -> Phone:
    return Phone("expo", server, app, folder, certificate)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server() as running:
        yield running


@pytest.fixture(scope="module")
def pair() -> SigningPair:
    return create_signing_pair()


@pytest.fixture
def app(server: RunningServer) -> str:
    return new_app(server)


def publish(
    server: RunningServer, app: str, version: str, folder: Path, key: bytes | None
) -> dict[str, Any]:
    return publish_as(server, "expo", app, version, folder, key)


def test_update_then_no_update(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path
) -> None:
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), pair.private_pem)
    phone = phone_for(server, app, tmp_path / "phone", pair.certificate_pem)
    first = asyncio.run(phone.run())
    assert first.current.version == "1.0.1" and first.boot_confirmed
    assert first.current.path is not None
    assert (first.current.path / "index.html").read_text() == "<html>1.0.1</html>"
    assert (first.current.path / "assets" / "app.js").is_file()
    fetched = phone.downloads()
    second = asyncio.run(phone.run())
    assert second.current.version == "1.0.1"
    assert phone.downloads() == fetched
    assert phone.errors()[-1] == "no_update_available"


def test_crash_on_boot_rolls_back_and_is_never_installed_again(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path
) -> None:
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), pair.private_pem)
    phone = phone_for(server, app, tmp_path / "phone", pair.certificate_pem)
    asyncio.run(phone.run())
    publish(server, app, "1.0.2", dist(tmp_path, "1.0.2"), pair.private_pem)
    booted = asyncio.run(phone.run(confirm=False))  # 1.0.2 boots, the app dies before ready
    assert booted.current.version == "1.0.2" and not booted.boot_confirmed
    fetched = phone.downloads()
    after = asyncio.run(phone.run())  # rollback at launch; the check offers 1.0.2 again
    assert after.current.version == "1.0.1" and after.boot_confirmed
    assert after.failed_versions == ("1.0.2",)
    assert phone.downloads() == fetched  # the failed update is not fetched again
    assert ("update_fail", "1.0.2") in phone.observer.stats


def test_tampered_asset_is_refused(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path
) -> None:
    folder = dist(tmp_path, "1.0.1")
    publish(server, app, "1.0.1", folder, pair.private_pem)
    script = (folder / "assets" / "app.js").read_bytes()
    blob = server.data_dir / "files" / hashlib.sha256(script).hexdigest()
    original = blob.read_bytes()
    blob.write_bytes(original.replace(b"1.0.1", b"6.6.6"))
    try:
        phone = phone_for(server, app, tmp_path / "phone", pair.certificate_pem)
        status = asyncio.run(phone.run())
    finally:
        blob.write_bytes(original)
    assert status.current.id == "builtin" and status.bundles == ()
    assert ("download_fail", "1.0.1") in phone.observer.stats


@pytest.mark.parametrize("case", ["wrong_key", "unsigned"])
def test_manifest_without_the_apps_signature_is_refused(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path, case: str
) -> None:
    key = create_signing_pair().private_pem if case == "wrong_key" else None
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), key)
    phone = phone_for(server, app, tmp_path / "phone", pair.certificate_pem)
    status = asyncio.run(phone.run())
    assert status.current.id == "builtin" and phone.downloads() == 0
    expected = "signature_fail" if case == "wrong_key" else "signature_required"
    assert phone.errors() == [expected]


def test_unsigned_app_takes_an_unsigned_manifest(
    server: RunningServer, app: str, tmp_path: Path
) -> None:
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), None)
    phone = phone_for(server, app, tmp_path / "phone", None)
    assert asyncio.run(phone.run()).current.version == "1.0.1"


def test_replay_of_an_older_signed_manifest_is_refused(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path
) -> None:
    """The channel serves 1.0.1's signed manifest again after the device took 1.0.2: the same
    bytes a man in the middle would replay. The device never saw 1.0.1."""
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), pair.private_pem)
    recorded = record(server, app)  # what an attacker records while 1.0.1 is live
    assert b'"1.0.1"' in recorded.content
    publish(server, app, "1.0.2", dist(tmp_path, "1.0.2"), pair.private_pem)
    phone = phone_for(server, app, tmp_path / "phone", pair.certificate_pem)
    assert asyncio.run(phone.run()).current.version == "1.0.2"
    with AdminClient(server.url, server.admin_key) as admin:
        admin.set_channel(app, "production", version="1.0.1")
    fetched = phone.downloads()
    status = asyncio.run(phone.run())
    assert status.current.version == "1.0.2" and phone.downloads() == fetched
    assert phone.errors()[-1] == "release_replayed"


def otasim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_cli_keys_and_publish_then_a_signed_device_updates(
    server: RunningServer, app: str, tmp_path: Path
) -> None:
    created = otasim("keys", "create", "--dialect", "expo", "--out", str(tmp_path / "k"), "--json")
    assert created.returncode == 0, created.stderr
    paths = json.loads(created.stdout)
    assert (tmp_path / "k" / "private.pem").stat().st_mode & 0o777 == 0o600
    env = {"OTASIM_SERVER": server.url, "OTASIM_API_KEY": server.admin_key}
    published = otasim(
        "publish", "--dialect", "expo", "--app-id", app, "--channel", "production",
        "--version", "1.0.1", "--key", paths["private_key"], str(dist(tmp_path, "1.0.1")),
        env=env,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    certificate = Path(paths["certificate"]).read_bytes()
    phone = phone_for(server, app, tmp_path / "phone", certificate)
    assert asyncio.run(phone.run()).current.version == "1.0.1"
    other = phone_for(server, app, tmp_path / "other", create_signing_pair().certificate_pem)
    assert asyncio.run(other.run()).current.id == "builtin"
    assert other.errors() == ["signature_fail"]
    given = otasim("admin", "signing-key", app, "expo", paths["private_key"], env=env)
    assert given.returncode == 0 and json.loads(given.stdout)["signs_answers"] is True
    rolled = otasim("admin", "rollback", app, "production", "builtin", env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert asyncio.run(phone.run()).current.id == "builtin"  # a signed rollBackToEmbedded
    missing = otasim("admin", "signing-key", app, "expo", str(tmp_path / "none.pem"), env=env)
    assert missing.returncode == 2 and "No such file" in missing.stderr


@pytest.mark.parametrize("server_key", [True, False])
def test_channel_rollbacks_reach_signed_devices_when_the_server_holds_the_key(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path, server_key: bool
) -> None:
    """Publish-time signing alone cannot roll a signed fleet back: the older manifest is a
    replay for a device that took a newer one, and rollBackToEmbedded goes unsigned. With the
    app's key on the server, both answers are signed (and dated) when they are made."""
    if server_key:
        with AdminClient(server.url, server.admin_key) as admin:
            admin.set_signing_key(app, "expo", pair.private_pem)
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), pair.private_pem)
    kept = phone_for(server, app, tmp_path / "kept", pair.certificate_pem)
    assert asyncio.run(kept.run()).current.version == "1.0.1"
    publish(server, app, "1.0.2", dist(tmp_path, "1.0.2"), pair.private_pem)
    crashed = phone_for(server, app, tmp_path / "crashed", pair.certificate_pem)
    asyncio.run(crashed.run(confirm=False))  # 1.0.2 crashes on boot: back to builtin
    assert asyncio.run(crashed.run()).failed_versions == ("1.0.2",)
    with AdminClient(server.url, server.admin_key) as admin:
        admin.rollback(app, "production", "1.0.1")
    after = asyncio.run(crashed.run())
    assert after.current.version == ("1.0.1" if server_key else "1.0.0")  # 1.0.0: builtin
    assert ("release_replayed" in crashed.errors()) is not server_key
    with AdminClient(server.url, server.admin_key) as admin:
        admin.rollback(app, "production", "builtin")
    current = asyncio.run(kept.run()).current
    assert (current.id == "builtin") is server_key
    assert ("signature_required" in kept.errors()) is not server_key


def record(server: RunningServer, app: str, running: str = "") -> httpx.Response:
    """The answer a man in the middle records for a device of `app` on production running
    the update whose id is `running` (default: the embedded one)."""
    current = {"expo-current-update-id": running} if running else {}
    with httpx.Client() as client:
        return client.get(
            f"{server.url}/expo",
            headers={
                "expo-platform": "android",
                "expo-runtime-version": RUNTIME,
                "eas-client-id": str(uuid.uuid4()),
                "otasim-app-id": app,
                "accept": "multipart/mixed",
                **current,
            },
        )


@contextmanager
def replaying(answer: httpx.Response) -> Iterator[str]:
    """A loopback server that answers every GET with the recorded `answer`: its URL."""

    class Replay(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(answer.status_code)
            for name in ("content-type", "expo-protocol-version", "expo-sfv-version"):
                self.send_header(name, answer.headers[name])
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/expo"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_replayed_signed_roll_back_to_embedded_is_refused(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path
) -> None:
    """A signed rollBackToEmbedded recorded before the device took a later update is older
    than that update (commitTime against createdAt): refused, nothing reverted; the server's
    fresh directive, made after, is taken."""
    with AdminClient(server.url, server.admin_key) as admin:
        admin.set_signing_key(app, "expo", pair.private_pem)
        publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), pair.private_pem)
        update_id = re.search(rb'"id":"([0-9a-f-]{36})"', record(server, app).content)
        assert update_id is not None
        admin.rollback(app, "production", "builtin")
        recorded = record(server, app, update_id.group(1).decode())
        assert b"rollBackToEmbedded" in recorded.content and b"expo-signature" in recorded.content
        admin.rollback(app, "production", "1.0.1")
    phone = phone_for(server, app, tmp_path / "phone", pair.certificate_pem)
    assert asyncio.run(phone.run()).current.version == "1.0.1"
    live = phone.config
    with replaying(recorded) as url:
        phone.config = dataclasses.replace(live, update_url=url)
        status = asyncio.run(phone.run())
    assert status.current.version == "1.0.1" and phone.errors()[-1] == "release_replayed"
    with AdminClient(server.url, server.admin_key) as admin:
        admin.rollback(app, "production", "builtin")
    phone.config = live
    assert asyncio.run(phone.run()).current.id == "builtin"


@pytest.mark.parametrize(
    ("dialect", "pem", "message"),
    [
        ("codepush", None, "only these dialects take a server signing key: expo"),
        ("expo", b"not a key", "private_pem: not an unencrypted PEM private key"),
    ],
)
def test_a_server_signing_key_is_checked(
    server: RunningServer,
    app: str,
    pair: SigningPair,
    dialect: str,
    pem: bytes | None,
    message: str,
) -> None:
    with AdminClient(server.url, server.admin_key) as admin, pytest.raises(AdminError) as refused:
        admin.set_signing_key(app, dialect, pem or pair.private_pem)
    assert refused.value.status == 400 and str(refused.value).count(message) == 1


def test_an_update_for_another_runtime_version_is_refused(
    server: RunningServer, app: str, pair: SigningPair, tmp_path: Path
) -> None:
    """The reference server offers a device only its runtime's updates; a server (or a man in
    the middle) that serves another runtime's update is refused before any download."""
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), pair.private_pem)
    phone = phone_for(server, app, tmp_path / "phone", pair.certificate_pem)
    phone.identity = dataclasses.replace(phone.identity, version_build="2.0.0")
    assert asyncio.run(phone.run()).current.id == "builtin"
    assert phone.errors() == ["no_update_available"]
    live = phone.config
    with replaying(record(server, app)) as url:  # a runtime 1.0.0 answer, signed
        phone.config = dataclasses.replace(live, update_url=url)
        status = asyncio.run(phone.run())
    assert status.current.id == "builtin" and phone.downloads() == 0
    assert phone.errors()[-1] == "runtime_mismatch"
    refused = [p for n, p in phone.observer.events if n == "updateCheckResult"][-1]
    assert refused["message"] == "the update is for runtime version '1.0.0', this is '2.0.0'"
    assert ("download_fail", "1.0.1") in phone.observer.stats
