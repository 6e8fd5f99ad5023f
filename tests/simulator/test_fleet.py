"""Fleet planning, the bundle pool and what the simulated app reads from a bundle."""

from __future__ import annotations

import os
from pathlib import Path

from simulator.app import make_dist, read_traits
from simulator.clock import VirtualTime
from simulator.device import BundlePool, file_digests
from simulator.fleet import Fleet, apportion, plan_fleet
from simulator.metrics import NO_VERSIONS
from simulator.scenario import Release, load_scenario


def test_apportion_adds_up_exactly() -> None:
    assert apportion([0.6, 0.4], 50) == [30, 20]
    assert apportion([1, 1, 1], 10) == [4, 3, 3]
    assert sum(apportion([0.55, 0.45], 7)) == 7


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    scenario = load_scenario("steady-rollout")
    first, again, other = (plan_fleet(scenario, 200, s) for s in (1, 1, 2))
    assert first == again and first != other
    assert sum(s.platform == "android" for s in first) == 120  # the 60 % group, exactly
    assert len({s.device_id for s in first}) == 200


def test_mitm_modes_go_only_to_the_groups_behind_it() -> None:
    specs = plan_fleet(load_scenario("mitm-tamper"), 100, 4)
    behind = [s for s in specs if s.mitm]
    assert len(behind) == 50 and {s.mitm for s in behind} == {"flip", "swap", "replay"}


def test_a_fleet_device_holds_no_instance_dicts_nor_empty_sets_of_its_own(tmp_path: Path) -> None:
    scenario = load_scenario("steady-rollout")
    fleet = Fleet(
        scenario, plan_fleet(scenario, 12, 1), configs={}, http=None,  # type: ignore[arg-type]
        time=VirtualTime(), workdir=tmp_path, published={},
    )  # fmt: skip
    device = fleet.devices[11]
    assert device.folder == tmp_path / "devices" / "000011"  # named from its index
    for held in (device, device.app, device.http):  # one of each per device, idle or not
        assert not hasattr(held, "__dict__"), type(held).__name__
    outcome, other = device.outcome, fleet.devices[0].outcome
    assert outcome.booted is outcome.confirmed is outcome.unchecked is NO_VERSIONS
    fleet.metrics.ran(outcome, "1.0.1", 5.0, confirmed=True)
    assert outcome.booted == outcome.confirmed == {"1.0.1"}
    assert other.booted is other.confirmed is NO_VERSIONS and not NO_VERSIONS  # still empty


def test_pool_hard_links_identical_files_only(tmp_path: Path) -> None:
    release = Release("1.0.1", size_kb=64)
    a = make_dist(release, tmp_path / "a", seed=1)
    b = make_dist(release, tmp_path / "b", seed=1)
    (b / "extra.txt").write_text("only in b")
    pool = BundlePool(tmp_path / "pool")
    pool.share(a, file_digests(a))
    pool.share(b, file_digests(b))
    assert os.stat(a / "app.js").st_ino == os.stat(b / "app.js").st_ino
    assert os.stat(a / "app.js").st_nlink == 3  # a, b and the pool
    assert (b / "app.js").read_bytes() == (a / "app.js").read_bytes()
    assert os.stat(b / "extra.txt").st_nlink == 2  # b and the pool, nobody else
    assert pool.linked == 3  # index.html, app.js and the behaviour file of b


def test_traits_come_from_the_unpacked_bundle(tmp_path: Path) -> None:
    crashing = make_dist(Release("2.0.0", 1, (("android", 1.0),)), tmp_path / "c", seed=1)
    blank = make_dist(Release("2.0.1", 1, boots=False), tmp_path / "b", seed=1)
    assert read_traits(crashing, "android").crash_p == 1.0
    assert read_traits(crashing, "ios").crash_p == 0.0 and read_traits(crashing, "ios").loads
    assert not read_traits(blank, "ios").loads
    (crashing / "otasim-behaviour.json").write_text("{not json")
    assert read_traits(crashing, "android").crash_p == 0.0  # unreadable file: boots fine


def test_the_progress_line_says_what_the_end_of_a_run_waits_for() -> None:
    from simulator.shards import _Tally

    shards = [_Tally({"1.0.1": 6}, 50, 1, 1, 6), _Tally({"1.0.1": 3, "builtin": 1}, 9, 0, 0, 1)]
    total = _Tally.total(shards)
    assert total.line() == "1.0.1 90% builtin 10% · 59 req · devices: 1 failed, 1 rolled back"
    assert total.ending().startswith("end of the scenario: waiting for 3 of 10 devices")
