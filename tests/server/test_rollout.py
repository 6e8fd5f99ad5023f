"""Staged rollouts: the sticky draw, proportions, pause/resume/complete, auto-pause, rollback."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.server.client import AdminClient, AdminError
from simulator.server.model import Channel
from simulator.server.rollout import draw_bps, percent_to_bps, should_auto_pause, target_version

from .conftest import add_bundle, device

IDS = [str(uuid.UUID(int=i * 7919 + 13, version=4)) for i in range(10_000)]


def rollout_channel(bps: int, paused: bool = False) -> Channel:
    return Channel(1, "com.example.app", "production", version="1.0.0", rollout_version="1.1.0",
                   rollout_bps=bps, rollout_paused=paused)  # fmt: skip


def test_a_quarter_of_ten_thousand_devices_within_two_points() -> None:
    channel = rollout_channel(2500)
    share = sum(target_version(channel, d, "1.0.0") == "1.1.0" for d in IDS) / len(IDS)
    assert 0.23 <= share <= 0.27


@given(st.uuids(), st.integers(0, 10_000), st.integers(0, 10_000))
def test_draw_is_sticky_and_raising_the_percentage_only_adds(
    device_id: uuid.UUID, a: int, b: int
) -> None:
    low, high = sorted((a, b))
    ident = str(device_id)
    assert draw_bps("app", "ch", "1.1.0", ident) == draw_bps("app", "ch", "1.1.0", ident)
    if target_version(rollout_channel(low), ident, "1.0.0") == "1.1.0":
        assert target_version(rollout_channel(high), ident, "1.0.0") == "1.1.0"


def test_each_rollout_version_samples_afresh() -> None:
    first = {d for d in IDS[:2000] if draw_bps("a", "c", "1.1.0", d) < 5000}
    second = {d for d in IDS[:2000] if draw_bps("a", "c", "1.2.0", d) < 5000}
    assert 0.4 < len(first & second) / len(first) < 0.6


def test_paused_rollout_keeps_adopters_and_reaches_nobody_new() -> None:
    paused = rollout_channel(10_000, paused=True)
    assert target_version(paused, IDS[0], "1.1.0") == "1.1.0"
    assert target_version(paused, IDS[0], "1.0.0") == "1.0.0"


@pytest.mark.parametrize("percent", [-1, 100.5, float("nan")])
def test_percent_outside_range_is_refused(percent: float) -> None:
    with pytest.raises(ValueError):
        percent_to_bps(percent)


def test_auto_pause_rule() -> None:
    channel = Channel(1, "a", "c", rollout_version="1.1.0", rollout_bps=5000,
                      auto_pause_fail_ratio=0.2, auto_pause_min_samples=10)  # fmt: skip
    assert not should_auto_pause(channel, installs=5, fails=4)  # too few samples
    assert not should_auto_pause(channel, installs=40, fails=10)  # exactly 20 %
    assert should_auto_pause(channel, installs=30, fails=10)


def offered(http: httpx.Client, body: dict[str, Any]) -> str | None:
    answer = http.post("/updates", json=body).json()
    return answer.get("version") if "error" not in answer else None


@pytest.fixture
def rolling(admin: AdminClient, app_id: str, tmp_path: Path) -> str:
    for version in ("1.0.1", "1.0.2"):
        add_bundle(admin, app_id, version, tmp_path)
    admin.set_channel(app_id, "production", version="1.0.1", public=True)
    return app_id


def test_rollout_over_http(http: httpx.Client, admin: AdminClient, rolling: str) -> None:
    channel = admin.set_rollout(rolling, "production", "1.0.2", 30)
    assert (channel["rollout_version"], channel["rollout_bps"]) == ("1.0.2", 3000)
    bodies = [device(rolling, device_id=d) for d in IDS[:400]]
    first = [offered(http, b) for b in bodies]
    share = first.count("1.0.2") / len(first)
    assert 0.22 <= share <= 0.38
    assert set(first) == {"1.0.1", "1.0.2"}
    assert [offered(http, b) for b in bodies[:50]] == first[:50]  # sticky over HTTP
    adopter = next(b for b, v in zip(bodies, first, strict=True) if v == "1.0.2")
    admin.pause_rollout(rolling, "production")
    assert all(offered(http, b) == "1.0.1" for b in bodies[:50])
    assert offered(http, {**adopter, "version_name": "1.0.2"}) is None  # stays, not pushed back
    admin.resume_rollout(rolling, "production")
    assert [offered(http, b) for b in bodies[:50]] == first[:50]
    done = admin.complete_rollout(rolling, "production")
    assert (done["version"], done["rollout_version"]) == ("1.0.2", None)
    assert {offered(http, b) for b in bodies[:50]} == {"1.0.2"}


def test_rollout_actions_need_a_rollout_and_known_versions(
    admin: AdminClient, rolling: str
) -> None:
    with pytest.raises(AdminError) as no_rollout:
        admin.pause_rollout(rolling, "production")
    assert (no_rollout.value.status, no_rollout.value.error) == (409, "no_rollout")
    with pytest.raises(AdminError) as missing:
        admin.set_rollout(rolling, "production", "9.9.9", 10)
    assert missing.value.error == "bundle_not_found"
    with pytest.raises(AdminError) as bad:
        admin.set_rollout(rolling, "production", "1.0.2", 101)
    assert bad.value.status == 400


def _pausing_rollout(admin: AdminClient, app: str) -> list[dict[str, Any]]:
    """A full rollout of 1.0.2 that pauses at a 25 % failure ratio over 8 events, and 8 events
    of which the last makes the ratio pass (5 set, 3 update_fail)."""
    admin.set_rollout(app, "production", "1.0.2", 100, auto_pause_fail_ratio=0.25,
                      auto_pause_min_samples=8)  # fmt: skip
    events = [device(app, version_name="1.0.2", action="set") for _ in range(5)]
    return events + [device(app, version_name="1.0.2", action="update_fail") for _ in range(3)]


def test_auto_pause_from_device_failure_stats(
    http: httpx.Client, admin: AdminClient, rolling: str
) -> None:
    events = _pausing_rollout(admin, rolling)
    assert http.post("/stats", json=events).json()["status"] == "ok"
    channel = admin.app(rolling)["channels"][0]
    assert channel["rollout_paused"] is True
    assert any(a["action"] == "rollout.auto_pause" for a in admin.audit())
    assert offered(http, device(rolling)) == "1.0.1"


def test_auto_pause_at_the_stats_event_that_passes_the_threshold(
    http: httpx.Client, admin: AdminClient, rolling: str
) -> None:
    # Stats are written behind, except for an app with a rollout that can pause itself:
    # the event that makes the ratio pass pauses the rollout before its answer.
    events = _pausing_rollout(admin, rolling)
    for event in events[:-1]:
        assert http.post("/stats", json=event).json() == {"status": "ok"}
        assert admin.app(rolling)["channels"][0]["rollout_paused"] is False
    assert http.post("/stats", json=events[-1]).json() == {"status": "ok"}
    assert admin.app(rolling)["channels"][0]["rollout_paused"] is True


def test_rollback_to_an_earlier_bundle_and_to_builtin(
    http: httpx.Client, admin: AdminClient, rolling: str
) -> None:
    admin.set_channel(
        rolling, "production", version="1.0.2", disable_auto_update_under_native=False
    )
    on_new = device(rolling, version_name="1.0.2")
    assert offered(http, on_new) is None
    admin.set_rollout(rolling, "production", "1.0.2", 50)
    rolled = admin.rollback(rolling, "production", "1.0.1")
    assert (rolled["version"], rolled["rollout_version"]) == ("1.0.1", None)
    assert offered(http, on_new) == "1.0.1"
    admin.rollback(rolling, "production", "builtin")
    answer = http.post("/updates", json=on_new).json()
    assert (answer["error"], answer["version"]) == ("already_on_builtin", "builtin")
    with pytest.raises(AdminError) as missing:
        admin.rollback(rolling, "production", "0.0.9")
    assert missing.value.status == 404
