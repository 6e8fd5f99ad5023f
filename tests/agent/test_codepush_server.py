"""CodePush round trips against the reference server over loopback: update with its reports,
crash-on-boot rollback (DeploymentFailed) and the failed label never again, no update, and the
attacks a signed CodePush app stops (tampered package, a re-hashed package, wrong key,
unsigned package, replay of an older signed package)."""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dialect_harness import Phone, dist, new_app, publish_as

from simulator.codepush_release import make_package, public_pem_for
from simulator.release import create_keys
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server() as running:
        yield running


def key_pair() -> tuple[bytes, bytes]:
    private, _ = create_keys()
    return private, public_pem_for(private).encode()


KEYS = key_pair()


@pytest.fixture
def app(server: RunningServer) -> str:
    return new_app(server)


def publish(
    server: RunningServer, app: str, version: str, folder: Path, key: bytes | None
) -> dict[str, Any]:
    return publish_as(server, "codepush", app, version, folder, key)


def phone_for(server: RunningServer, app: str, folder: Path, public: bytes | None) -> Phone:
    return Phone("codepush", server, app, folder, public)


def counts(server: RunningServer, app: str, version: str) -> dict[str, Any]:
    with AdminClient(server.url, server.admin_key) as admin:
        return dict(admin.stats(app, version)["versions"][version])


def test_update_reports_and_no_update(server: RunningServer, app: str, tmp_path: Path) -> None:
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), KEYS[0])
    phone = phone_for(server, app, tmp_path / "phone", KEYS[1])
    first = asyncio.run(phone.run())
    assert first.current.version == "1.0.1" and first.boot_confirmed
    assert (first.current.path / "assets" / "app.js").is_file()
    second = asyncio.run(phone.run())
    assert second.current.version == "1.0.1" and phone.downloads() == 1
    assert phone.errors()[-1] == "no_update_available"
    got = counts(server, app, "1.0.1")
    assert (got["downloads"], got["installs"], got["fails"]) == (1, 1, 0)


def test_crash_on_boot_rolls_back_reports_and_never_again(
    server: RunningServer, app: str, tmp_path: Path
) -> None:
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), KEYS[0])
    phone = phone_for(server, app, tmp_path / "phone", KEYS[1])
    asyncio.run(phone.run())
    publish(server, app, "1.0.2", dist(tmp_path, "1.0.2"), KEYS[0])
    booted = asyncio.run(phone.run(confirm=False))
    assert booted.current.version == "1.0.2" and not booted.boot_confirmed
    after = asyncio.run(phone.run())  # rolled back at launch; 1.0.2 offered again
    assert after.current.version == "1.0.1" and after.failed_versions == ("1.0.2",)
    assert phone.downloads() == 2
    # activated but never confirmed: no DeploymentSucceeded (the SDK reports at notifyAppReady)
    failed = counts(server, app, "1.0.2")
    assert (failed["installs"], failed["fails"]) == (0, 1)
    assert counts(server, app, "1.0.1")["installs"] == 1


def package_blob(server: RunningServer, app: str) -> Path:
    """The stored CodePush package an update_check offers (read as a device would)."""
    check = httpx.get(
        f"{server.url}/v0.1/public/codepush/update_check",
        params={"deployment_key": f"{app}/android", "app_version": "1.0.0",
                "client_unique_id": str(uuid.uuid4())},
    )  # fmt: skip
    return server.data_dir / "files" / check.json()["update_info"]["download_url"].rsplit("/")[-1]


def rezip(original: bytes, *, changed: dict[str, bytes], directories: bool = False) -> bytes:
    with zipfile.ZipFile(io.BytesIO(original)) as source:
        files = {n: source.read(n) for n in source.namelist()} | changed
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as rebuilt:
        if directories:
            rebuilt.writestr("assets/", b"")
        for name, data in files.items():
            rebuilt.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("case", ["tampered", "padded", "directory_entries"])
def test_served_package_variations(
    server: RunningServer, app: str, tmp_path: Path, case: str
) -> None:
    """A changed file is refused (even unsigned: the package hash); a blob padded after the
    zip, or a zip with directory entries, holds the same files and is taken (signed)."""
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), KEYS[0])
    blob = package_blob(server, app)
    original = blob.read_bytes()
    served = {
        "tampered": rezip(original, changed={"index.html": b"<html>owned</html>"}),
        "padded": original + bytes(512),
        "directory_entries": rezip(original, changed={}, directories=True),
    }[case]
    blob.write_bytes(served)
    try:
        trust = None if case == "tampered" else KEYS[1]
        phone = phone_for(server, app, tmp_path / "phone", trust)
        status = asyncio.run(phone.run())
    finally:
        blob.write_bytes(original)
    if case == "tampered":
        assert status.current.id == "builtin" and status.bundles == ()
        assert ("checksum_fail", "1.0.1") in phone.observer.stats
    else:
        assert status.current.version == "1.0.1" and status.boot_confirmed


@pytest.mark.parametrize("case", ["wrong_key", "unsigned", "rehashed"])
def test_package_without_the_apps_signature_is_refused(
    server: RunningServer, app: str, tmp_path: Path, case: str
) -> None:
    folder = dist(tmp_path, "1.0.1")
    if case == "rehashed":  # a server that swapped the files and announced their hash
        signed = make_package(folder, tmp_path / "good.zip", KEYS[0])
        (folder / "index.html").write_text("<html>owned</html>")
        forged = make_package(folder, tmp_path / "forged.zip", None)
        with zipfile.ZipFile(signed.zip_path) as good, zipfile.ZipFile(forged.zip_path, "a") as z:
            z.writestr(".codepushrelease", good.read(".codepushrelease"))
        with AdminClient(server.url, server.admin_key) as admin:
            artefacts = {"file_id": admin.upload_file(app, forged.zip_path),
                         "package_hash": forged.package_hash}  # fmt: skip
            admin.upload_bundle(
                app, "1.0.1", zip_path=forged.zip_path, checksum=forged.zip_checksum,
                dialects={"codepush": artefacts},
            )  # fmt: skip
            admin.set_channel(app, "production", public=True, version="1.0.1")
    else:
        publish(server, app, "1.0.1", folder, key_pair()[0] if case == "wrong_key" else None)
    phone = phone_for(server, app, tmp_path / "phone", KEYS[1])
    status = asyncio.run(phone.run())
    assert status.current.id == "builtin" and status.bundles == ()
    action = "signature_required" if case == "unsigned" else "signature_fail"
    assert (action, "1.0.1") in phone.observer.stats


def test_unsigned_app_takes_an_unsigned_package(
    server: RunningServer, app: str, tmp_path: Path
) -> None:
    publish(server, app, "1.0.1", dist(tmp_path, "1.0.1"), None)
    phone = phone_for(server, app, tmp_path / "phone", None)
    assert asyncio.run(phone.run()).current.version == "1.0.1"


@pytest.mark.parametrize("replay", ["rolled_back_channel", "relabelled"])
def test_replay_of_an_older_signed_package_is_refused(
    server: RunningServer, app: str, tmp_path: Path, replay: str
) -> None:
    first = dist(tmp_path, "1.0.1")
    publish(server, app, "1.0.1", first, KEYS[0])
    phone = phone_for(server, app, tmp_path / "phone", KEYS[1])
    asyncio.run(phone.run())
    publish(server, app, "1.0.2", dist(tmp_path, "1.0.2"), KEYS[0])
    assert asyncio.run(phone.run()).current.version == "1.0.2"
    if replay == "rolled_back_channel":
        with AdminClient(server.url, server.admin_key) as admin:
            admin.set_channel(app, "production", version="1.0.1")
    else:  # the old signed package again, under a new label
        publish(server, app, "1.0.3", first, KEYS[0])
    status = asyncio.run(phone.run())
    assert status.current.version == "1.0.2" and phone.downloads() == 2
    expected = "downgrade_refused" if replay == "rolled_back_channel" else "relabelled_content"
    assert phone.errors()[-1] == expected
