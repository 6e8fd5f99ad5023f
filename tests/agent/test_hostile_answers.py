"""Hostile answers (issue 16, items 2 and 3): bounded parsing at the one dialect boundary.

Each reproducer of the audit runs against both drivers over loopback HTTP: the check fails
as `malformed_answer`, nothing is left half-written, and the device keeps working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from capgo_peer import Canned, CapgoPeer, canned_json, make_zip
from device_harness import Driven

from agent.errors import ProtocolError
from agent.protocol.bounds import MAX_DEPTH, label_problem, load_json, url_problem
from agent.protocol.capgo import CapgoDialect
from simulator.release import EncryptedBundle, create_keys, encrypt_bundle

Make = Callable[..., Driven]
DEEP = b"[" * 100_000 + b"]" * 100_000


def _failed_checks(device: Driven) -> list[str]:
    return [
        p.get("error", "")
        for n, p in device.observer.events
        if n == "updateCheckResult" and p.get("kind") == "failed"
    ]


def _offer_body(peer: CapgoPeer, **fields: object) -> dict[str, object]:
    peer.publish("1.0.1")
    return peer.offer() | fields


@pytest.mark.parametrize("status", [200, 400, 429, 500])
def test_deeply_nested_answers_are_a_failed_check(
    peer: CapgoPeer, make_device: Make, status: int
) -> None:
    peer.canned.append(Canned(status, DEEP))
    device = make_device(transport_attempts=1)
    device.launch()
    failed = _failed_checks(device)
    assert len(failed) == 1
    if status == 200:
        assert failed == ["malformed_answer"]
    assert device.status().bundles == ()
    device.foreground()  # the device keeps checking
    assert peer.paths().count("/updates") == 2


@pytest.mark.parametrize("where", ["offer", "manifest"])
def test_deep_nesting_inside_an_offer(peer: CapgoPeer, make_device: Make, where: str) -> None:
    body = json.dumps(_offer_body(peer, extra="@")).encode()
    if where == "manifest":
        body = json.dumps(_offer_body(peer, manifest=["@"])).encode()
    peer.canned.append(Canned(200, body.replace(b'"@"', DEEP)))
    device = make_device()
    device.launch()
    assert _failed_checks(device) == ["malformed_answer"]
    assert device.status().bundles == ()


@pytest.mark.parametrize("status", [200, 429])
def test_deeply_nested_stats_answers(peer: CapgoPeer, make_device: Make, status: int) -> None:
    peer.stats_canned.append(Canned(status, DEEP))
    device = make_device(transport_attempts=1)
    device.launch()
    device.flush_stats(2)
    assert ("/stats", "POST", status, None) in device.observer.requests
    device.foreground()
    assert device.status().current.version == "1.0.0"


@pytest.mark.parametrize(
    "fields",
    [
        {"version": "\ud800"},  # a lone surrogate: no file or terminal can encode it
        {"version": "1.0.1\x1b[2J"},  # terminal control sequence in a label
        {"version": "1" * 300},
        {"url": "http://[::1"},  # urlsplit raises ValueError
        {"url": "http://127.0.0.1:99999/x.zip"},  # port out of range
        {"url": "https://cdn.test/" + "a" * 70_000},  # httpx raised InvalidURL
    ],
)
def test_hostile_offer_fields_are_refused_before_anything_is_stored(
    peer: CapgoPeer, make_device: Make, fields: dict[str, str]
) -> None:
    peer.canned.append(canned_json(_offer_body(peer, **fields)))
    device = make_device()
    device.launch()
    assert _failed_checks(device) == ["malformed_answer"]
    status = device.status()
    assert status.bundles == () and status.current.version == "1.0.0"
    assert all(r[0] != "bundle" for r in device.observer.requests)


def test_lone_surrogate_leaves_the_cli_device_usable(peer: CapgoPeer, tmp_path: Path) -> None:
    """The audit's case: exit 2, a stuck `downloading` bundle, and `status` crashing after."""
    folder = tmp_path / "dev"

    def otasim(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "simulator.cli", "device", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    init = otasim(
        "init",
        str(folder),
        *("--server", peer.url, "--app-id", "com.example.app"),
        *("--platform", "ios", "--version-build", "1.0.0"),
    )
    assert init.returncode == 0, init.stderr
    body = json.dumps(_offer_body(peer, version="\ud800")).encode()
    peer.canned.append(Canned(200, body, {"content-type": "application/json"}))
    launch = otasim("launch", str(folder))
    assert launch.returncode == 3, launch.stderr
    assert '"error": "malformed_answer"' in launch.stdout
    shown = otasim("status", str(folder), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["bundles"] == []
    # a state written by an agent without the boundary: shown escaped, never a crash
    state = json.loads((folder / "state.json").read_text())
    state["bundles"] = [{"id": "k" * 10, "version": "\ud800", "status": "downloading"}]
    (folder / "state.json").write_text(json.dumps(state))
    shown = otasim("status", str(folder))
    assert shown.returncode == 0 and "\\ud800" in shown.stdout, shown.stderr


@pytest.mark.parametrize("name", ["/updates", "/stats"])
def test_a_trickling_server_cannot_hold_an_exchange_past_its_deadline(
    peer: CapgoPeer, make_device: Make, name: str
) -> None:
    """The audit's slow server: one byte at a time, each within the inactivity timeout. The
    exchange ends at `exchange_timeout_s` (real time), as one attempt: a deadline is final."""
    slow = Canned(200, json.dumps({"kind": "up_to_date", "error": "x"}).encode(), trickle_s=0.2)
    (peer.canned if name == "/updates" else peer.stats_canned).append(slow)
    device = make_device(exchange_timeout_s=1.0, response_timeout_s=5.0)
    device.launch()
    device.flush_stats(2)
    failed = [r for r in device.observer.requests if r[0] == name and r[3] is not None]
    assert len(failed) == 1 and "deadline" in str(failed[0][3])
    if name == "/updates":
        assert _failed_checks(device) == ["transport_error"]


def test_bounds_fire_only_on_what_they_bound() -> None:
    assert load_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert load_json(b'["' + b"[" * 1000 + b'"]') == ["[" * 1000]  # brackets inside a string
    assert load_json(b'["\\"[[[[", 1]') == ['"[[[[', 1]  # an escaped quote does not end it
    assert load_json(b"[" + b"[]," * 50_000 + b"[]]") is not None  # wide, not deep
    assert load_json('"caf\u00e9 \U0001f600"'.encode()) == "caf\u00e9 \U0001f600"
    for bad in (
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b'{"a": "\\ud800"}',
        b'{"\\udfff": 1}',
        b'"\xed\xa0\x80"',  # a surrogate encoded raw (json decodes with surrogatepass)
        b"\xff",
        b"1" * 5000,  # over Python's int digit limit: ValueError inside json
    ):
        with pytest.raises(ProtocolError):
            load_json(bad)
    with pytest.raises(ProtocolError):
        load_json(b"[]", max_bytes=1)
    assert label_problem("1.0.2-rc.1+build.7") is None and label_problem("") is not None
    assert url_problem("https://cdn.test:8443/a.zip?sig=x") is None
    for url in ("ftp://x/y", "https://", "http://a b/", "http://[::1", "x" * 9000):
        assert url_problem(url) is not None


def test_every_answer_parser_raises_only_protocol_errors() -> None:
    dialect = CapgoDialect()
    for status in (200, 400, 429, 500):
        try:
            dialect.parse_check(status, {}, DEEP, 0.0)
        except ProtocolError:
            assert status == 200
        assert dialect.parse_stats(status, {}, DEEP, 0.0) is not None
        try:
            dialect.parse_channel(status, DEEP)
        except ProtocolError:
            assert status == 200
        with pytest.raises(ProtocolError):
            dialect.parse_channel_list(status, DEEP)


def test_a_relabelled_signed_replay_is_refused_end_to_end(
    peer: CapgoPeer, make_device: Make, tmp_path: Path
) -> None:
    """The audit's item 1 over loopback with real signed, encrypted bundles: 1.0.1's genuine
    url, checksum (re-encoded in upper case) and session key labelled 999.0.0 are refused
    before anything is fetched; the floor stays 1.0.2 and a genuine 1.0.4 still gets in."""
    private_pem, public_pem = create_keys()

    def release(version: str) -> EncryptedBundle:
        zip_path = tmp_path / f"{version}.zip"
        zip_path.write_bytes(make_zip(version))
        bundle = encrypt_bundle(zip_path, private_pem, tmp_path / f"{version}.enc")
        peer.publish(
            version,
            bundle.path.read_bytes(),
            checksum=bundle.checksum,
            session_key=bundle.session_key,
        )
        return bundle

    device = make_device(public_key=public_pem.decode(), auto_update="always")
    device.launch()
    for version in ("1.0.1", "1.0.2"):
        bundle = release(version)
        if version == "1.0.1":
            old = bundle
        device.foreground()
        device.notify_app_ready()
        assert device.status().current.version == version
    peer.files["old"] = old.path.read_bytes()
    replay = {
        "version": "999.0.0",
        "url": f"{peer.url}/files/old",
        "checksum": old.checksum.upper(),
        "session_key": old.session_key,
    }
    peer.canned.append(canned_json(replay))
    device.foreground()
    status = device.status()
    assert status.current.version == "1.0.2" and status.highest_confirmed == "1.0.2"
    assert "/files/old" not in peer.paths()
    assert "relabelled_content" in _failed_checks(device)
    release("1.0.4")
    device.foreground()
    device.notify_app_ready()
    assert device.status().current.version == "1.0.4"
