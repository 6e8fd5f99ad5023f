"""Both drivers over real loopback HTTP against the scripted Capgo peer."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from capgo_peer import Canned, CapgoPeer, canned_json, make_zip
from device_harness import Driven

from simulator.release import build_manifest, create_keys, encrypt_bundle

Make = Callable[..., Driven]
UP_TO_DATE = {"error": "no_new_version_available", "kind": "up_to_date"}


def test_full_update_cycle(peer: CapgoPeer, make_device: Make) -> None:
    peer.publish("1.0.1")
    device = make_device()
    device.launch()
    device.notify_app_ready()
    status = device.status()
    assert status.next is not None and status.next.version == "1.0.1"
    device.background()
    status = device.status()
    assert status.current.version == "1.0.1" and not status.boot_confirmed
    assert status.highest_confirmed is None  # booted, not yet confirmed: no floor
    assert status.current.path is not None
    assert (status.current.path / "index.html").read_text() == "<html>1.0.1</html>"
    device.notify_app_ready(status.boot_id)
    assert device.status().fallback.version == "1.0.1"
    assert device.status().highest_confirmed == "1.0.1"
    assert device.flush_stats()
    actions = peer.actions()
    for expected in (
        "app_launch_start",
        "download_complete",
        "set_next",
        "set",
        "app_launch_ready",
    ):
        assert expected in actions
    assert ("bundle", "GET", 200, None) in device.observer.requests


def test_5xx_burst_is_retried_then_answered(peer: CapgoPeer, make_device: Make) -> None:
    peer.publish("1.0.1")
    peer.canned += [Canned(503), Canned(500)]
    device = make_device(transport_attempts=3)
    device.launch()
    statuses = [s for n, _, s, _ in device.observer.requests if n == "/updates"]
    assert statuses == [503, 500, 200]
    assert device.status().next is not None


def test_5xx_burst_longer_than_the_attempts_fails_the_check(
    peer: CapgoPeer, make_device: Make
) -> None:
    peer.publish("1.0.1")
    peer.canned += [Canned(502)] * 3
    device = make_device(transport_attempts=2)
    device.launch()
    assert "downloadFailed" in device.observer.names()
    assert ("download_fail", "1.0.0") in device.observer.stats
    assert device.status().next is None and device.status().current.version == "1.0.0"


def _reset_in_120_s() -> dict[str, object]:
    # Made when the test runs, not when tests are collected: a long run reaches the test
    # after a collection-time instant would already have passed.
    return {"error": "too_many_requests", "rateLimitResetAt": (time.time() + 120) * 1000}


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"retry-after": "120"}, lambda: {"error": "too_many_requests"}),
        ({}, lambda: {"error": "too_many_requests", "moreInfo": {"retryAfterSeconds": 120}}),
        ({}, lambda: {"error": "too_many_requests", "retryAfterSeconds": 120}),
        ({}, _reset_in_120_s),
    ],
)
def test_429_hint_silences_the_device(
    peer: CapgoPeer,
    make_device: Make,
    headers: dict[str, str],
    body: Callable[[], dict[str, object]],
) -> None:
    peer.canned.append(canned_json(body(), 429, **headers))
    device = make_device()
    device.launch()
    blocked = device.status().blocked_until
    assert blocked is not None
    sent = len(peer.requests)
    device.foreground()
    assert len(peer.requests) == sent
    assert ("rate_limit_reached", "1.0.0") in device.observer.stats


@pytest.mark.parametrize(
    "body", [b"", b"<html>oops</html>", b'{"version": 1}', b"[]", b'{"version":"1.0.1"}']
)
def test_malformed_answers_are_failed_checks(
    peer: CapgoPeer, make_device: Make, body: bytes
) -> None:
    peer.canned.append(Canned(200, body, {"content-type": "application/json"}))
    device = make_device()
    device.launch()
    result = [p for n, p in device.observer.events if n == "updateCheckResult"][-1]
    assert result["kind"] == "failed"
    assert device.status().current.version == "1.0.0"


def test_every_no_update_kind_leaves_the_device_alone(peer: CapgoPeer, make_device: Make) -> None:
    device = make_device(transport_attempts=1)
    answers = [
        (UP_TO_DATE, 200, "up_to_date"),
        (
            {"error": "already_on_builtin", "kind": "up_to_date", "version": "builtin"},
            200,
            "up_to_date",
        ),
        (
            {"error": "disable_device", "kind": "blocked", "version": "1.0.1", "old": "1.0.0"},
            200,
            "blocked",
        ),
        ({"error": "key_id_mismatch", "kind": "blocked", "deviceKeyId": "a"}, 200, "blocked"),
        ({"error": "no_channel", "kind": "failed"}, 200, "failed"),
        ({"error": "legacy_server_error"}, 200, "failed"),  # no kind: failed
        ({"error": "semver_error", "message": "bad"}, 400, "failed"),
        ({"error": "not_found"}, 404, "failed"),
        ({"error": "unknown_error"}, 500, "failed"),
    ]
    for body, status, _ in answers:
        peer.canned.append(canned_json(body, status))
        device.foreground()
    kinds = [p["kind"] for n, p in device.observer.events if n == "updateCheckResult"]
    assert kinds == [kind for _, _, kind in answers]
    assert peer.bundle_requests() == [] and device.status().current.id == "builtin"


def test_revert_to_builtin_through_the_driver(peer: CapgoPeer, make_device: Make) -> None:
    peer.publish("1.0.1")
    device = make_device(auto_update="always")
    device.launch()
    assert device.status().current.version == "1.0.1"
    peer.canned.append(canned_json({"version": "builtin"}))
    device.foreground()
    status = device.status()
    assert status.current.id == "builtin" and status.bundles == ()
    assert ("reset", "1.0.0") in device.observer.stats


def test_a_flipped_transfer_then_a_clean_one_the_release_lands(
    peer: CapgoPeer, make_device: Make
) -> None:
    release = peer.publish("1.0.1")
    flipped = bytearray(release.payload)
    flipped[len(flipped) // 2] ^= 1
    peer.bundle_canned.append(Canned(200, bytes(flipped)))  # one corrupted (MITM'd) transfer
    device = make_device(artefact_retry_backoff_s=0.05)
    device.launch()
    assert ("checksum_fail", "1.0.1") in device.observer.stats
    assert device.status().rejected_artefacts == (f"1.0.1:{release.checksum}",)
    time.sleep(0.1)  # the backoff passes; the server's file is (still) right
    device.foreground()
    status = device.status()
    assert len(peer.bundle_requests()) == 2 and status.rejected_artefacts == ()
    assert any(b.version == "1.0.1" and b.status == "pending" for b in status.bundles)
    device.background()
    assert device.status().current.version == "1.0.1"


def test_bad_checksum_is_held_back_within_its_backoff(peer: CapgoPeer, make_device: Make) -> None:
    peer.publish("1.0.1", checksum="0" * 64)
    device = make_device(transport_attempts=3)
    device.launch()
    assert ("checksum_fail", "1.0.1") in device.observer.stats
    assert len(peer.bundle_requests()) == 1
    device.foreground()
    assert len(peer.bundle_requests()) == 1
    status = device.status()
    assert status.rejected_artefacts == (f"1.0.1:{'0' * 64}",) and status.bundles == ()


def test_bundle_5xx_is_retried(peer: CapgoPeer, make_device: Make) -> None:
    peer.publish("1.0.1")
    peer.bundle_canned.append(Canned(503))
    device = make_device()
    device.launch()
    assert len(peer.bundle_requests()) == 2
    assert device.status().next is not None


def test_oversized_bundle_is_refused(peer: CapgoPeer, make_device: Make) -> None:
    peer.publish("1.0.1", make_zip("1.0.1", {"big.bin": os.urandom(200_000)}))
    device = make_device(max_bundle_bytes=100_000)
    device.launch()
    assert ("download_fail", "1.0.1") in device.observer.stats
    assert device.status().next is None and len(peer.bundle_requests()) == 1


def test_download_deadline_is_real_time_not_the_device_clock(
    peer: CapgoPeer, make_device: Make
) -> None:
    """~0.1 s of real transfer is ~17 min on a clock running 10 000x (as a simulated fleet's):
    the download deadline is a network timeout, so the download completes."""
    peer.publish("1.0.1", make_zip("1.0.1", {"big.bin": os.urandom(80_000)}))
    peer.slow_bundle_s = 0.02
    device = make_device(time_scale=10_000.0, download_timeout_s=30.0)
    device.launch()
    status = device.status()
    assert status.next is not None and status.next.version == "1.0.1"
    assert "downloadFailed" not in device.observer.names()


def test_download_past_its_real_deadline_stops_and_resumes_later(
    peer: CapgoPeer, make_device: Make
) -> None:
    """On a device clock that barely moves, a download slower than download_timeout_s of
    real time still stops; its partial stays and the next check resumes it."""
    peer.publish("1.0.1", make_zip("1.0.1", {"big.bin": os.urandom(400_000)}))
    peer.slow_bundle_s = 0.02  # ~25 chunks: ~0.5 s
    device = make_device(time_scale=0.001, download_timeout_s=0.15)
    device.launch()
    assert device.status().next is None
    assert "downloadFailed" in device.observer.names()
    assert ("download_fail", "1.0.1") in device.observer.stats
    assert len(peer.bundle_requests()) == 1  # a passed deadline is not retried at once
    assert next((device.folder / "downloads").glob("*.part")).stat().st_size > 0
    peer.slow_bundle_s = 0.0
    device.foreground()
    assert device.status().next is not None
    assert peer.bundle_requests()[-1]["range"].startswith("bytes=")


class Killed(BaseException):
    pass


@pytest.mark.parametrize("server_ranges", [True, False])
def test_download_killed_midway_resumes_with_range(
    peer: CapgoPeer, make_device: Make, server_ranges: bool
) -> None:
    peer.publish("1.0.1", make_zip("1.0.1", {"big.bin": os.urandom(400_000)}))
    device = make_device()

    def die_at_20_percent(name: str, payload: dict[str, object]) -> None:
        device.observer.events.append((name, payload))
        if name == "download" and int(str(payload["percent"])) >= 20:
            raise Killed

    device.observer.on_event = die_at_20_percent  # type: ignore[method-assign]
    with pytest.raises(Killed):
        device.launch()
    part = next((device.folder / "downloads").glob("*.part"))
    assert part.stat().st_size > 0
    del device.observer.on_event
    peer.ignore_range = not server_ranges  # a server without Range support: start over
    device.reopen()
    device.launch()
    assert device.status().next is not None
    first, second = peer.bundle_requests()
    assert "range" not in first and second["range"].startswith("bytes=")
    assert int(second["range"].removeprefix("bytes=").rstrip("-")) > 0


def test_encrypted_signed_bundle_with_the_app_key(
    peer: CapgoPeer, make_device: Make, tmp_path: Path
) -> None:
    private_pem, public_pem = create_keys()
    zip_path = tmp_path / "b.zip"
    zip_path.write_bytes(make_zip("2.0.0"))
    bundle = encrypt_bundle(zip_path, private_pem, tmp_path / "b.enc")
    peer.publish(
        "2.0.0", bundle.path.read_bytes(), checksum=bundle.checksum, session_key=bundle.session_key
    )
    device = make_device(public_key=public_pem.decode(), auto_update="always")
    device.launch()
    status = device.status()
    assert status.current.version == "2.0.0"
    assert status.current.path is not None
    assert (status.current.path / "index.html").read_text() == "<html>2.0.0</html>"
    sent = next(b for m, p, b in peer.requests if p == "/updates")
    assert sent["key_id"] == bundle.key_id


def test_tampered_encrypted_bundle_is_refused(
    peer: CapgoPeer, make_device: Make, tmp_path: Path
) -> None:
    private_pem, public_pem = create_keys()
    zip_path = tmp_path / "b.zip"
    zip_path.write_bytes(make_zip("2.0.0"))
    bundle = encrypt_bundle(zip_path, private_pem, tmp_path / "b.enc")
    tampered = bytearray(bundle.path.read_bytes())
    tampered[40] ^= 1
    peer.publish("2.0.0", bytes(tampered), checksum=bundle.checksum, session_key=bundle.session_key)
    device = make_device(public_key=public_pem.decode(), auto_update="always")
    device.launch()
    assert device.status().current.version == "1.0.0"
    assert {"checksum_fail", "decrypt_fail"} & {a for a, _ in device.observer.stats}
    unsigned = make_device(public_key=public_pem.decode())
    peer.publish("2.0.1")  # plain zip, plain checksum: refused when the app has a key
    unsigned.launch()
    assert ("checksum_required", "2.0.1") in unsigned.observer.stats


def test_channel_self_set_is_stored_and_sent_as_default_channel(
    peer: CapgoPeer, make_device: Make
) -> None:
    device = make_device()
    answer = device.set_channel("beta")
    assert answer.allowed and device.status().channel == "beta"
    device.foreground()
    check = [b for m, p, b in peer.requests if p == "/updates"][-1]
    assert check["defaultChannel"] == "beta"
    peer.canned.append(canned_json({"error": "channel_not_found", "message": "no"}))
    refused = device.set_channel("nope")
    assert not refused.allowed and device.status().channel == "beta"
    assert device.get_channel().channel == "beta"
    peer.channels.append({"id": 1, "name": "beta", "public": False, "allow_self_set": True})
    assert [c.name for c in device.list_channels()] == ["beta"]
    peer.canned.append(canned_json({"error": "channel_self_set_not_allowed", "message": "no"}))
    assert not device.set_channel("private").allowed
    assert ("channelPrivate", {"channel": "private", "message": "no"}) in device.observer.events
    device.unset_channel()
    assert device.status().channel is None


def test_stats_5xx_are_requeued_and_sent_later(peer: CapgoPeer, make_device: Make) -> None:
    peer.stats_canned += [Canned(503)] * 3
    device = make_device(transport_attempts=1)
    device.launch()
    assert peer.stats == []
    assert device.status().pending_stats > 0
    device.reopen()  # the queue survives a restart
    assert device.status().pending_stats > 0


def delta_offer(
    peer: CapgoPeer, tmp_path: Path, private_pem: bytes | None, version: str = "3.0.0"
) -> dict[str, object]:
    """Publish `version` as a delta bundle on the peer (files served at /files/<version>-<n>)."""
    dist = tmp_path / f"dist-{version}"
    (dist / "js").mkdir(parents=True)
    (dist / "index.html").write_text(f"<html>{version}</html>")
    (dist / "js" / "app.js").write_text("console.log('delta');" * 2000)  # brotli-compressed
    manifest = build_manifest(dist, tmp_path / f"delta-{version}", private_pem)
    entries = []
    for n, delta_file in enumerate(manifest.files):
        peer.files[f"{version}-{n}"] = delta_file.path.read_bytes()
        entries.append(
            {
                "file_name": delta_file.file_name,
                "file_hash": delta_file.file_hash,
                "download_url": f"{peer.url}/files/{version}-{n}",
            }
        )
    return {
        "version": version,
        "url": "https://404.capgo.app/no.zip",
        "checksum": "",
        "session_key": manifest.session_key,
        "manifest": entries,
    }


def test_delta_fetches_only_the_files_the_device_lacks(
    peer: CapgoPeer, make_device: Make, tmp_path: Path
) -> None:
    peer.canned.append(canned_json(delta_offer(peer, tmp_path, None, "3.0.0")))
    device = make_device(auto_update="always")
    device.launch()
    device.notify_app_ready()
    first = [p for _, p, _ in peer.requests if p.startswith("/files/")]
    peer.canned.append(canned_json(delta_offer(peer, tmp_path, None, "3.0.1")))
    device.foreground()
    status = device.status()
    assert status.current.version == "3.0.1" and status.current.path is not None
    assert (status.current.path / "js" / "app.js").read_text() == "console.log('delta');" * 2000
    assert (status.current.path / "index.html").read_text() == "<html>3.0.1</html>"
    fetched = [p for _, p, _ in peer.requests if p.startswith("/files/")][len(first) :]
    assert len(first) == 2 and len(fetched) == 1  # app.js came from the 3.0.0 bundle


@pytest.mark.parametrize("signed", [False, True])
def test_delta_bundle_from_a_manifest(
    peer: CapgoPeer, make_device: Make, tmp_path: Path, signed: bool
) -> None:
    private_pem, public_pem = create_keys() if signed else (None, b"")
    offer = delta_offer(peer, tmp_path, private_pem)
    assert any(str(e["file_name"]).endswith(".br") for e in offer["manifest"])  # type: ignore[attr-defined]
    peer.canned.append(canned_json(offer))
    device = make_device(auto_update="always", public_key=public_pem.decode() or None)
    device.launch()
    status = device.status()
    assert status.current.version == "3.0.0" and status.current.path is not None
    assert (status.current.path / "js" / "app.js").read_text() == "console.log('delta');" * 2000
    assert ("download_manifest_complete", "3.0.0") in device.observer.stats
    assert {r[0] for r in device.observer.requests} >= {"delta file"}


def test_delta_file_with_a_wrong_hash_is_refused(
    peer: CapgoPeer, make_device: Make, tmp_path: Path
) -> None:
    offer = delta_offer(peer, tmp_path, None)
    peer.files["3.0.0-0"] = b"tampered"
    peer.canned.append(canned_json(offer))
    device = make_device(auto_update="always")
    device.launch()
    assert device.status().current.version == "1.0.0"
    assert ("download_manifest_checksum_fail", "3.0.0") in device.observer.stats
    assert not any((device.folder / "staging").iterdir())


def test_both_drivers_offer_the_same_api() -> None:
    from agent.drivers.aio import AsyncDevice
    from agent.drivers.sync import SyncDevice

    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert public(AsyncDevice) - {"aclose"} == public(SyncDevice) - {"close"}
    assert {
        "open",
        "launch",
        "notify_app_ready",
        "foreground",
        "background",
        "kill",
        "run_timers",
        "next_deadline",
        "status",
        "flush_stats",
    } <= public(AsyncDevice)
