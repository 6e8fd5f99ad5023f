"""Slow retrieval: a body trickling in below `min_download_bytes_per_s` over `stall_window_s`
stops long before the download deadline; the partial stays and a healthy network resumes it."""

from __future__ import annotations

import time
from collections.abc import Callable

from capgo_peer import Canned, CapgoPeer, make_zip
from device_harness import Driven

Make = Callable[..., Driven]


def test_a_trickling_bundle_stops_at_the_stall_window(peer: CapgoPeer, make_device: Make) -> None:
    release = peer.publish("1.0.1", make_zip("1.0.1", {"app.js": b"x" * 5000}))
    headers = {"content-length": str(len(release.payload))}
    peer.bundle_canned.append(Canned(200, release.payload, headers, trickle_s=0.02))  # 50 B/s
    device = make_device(min_download_bytes_per_s=1024, stall_window_s=0.5)
    started = time.monotonic()
    device.launch()
    assert time.monotonic() - started < 5  # download_timeout_s is 600 s
    assert device.status().next is None
    assert ("download_fail", "1.0.1") in device.observer.stats
    failures = [p for n, p in device.observer.events if n == "downloadFailed"]
    assert any("stalled" in str(p) for p in failures), failures
    device.foreground()  # the network is healthy again
    assert device.status().next is not None


def test_the_rate_check_can_be_turned_off(peer: CapgoPeer, make_device: Make) -> None:
    release = peer.publish("1.0.1")
    headers = {"content-length": str(len(release.payload))}
    peer.bundle_canned.append(Canned(200, release.payload, headers, trickle_s=0.005))
    device = make_device(min_download_bytes_per_s=10**9, stall_window_s=0)
    device.launch()
    assert device.status().next is not None
