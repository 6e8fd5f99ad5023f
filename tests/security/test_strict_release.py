"""Strict mode: the signed release document, from `otasim publish --strict` through the
reference server to a strict device (and what it refuses)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.api import AgentObserver
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from agent.errors import VerificationError
from agent.protocol.base import ReleaseDocument
from agent.security.release import open_release, sign_release
from simulator import cli
from simulator.prove.powercut import NoWaitClock
from simulator.publish import PublishError, publish
from simulator.server.client import AdminClient, AdminError
from simulator.server.embedded import run_server

APP = "com.otasim.strict"
DOC = ReleaseDocument(APP, "1.0.1", 3, 2_000_000_000, "ab" * 32, {"index.html": "cd" * 32})


def test_a_signed_document_opens_and_every_change_is_refused(keys: Any, other_keys: Any) -> None:
    field = sign_release(DOC, keys.private)
    assert open_release(field, keys.public) == DOC
    signed = json.loads(base64.b64decode(field["signed"]))
    signed["counter"] = 4
    forged = field | {"signed": base64.b64encode(json.dumps(signed).encode()).decode()}
    for raw, error in (
        (forged, "release_signature_fail"),
        (sign_release(DOC, other_keys.private), "release_signature_fail"),
        (None, "release_unsigned"),
        ({"signed": "not base64!", "signature": field["signature"]}, "release_unsigned"),
        ({"signed": field["signed"]}, "release_unsigned"),
    ):
        with pytest.raises(VerificationError) as caught:
            open_release(raw, keys.public)
        assert caught.value.action == error


def test_fields_of_the_wrong_type_are_refused_even_when_signed(keys: Any) -> None:
    bad = ReleaseDocument(APP, "1.0.1", "3", 1, "", {})  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as caught:
        open_release(sign_release(bad, keys.private), keys.public)
    assert caught.value.action == "release_unsigned"


@dataclass
class Reference:
    url: str
    admin: AdminClient
    port: Any  # the devices' sync HTTP port
    admin_key: str = ""


@pytest.fixture
def reference() -> Iterator[Reference]:
    port = make_sync_port()
    with run_server() as server, AdminClient(server.url, server.admin_key) as admin:
        yield Reference(server.url, admin, port, server.admin_key)
    port.close()


def _dist(folder: Path, version: str) -> Path:
    (folder / "js").mkdir(parents=True)
    (folder / "index.html").write_text(f"<html>{version}</html>")
    (folder / "js" / "app.js").write_text(f"console.log('{version}');" * 500)
    return folder


def _device(
    reference: Reference,
    folder: Path,
    keys: Any,
    strict: bool,
    observer: AgentObserver | None = None,
) -> SyncDevice:
    url = reference.url
    config = AgentConfig(
        update_url=f"{url}/updates",
        stats_url=f"{url}/stats",
        channel_url=f"{url}/channel_self",
        public_key=keys.public_pem.decode(),
        strict_release=strict,
    )
    identity = DeviceIdentity(str(uuid.uuid4()), APP, "android", "1.0.0")
    return SyncDevice.open(
        folder, config, identity, reference.port, clock=NoWaitClock(), observer=observer
    )


def _update(device: SyncDevice) -> str:
    device.launch()
    device.background()
    device.notify_app_ready(device.status().boot_id)
    return device.status().current.version


def test_publish_strict_then_a_strict_device_installs_zip_and_delta(
    reference: Reference, keys: Any, tmp_path: Path
) -> None:
    admin = reference.admin
    device = _device(reference, tmp_path / "device", keys, strict=True)
    for n, (version, delta) in enumerate((("1.0.1", False), ("1.0.2", True)), 1):
        source = _dist(tmp_path / version, version)
        publish(
            admin,
            app_id=APP,
            version=version,
            channel="production",
            source=source,
            private_pem=keys.private_pem,
            delta=delta,
            strict=True,
            counter=n,
        )
        assert _update(device) == version
    state = device._rt.agent.state
    assert state.release_counter == 2 and state.release_expires > 0
    assert not [e for e in device.status().failed_versions]


def test_a_strict_device_refuses_a_release_published_without_its_document(
    reference: Reference, keys: Any, tmp_path: Path
) -> None:
    admin = reference.admin
    source = _dist(tmp_path / "1.0.1", "1.0.1")
    publish(
        admin,
        app_id=APP,
        version="1.0.1",
        channel="production",
        source=source,
        private_pem=keys.private_pem,
    )
    strict = _device(reference, tmp_path / "strict", keys, strict=True)
    assert _update(strict) == "1.0.0"
    assert _update(_device(reference, tmp_path / "capgo", keys, strict=False)) == "1.0.1"


def test_strict_needs_a_key(reference: Reference, tmp_path: Path) -> None:
    admin = reference.admin
    with pytest.raises(PublishError, match="--key"):
        publish(
            admin,
            app_id=APP,
            version="1.0.1",
            channel="production",
            source=_dist(tmp_path / "d", "1.0.1"),
            strict=True,
        )
    with pytest.raises(ValueError, match="public_key"):
        AgentConfig(strict_release=True)


class _Stale(AgentObserver):
    def __init__(self) -> None:
        self.reported = 0

    def on_event(self, name: str, payload: Any) -> None:
        self.reported += name == "releaseStale"


def _publish_strict(
    reference: Reference, tmp_path: Path, keys: Any, version: str, **options: Any
) -> None:
    publish(
        reference.admin,
        app_id=APP,
        version=version,
        channel="production",
        source=_dist(tmp_path / version, version),
        private_pem=keys.private_pem,
        **options,
    )


def _resign(reference: Reference, key_file: Path, *extra: str) -> int:
    argv = ["resign", "--server", reference.url, "--api-key", reference.admin_key]
    argv += ["--app-id", APP, "--version", "1.0.1", "--key", str(key_file), *extra]
    return cli.main(argv)


def test_resign_refreshes_an_expiring_document_and_the_device_stops_reporting_a_freeze(
    reference: Reference, keys: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish_strict(reference, tmp_path, keys, "1.0.1", strict=True, expires_days=2 / 86400)
    stale = _Stale()
    device = _device(reference, tmp_path / "device", keys, strict=True, observer=stale)
    assert _update(device) == "1.0.1"
    counter = device._rt.agent.state.release_counter
    time.sleep(2.5)  # the document expires: the device, told nothing newer, says so
    device.launch()
    assert stale.reported == 1
    (tmp_path / "private.pem").write_bytes(keys.private_pem)
    assert _resign(reference, tmp_path / "private.pem", "--expires-days", "1") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["expires"] > time.time() + 86000
    device.launch()
    assert stale.reported == 1  # the fresher document came with "no new version"
    state = device._rt.agent.state
    assert state.release_expires == answer["expires"]
    assert state.release_counter == counter  # a refresh is not a new release
    assert device.status().current.version == "1.0.1"


def test_resign_refuses_a_wrong_key_an_unsigned_release_and_a_changed_document(
    reference: Reference,
    keys: Any,
    other_keys: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _publish_strict(reference, tmp_path, keys, "1.0.1", strict=True, counter=5)
    _publish_strict(reference, tmp_path, keys, "1.0.2")  # Capgo v2 only
    (tmp_path / "other.pem").write_bytes(other_keys.private_pem)
    assert _resign(reference, tmp_path / "other.pem") == 2
    err = capsys.readouterr().err
    assert err.startswith("otasim: error: ") and "does not verify with this key" in err
    assert err.count("\n") == 1
    with pytest.raises(AdminError) as caught:
        reference.admin.release(APP, "1.0.2")
    assert caught.value.error == "no_release"
    stored = reference.admin.release(APP, "1.0.1")
    forged = open_release(stored, keys.public)
    for change in ({"counter": 6}, {"version": "1.0.2"}, {"bundle": "00" * 32}):
        changed = sign_release(replace(forged, **change), keys.private)
        with pytest.raises(AdminError) as caught:
            reference.admin.replace_release(APP, "1.0.1", changed)
        assert caught.value.error == "release_mismatch"
    assert reference.admin.release(APP, "1.0.1") == stored
    later = sign_release(replace(forged, expires=forged.expires + 60), keys.private)
    assert reference.admin.replace_release(APP, "1.0.1", later)["expires"] == forged.expires + 60
    assert reference.admin.release(APP, "1.0.1") == later


def test_device_init_strict_needs_a_public_key_and_sets_strict_mode(
    tmp_path: Path, keys: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "public.pem").write_bytes(keys.public_pem)
    base = ["device", "init", "--server", "http://127.0.0.1:9", "--app-id", APP]
    base += ["--platform", "android", "--version-build", "1.0.0", "--strict"]
    assert cli.main([*base, str(tmp_path / "nokey")]) == 2
    assert "strict_release needs public_key" in capsys.readouterr().err
    assert not (tmp_path / "nokey").exists()
    key = ["--public-key", str(tmp_path / "public.pem")]
    for folder, strict in (("strict", True), ("capgo", False)):
        argv = [*base, *key, str(tmp_path / folder)]
        assert cli.main(argv if strict else [a for a in argv if a != "--strict"]) == 0
        record = json.loads((tmp_path / folder / "device.json").read_text())
        assert record["config"]["strict_release"] is strict
