"""Anti-rollback: an offer older than a version this device confirmed is never installed."""

from __future__ import annotations

import json

import pytest
from core_harness import Harness, answer, config, offer

from agent.core.events import AppReady, AppStarted, MovedToBackground, MovedToForeground
from agent.core.lifecycle import BUILTIN, from_json, to_json
from agent.core.versions import is_downgrade, raise_floor


def confirmed(*versions: str, **overrides: object) -> Harness:
    """A device that installed, booted and confirmed each of `versions` in turn (atBackground)."""
    h = Harness(config=config(**overrides))
    h.run(AppStarted())
    h.run(AppReady())
    for version in versions:
        h.updates.append(offer(version))
        h.run(MovedToForeground())
        h.run(MovedToBackground())
        h.run(AppReady(h.reloads[-1].boot_id))
        assert h.current_version() == version
    return h


def offer_again(h: Harness, version: str, checksum: str | None = None) -> None:
    h.updates.append(offer(version, checksum))
    h.run(MovedToForeground())
    h.run(MovedToBackground())


@pytest.mark.parametrize(
    ("floor", "confirmed_version", "expected"),
    [
        (None, "1.0.1", "1.0.1"),
        ("1.0.2", "1.0.1", "1.0.2"),
        ("1.0.2", "1.0.10", "1.0.10"),  # numeric, not lexical
        ("1.0.2-rc.1", "1.0.2", "1.0.2"),  # a release is newer than its pre-release
        ("1.0.2", "not-semver", "1.0.2"),  # never raises the floor
        (None, "not-semver", None),
    ],
)
def test_floor_is_the_highest_semver_confirmed(
    floor: str | None, confirmed_version: str, expected: str | None
) -> None:
    assert raise_floor(floor, confirmed_version) == expected


@pytest.mark.parametrize(
    ("version", "floor", "expected"),
    [
        ("1.0.1", "1.0.2", True),
        ("1.0.2", "1.0.2", False),
        ("1.0.10", "1.0.9", False),
        ("1.0.2-rc.1", "1.0.2", True),
        ("1.0.2+build.7", "1.0.2", False),  # build metadata does not order versions
        ("v1.0.3", "1.0.2", True),  # cannot be compared: refused
    ],
)
def test_is_downgrade(version: str, floor: str, expected: bool) -> None:
    assert is_downgrade(version, floor) is expected


def test_older_offer_is_refused_reported_and_never_fetched() -> None:
    h = confirmed("1.0.1", "1.0.2")
    downloads = len(h.sent)
    offer_again(h, "1.0.1", checksum="f" * 64)
    assert h.current_version() == "1.0.2" and h.agent.state.next is None
    assert not any(r.url.endswith("1.0.1.zip") for r in h.sent[downloads:])
    checks = [p for n, p in h.emitted if n == "updateCheckResult"]
    assert checks[-1]["kind"] == "failed" and checks[-1]["error"] == "downgrade_refused"
    assert checks[-1]["version"] == "1.0.1"
    assert ("download_fail", "1.0.1") in h.reported
    posted = [e for r in h.sent if r.name == "/stats" for e in json.loads(r.body or b"[]")]
    metadata = [e.get("metadata") for e in posted if e["action"] == "download_fail"]
    metadata += [dict(e.metadata) for e in h.agent.pending_stats if e.action == "download_fail"]
    assert metadata == [{"reason": "downgrade_refused", "highest_confirmed": "1.0.2"}]
    # the same offer again: refused quietly (reported once per run), still never fetched
    reported, emitted = h.actions().count("download_fail"), len(h.emitted)
    offer_again(h, "1.0.1", checksum="f" * 64)
    assert h.actions().count("download_fail") == reported
    assert [n for n, _ in h.emitted[emitted:]] == ["noNeedUpdate"]
    assert h.current_version() == "1.0.2"


def test_a_bundle_still_on_disk_is_not_reactivated_either() -> None:
    h = confirmed("1.0.1", "1.0.2", auto_delete_previous=False)
    assert any(b.version == "1.0.1" for b in h.agent.state.bundles.values())
    offer_again(h, "1.0.1")
    assert h.current_version() == "1.0.2"


def test_allow_downgrade_installs_the_older_offer_as_the_plugin_does() -> None:
    h = confirmed("1.0.1", "1.0.2", allow_downgrade=True)
    offer_again(h, "1.0.1", checksum="f" * 64)
    assert h.current_version() == "1.0.1"
    assert "downgrade_refused" not in json.dumps(h.emitted)


def test_revert_to_builtin_stays_allowed() -> None:
    h = confirmed("1.0.2")
    h.updates.append(answer({"version": "builtin"}))
    h.run(MovedToForeground())
    assert h.agent.state.current == BUILTIN
    assert h.agent.state.highest_confirmed == "1.0.2"  # builtin does not lower the floor


def test_unconfirmed_versions_do_not_raise_the_floor() -> None:
    """A device that rolled back locally (1.0.2 never confirmed) still takes 1.0.1 back, and a
    device that never went past the target is not affected: the server's rollback works."""
    h = confirmed("1.0.1")
    offer_again(h, "1.0.2")  # boots 1.0.2, which never confirms
    h.now += h.config.app_ready_timeout_s + 1
    h.tick(0)
    assert h.current_version() == "1.0.1" and h.agent.state.highest_confirmed == "1.0.1"
    h2 = confirmed("1.0.0-beta.1")
    offer_again(h2, "1.0.1")
    assert h2.current_version() == "1.0.1"


def test_a_non_semver_offer_is_refused_once_a_floor_exists() -> None:
    h = confirmed("1.0.2")
    offer_again(h, "nightly-42")
    assert h.current_version() == "1.0.2"
    fresh = confirmed("nightly-41")  # no semver floor: nothing to compare with, installed
    assert fresh.agent.state.highest_confirmed is None


def test_floor_survives_a_restart_and_old_state_files_load() -> None:
    h = confirmed("1.0.2")
    h.restart()
    assert h.agent.state.highest_confirmed == "1.0.2"
    offer_again(h, "1.0.1")
    assert h.current_version() == "1.0.2"
    data = to_json(h.agent.state)
    del data["highest_confirmed"]  # a state written before the floor existed
    assert from_json(data).highest_confirmed is None


def test_an_older_bundle_queued_before_the_confirmation_is_dropped() -> None:
    h = Harness(config=config())
    h.updates.append(offer("1.0.2"))
    h.run(AppStarted())  # 1.0.2 downloaded and queued
    h.run(MovedToBackground())  # 1.0.2 boots, not confirmed yet: no floor
    h.updates.append(offer("1.0.1"))
    h.run(MovedToForeground())  # 1.0.1 downloaded and queued as next
    queued = h.agent.state.next
    assert queued is not None and h.agent.state.bundles[queued].version == "1.0.1"
    h.run(AppReady(h.reloads[-1].boot_id))  # 1.0.2 confirmed: 1.0.1 is now a downgrade
    assert h.agent.state.next is None and queued not in h.agent.state.bundles
    h.run(MovedToBackground())
    assert h.current_version() == "1.0.2"


def test_the_previous_fallback_queued_again_is_dropped_once() -> None:
    """Regression (found by the simulator's replay MITM): 1.0.1 is the fallback and queued
    again while 1.0.2 boots; confirming 1.0.2 drops it exactly once."""
    h = confirmed("1.0.1")
    h.updates.append(offer("1.0.2"))
    h.run(MovedToForeground())
    h.run(MovedToBackground())  # 1.0.2 boots, unconfirmed; 1.0.1 is the fallback
    fallback = h.agent.state.fallback
    h.updates.append(offer("1.0.1"))
    h.run(MovedToForeground())  # the floor is 1.0.1: not a downgrade yet, re-queued
    assert h.agent.state.next == fallback
    h.run(AppReady(h.reloads[-1].boot_id))
    assert h.agent.state.next is None and fallback not in h.agent.state.bundles
    assert h.actions().count("delete") == 1 and h.violations == []
    h.run(MovedToBackground())
    assert h.current_version() == "1.0.2"
