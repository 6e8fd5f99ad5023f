"""The app model's decisions (`simulator.app`), without a driver: boots, slow starts, the user's
durations and their scale, and the fleet draw that `plan_fleet` and the Locust users share."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from simulator.app import AppUser, BundleTraits, draw_device, make_dist, pick, read_traits
from simulator.fleet import plan_fleet
from simulator.scenario import Behaviour, Release, load_scenario

BEHAVIOUR = Behaviour(sessions_per_day=8, session_min=4, kill_share=0.3, reboots_per_day=1)


def test_a_crashing_bundle_kills_the_app_and_the_user_comes_back_minutes_later() -> None:
    app = AppUser(BEHAVIOUR, random.Random(1))
    boot = app.boot(BundleTraits(loads=True, crash_p=1.0), 3, "2.0.0", 100.0, 100.0)
    assert boot.kind == "crashed" and 160.0 <= boot.at <= 1000.0
    assert app.ready is None
    scaled = AppUser(BEHAVIOUR, random.Random(1), scale=0.01)
    assert scaled.boot(BundleTraits(True, 1.0), 3, "2.0.0", 100.0, 100.0).at == pytest.approx(
        100.0 + (boot.at - 100.0) * 0.01
    )


def test_blank_ready_and_slow_starts() -> None:
    app = AppUser(BEHAVIOUR, random.Random(1))
    assert app.boot(BundleTraits(loads=False, crash_p=0.0), 1, "v", 0.0, 0.0).kind == "blank"
    assert app.boot(BundleTraits(True, 0.0), 2, "v", 0.0, 5.0).kind == "ready"
    assert app.ready is None and app.ready_at() == float("inf")
    slow = app.boot(BundleTraits(True, 0.0, start_s=12.0), 3, "v", 10.0, 11.0)
    assert (slow.kind, slow.at) == ("starting", 22.0) and app.ready_at() == 22.0
    pending = app.ready
    assert not app.take_ready(pending, 21.9)  # not yet
    assert app.take_ready(pending, 22.0) and not app.take_ready(pending, 23.0)  # once


def test_a_slow_start_is_dropped_when_the_app_dies_or_boots_again() -> None:
    app = AppUser(BEHAVIOUR, random.Random(1))
    app.boot(BundleTraits(True, 0.0, start_s=5.0), 1, "v", 0.0, 0.0)
    pending = app.ready
    app.died()
    assert not app.take_ready(pending, 10.0)
    app.boot(BundleTraits(True, 0.0, start_s=5.0), 2, "v", 0.0, 0.0)
    pending = app.ready
    app.boot(BundleTraits(True, 0.0, start_s=5.0), 3, "w", 1.0, 1.0)  # a rollback's reboot
    assert not app.take_ready(pending, 10.0) and app.ready is not None


def test_the_scale_compresses_the_users_durations_draw_for_draw() -> None:
    day, fast = AppUser(BEHAVIOUR, random.Random(7)), AppUser(BEHAVIOUR, random.Random(7), 0.001)
    for _ in range(20):
        assert fast.session_end(0.0) == pytest.approx(day.session_end(0.0) * 0.001)
        assert fast.gap() == pytest.approx(day.gap() * 0.001)
        assert fast.next_reboot(0.0) == pytest.approx(day.next_reboot(0.0) * 0.001)
        assert fast.leave_kills() == day.leave_kills()
    never = AppUser(Behaviour(reboots_per_day=0), random.Random(7))
    assert never.next_reboot(0.0) == float("inf")
    instant = AppUser(BEHAVIOUR, random.Random(7), scale=0.0)  # Locust's --session-s 0
    assert instant.session_end(5.0) == 5.0 and instant.gap() == 0.0


def test_kill_share_decides_how_sessions_end() -> None:
    app = AppUser(BEHAVIOUR, random.Random(3))
    kills = sum(app.leave_kills() for _ in range(4000)) / 4000
    assert 0.27 < kills < 0.33
    assert not any(AppUser(Behaviour(kill_share=0), random.Random(3)).leave_kills()
                   for _ in range(100))  # fmt: skip


FLEET = """
[[fleet]]
platform = {ios = 1, android = 2}
os = ["17.2", "14"]
native_version = ["1.0.0", "1.1.0"]
channel = ["production", "beta"]
network = ["wifi", "3g"]
"""


def test_the_fleet_plan_draws_identities_as_draw_device_does(tmp_path: Path) -> None:
    """plan_fleet draws each device's identity with draw_device, then its own attributes."""
    path = tmp_path / "fleet.toml"
    path.write_text(FLEET)
    scenario = load_scenario(str(path))
    (group,) = scenario.groups
    rng = random.Random(11)
    for spec in plan_fleet(scenario, 5, 11):
        drawn = draw_device(group, rng)
        assert (spec.device_id, spec.platform, spec.os, spec.native_version, spec.channel) == (
            drawn.device_id, drawn.platform, drawn.os, drawn.native_version, drawn.channel,
        )  # fmt: skip
        assert spec.network == pick(group.network, rng)
        assert spec.behaviour == pick(group.behaviour, rng)
        assert spec.seed == rng.getrandbits(48)


def test_traits_come_from_the_bundle_files(tmp_path: Path) -> None:
    slow = make_dist(Release("1.0.2", 1, start_s=12.5), tmp_path / "s", seed=1)
    assert read_traits(slow, "ios") == BundleTraits(loads=True, crash_p=0.0, start_s=12.5)


def test_only_the_last_reload_that_is_still_current_is_settled() -> None:
    app = AppUser(BEHAVIOUR, random.Random(1))
    assert app.boot_to_settle(1, "b1") is None  # nothing reloaded
    app.reloaded(1, "builtin", 0.0)
    app.reloaded(2, "b1", 5.0)
    assert app.boot_to_settle(2, "b1") == (2, 5.0) and app.boot_to_settle(2, "b1") is None
    app.reloaded(3, "b2", 9.0)
    assert app.boot_to_settle(4, "builtin") is None  # rolled back meanwhile: not that boot
    app.reloaded(5, "b3", 12.0)
    app.died()
    assert app.boot_to_settle(5, "b3") is None
