"""The sans-I/O core: lifecycle, apply modes, rollback, stats and rate limits, event by event."""

from __future__ import annotations

import gc
import json
import random
import weakref
from dataclasses import replace

import pytest
from core_harness import Harness, answer, config, offer

from agent.config import AgentConfig
from agent.core.agent import Agent
from agent.core.effects import CommitState, CommitStats, DownloadBundle, ReloadApp
from agent.core.events import (
    AppReady,
    AppStarted,
    CheckRequested,
    MovedToBackground,
    MovedToForeground,
    TimerFired,
)
from agent.core.lifecycle import BUILTIN
from agent.errors import TransportError, VerificationError


def updated_device(**overrides: object) -> Harness:
    """A device that downloaded 1.0.1 at launch and queued it as next."""
    h = Harness(config=config(**overrides))
    h.updates.append(offer("1.0.1"))
    h.run(AppStarted())
    h.run(AppReady())
    return h


def test_launch_checks_downloads_and_queues_next() -> None:
    h = updated_device()
    state = h.agent.state
    assert state.current == BUILTIN and state.next is not None
    assert state.bundles[state.next].status == "pending"
    assert h.actions()[:4] == [
        "app_launch_start",
        "app_moved_to_foreground",
        "download_zip_start",
        "download_0",
    ]
    assert {"download_70", "download_zip_complete", "download_complete", "set_next"} <= set(
        h.actions()
    )
    assert "setNext" in h.event_names() and "updateAvailable" in h.event_names()


def test_background_applies_next_and_ready_makes_it_the_fallback() -> None:
    h = updated_device()
    h.run(MovedToBackground())
    state = h.agent.state
    assert h.current_version() == "1.0.1" and state.fallback == BUILTIN
    assert ("set", "1.0.1") in h.reported
    boot = h.reloads[-1]
    h.run(AppReady(boot.boot_id))
    assert h.agent.state.fallback == state.current
    assert h.agent.state.bundles[state.current].status == "success"


def test_commit_of_the_boot_comes_before_the_reload() -> None:
    h = updated_device()
    h.effects.clear()
    h.run(MovedToBackground())
    kinds = [type(e) for e in h.effects]
    reload_at = kinds.index(ReloadApp)
    commit = h.effects[kinds.index(CommitState)]
    assert kinds.index(CommitState) < reload_at
    assert isinstance(commit, CommitState) and commit.state.boot is not None
    assert commit.state.boot.id == h.reloads[-1].boot_id


def test_ready_timeout_rolls_back_and_reports_update_fail() -> None:
    h = updated_device()
    h.run(MovedToBackground())
    failed_id = h.agent.state.current
    h.tick(9.9)
    assert h.agent.state.current == failed_id
    h.tick(0.2)
    state = h.agent.state
    assert state.current == BUILTIN and "1.0.1" in state.failed_versions
    assert failed_id not in state.bundles  # autoDeleteFailed
    assert failed_id not in h.disk_bundles
    assert [a for a in h.actions() if a in ("app_launch_timeout", "update_fail")] == [
        "app_launch_timeout",
        "update_fail",
    ]
    assert "updateFailed" in h.event_names()
    assert h.reloads[-1].bundle_id == BUILTIN


def test_crash_before_ready_rolls_back_at_the_next_launch() -> None:
    h = updated_device()
    h.restart()  # killed; the cold start applies the queued bundle
    h.run(AppStarted())
    assert h.current_version() == "1.0.1"
    h.restart()  # crashed before notifyAppReady
    h.updates.append(offer("1.0.1"))
    h.run(AppStarted())
    assert h.current_version() == "1.0.0"
    assert ("update_fail", "1.0.1") in h.reported
    assert not any(isinstance(e, DownloadBundle) for e in h.effects[-20:])


def test_late_ready_of_the_outgoing_boot_does_not_confirm_the_incoming_one() -> None:
    h = updated_device()
    old_boot = h.agent.state.boot
    assert old_boot is not None
    h.run(MovedToBackground())
    h.run(AppReady(old_boot.id))  # the outgoing bundle's late notifyAppReady (Capgo #907)
    assert not h.agent.state.boot or not h.agent.state.boot.confirmed
    h.tick(11)
    assert "1.0.1" in h.agent.state.failed_versions


def test_a_failed_version_is_never_downloaded_again() -> None:
    h = updated_device()
    h.run(MovedToBackground())
    h.tick(11)
    h.updates.append(offer("1.0.1"))
    h.effects.clear()
    h.run(MovedToForeground())
    assert not any(isinstance(e, DownloadBundle) for e in h.effects)
    assert "noNeedUpdate" in h.event_names()


def test_plugin_behaviour_retries_a_failed_version_when_asked() -> None:
    h = updated_device(never_retry_failed_versions=False)
    h.run(MovedToBackground())
    h.tick(11)
    h.updates.append(offer("1.0.1"))
    h.effects.clear()
    h.run(MovedToForeground())
    assert any(isinstance(e, DownloadBundle) for e in h.effects)


def test_verification_failure_holds_that_artefact_back_transport_failure_does_not() -> None:
    h = Harness()
    h.downloads.append(VerificationError("checksum_fail", "bad"))
    h.updates.append(offer("1.0.1"))
    h.run(AppStarted())
    assert "checksum_fail" in h.actions() and "download_fail" in h.actions()
    assert h.agent.state.bundles == {}
    h.updates.append(offer("1.0.1"))
    h.effects.clear()
    h.run(MovedToForeground())
    assert not any(isinstance(e, DownloadBundle) for e in h.effects)
    h.updates.append(offer("1.0.1", checksum="f" * 64))  # a new artefact for that version
    h.downloads.append(TransportError("reset"))
    h.run(MovedToForeground())
    (partial,) = h.agent.state.bundles.values()
    assert partial.status == "downloading"
    h.updates.append(offer("1.0.1", checksum="f" * 64))
    h.effects.clear()
    h.run(MovedToForeground())
    (resumed,) = (e for e in h.effects if isinstance(e, DownloadBundle))
    assert resumed.bundle_id == partial.id  # same id: the partial download resumes


@pytest.mark.parametrize(
    ("mode", "applied_at_once"),
    [("always", True), ("onLaunch", True), ("atInstall", True), ("atBackground", False)],
)
def test_apply_modes_at_the_launch_check(mode: str, applied_at_once: bool) -> None:
    h = updated_device(auto_update=mode)
    assert (h.current_version() == "1.0.1") is applied_at_once


def test_on_launch_and_at_install_apply_at_once_only_on_their_first_check() -> None:
    for mode in ("onLaunch", "atInstall"):
        h = Harness(config=config(auto_update=mode))
        h.run(AppStarted())  # first check: up to date
        h.updates.append(offer("1.0.1"))
        h.run(MovedToForeground())
        assert h.current_version() == "1.0.0" and h.agent.state.next is not None


def test_only_download_never_sets_and_off_never_checks() -> None:
    h = updated_device(auto_update="onlyDownload")
    assert h.agent.state.next is None and "updateAvailable" in h.event_names()
    h.run(MovedToBackground())
    assert h.current_version() == "1.0.0"
    off = Harness(config=config(auto_update="off"))
    off.run(AppStarted())
    assert not any(r.name == "/updates" for r in off.sent)
    off.run(CheckRequested())
    assert any(r.name == "/updates" for r in off.sent)


def test_auto_delete_previous_removes_the_old_fallback() -> None:
    h = updated_device()
    h.run(MovedToBackground())
    first = h.agent.state.current
    h.run(AppReady())
    h.updates.append(offer("1.0.2"))
    h.run(MovedToForeground())
    h.run(MovedToBackground())
    h.run(AppReady())
    assert h.current_version() == "1.0.2"
    assert first not in h.agent.state.bundles and first not in h.disk_bundles
    assert ("delete", "1.0.1") in h.reported


def test_a_newer_offer_replaces_the_queued_bundle() -> None:
    h = updated_device()
    first = h.agent.state.next
    h.updates.append(offer("1.0.2"))
    h.run(MovedToForeground())
    state = h.agent.state
    assert state.next is not None and state.bundles[state.next].version == "1.0.2"
    assert first not in state.bundles and first not in h.disk_bundles
    h.run(MovedToBackground())
    assert h.current_version() == "1.0.2"


def test_native_update_resets_to_builtin() -> None:
    h = updated_device()
    h.run(MovedToBackground())
    h.run(AppReady())
    h.identity = replace(h.identity, version_build="1.1.0", version_code="2")
    h.restart()
    h.run(AppStarted())
    assert h.agent.state.current == BUILTIN and h.agent.state.bundles == {}
    assert h.disk_bundles == set()
    assert ("native_app_version_changed", "1.1.0") in h.reported


def test_revert_to_builtin_answer() -> None:
    h = updated_device()
    h.run(MovedToBackground())
    h.run(AppReady())
    h.updates.append(answer({"version": "builtin"}))
    h.run(MovedToForeground())
    assert h.agent.state.current == BUILTIN and ("reset", "1.0.0") in h.reported
    assert ("set", "1.0.0") not in h.reported and h.reloads[-1].bundle_id == BUILTIN


def test_failed_kind_reports_download_fail_blocked_does_not() -> None:
    h = Harness()
    h.updates.append(
        answer(
            {
                "error": "disable_auto_update_to_major",
                "kind": "blocked",
                "major": True,
                "version": "2.0.0",
            }
        )
    )
    h.run(AppStarted())
    assert "download_fail" not in h.actions()
    assert {"noNeedUpdate", "breakingAvailable", "majorAvailable"} <= set(h.event_names())
    h.updates.append(answer({"error": "no_channel"}))
    h.run(MovedToForeground())
    assert "download_fail" in h.actions() and "downloadFailed" in h.event_names()


def test_malformed_answer_is_a_failed_check_not_a_crash() -> None:
    h = Harness()
    h.updates.append((200, {}, b"{not json"))
    h.run(AppStarted())
    result = [p for n, p in h.emitted if n == "updateCheckResult"][-1]
    assert result["error"] == "malformed_answer"


def test_rate_limit_blocks_every_request_until_the_hint_expires() -> None:
    h = Harness()
    h.updates.append(answer({"error": "too_many_requests"}, 429, **{"retry-after": "60"}))
    h.run(AppStarted())
    assert h.actions().count("rate_limit_reached") == 1
    sent = len(h.sent)
    h.run(MovedToForeground())
    h.tick(30)
    assert len(h.sent) == sent  # neither checks nor stats while blocked
    h.tick(31)
    assert h.sent[-1].name == "/stats"
    h.updates.append(answer({"error": "too_many_requests"}, 429, **{"retry-after": "1"}))
    h.run(MovedToForeground())
    assert h.actions().count("rate_limit_reached") == 1  # only the first 429


def test_stats_are_batched_at_most_once_a_second_and_requeued_on_5xx() -> None:
    h = Harness()
    h.stats_answers.extend([503])
    h.run(AppStarted())
    first = [r for r in h.sent if r.name == "/stats"]
    assert len(first) == 1
    assert len(json.loads(first[0].body)) >= 2  # a batch, as a JSON array
    h.run(MovedToBackground())
    h.run(MovedToForeground())
    assert len([r for r in h.sent if r.name == "/stats"]) == 1  # requeued, backing off
    h.tick(60)
    assert h.agent.pending_stats == ()
    assert h.posted_stats[:2] == ["app_launch_start", "app_moved_to_foreground"]
    assert h.disk_stats == []


def test_stats_429_counts_as_the_first_rate_limit() -> None:
    h = Harness()
    h.stats_answers.append(429)
    h.run(AppStarted())
    assert h.actions().count("rate_limit_reached") == 1
    assert h.agent.pending_stats  # requeued


def test_stats_dropped_on_4xx_and_capped_at_200() -> None:
    h = Harness()
    h.stats_answers.append(400)
    h.run(AppStarted())
    assert h.agent.pending_stats == ()
    no_stats = Harness(config=replace(config(), stats_url=""))
    for _ in range(150):
        no_stats.run(MovedToForeground())
        no_stats.run(MovedToBackground())
    assert len(no_stats.agent.pending_stats) == 200
    assert not any(r.name == "/stats" for r in no_stats.sent)


def test_periodic_check_runs_only_in_foreground() -> None:
    h = Harness(config=config(period_check_delay_s=5))
    assert h.config.period_check_delay_s == 600
    h.run(AppStarted())
    checks = lambda: sum(r.name == "/updates" for r in h.sent)  # noqa: E731
    h.tick(601)
    assert checks() == 2
    h.run(MovedToBackground())
    h.tick(1300)
    assert checks() == 2


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        AgentConfig(app_ready_timeout_ms=999)
    with pytest.raises(ValueError):
        AgentConfig(auto_update="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AgentConfig(update_url="file:///etc/passwd")
    assert AgentConfig.from_capgo({"autoUpdate": False}).auto_update == "off"
    assert AgentConfig.from_capgo({"directUpdate": "atInstall"}).auto_update == "atInstall"
    assert AgentConfig.from_capgo({"appReadyTimeout": 5000}).app_ready_timeout_ms == 5000
    with pytest.raises(ValueError):
        AgentConfig.from_capgo({"noSuchOption": 1})


def test_requests_name_what_the_device_runs() -> None:
    h = updated_device()
    h.run(MovedToBackground())
    h.run(AppReady())
    h.run(MovedToForeground())
    check = [r for r in h.sent if r.name == "/updates"][-1]
    assert json.loads(check.body)["version_name"] == "1.0.1"


def test_timer_with_nothing_due_does_nothing() -> None:
    h = Harness()
    h.run(AppStarted())
    h.tick(5)
    h.effects.clear()
    h.run(TimerFired())
    assert h.effects == []


def test_a_dialect_plugs_in_without_touching_the_core() -> None:
    from collections.abc import Mapping

    from agent.protocol.base import CheckResult, DeviceInfo, OutgoingRequest
    from agent.protocol.capgo import CapgoDialect

    class OtherServer(CapgoDialect):
        def check_request(self, info: DeviceInfo) -> OutgoingRequest:
            return OutgoingRequest("/updates", "GET", "https://other.test/latest", {})

        def parse_check(
            self, status: int, headers: Mapping[str, str], body: bytes, now: float
        ) -> CheckResult:
            return super().parse_check(status, headers, body.replace(b"v=", b""), now)

    h = Harness()
    h.agent = Agent(
        h.config, h.identity, h.disk_state, [], rng=random.Random(1), dialect=OtherServer()
    )
    h.updates.append((200, {}, b'v={"version": "1.0.1", "url": "https://other.test/b.zip"}'))
    h.run(AppStarted())
    assert h.sent[0].url == "https://other.test/latest"
    assert any(isinstance(e, DownloadBundle) and e.offer.version == "1.0.1" for e in h.effects)


def _life(h: Harness) -> list[object]:
    """What a device did, its stats sequence numbers (local to the device) left out."""
    return [
        replace(e, events=tuple(replace(s, seq=0) for s in e.events))
        if isinstance(e, CommitStats)
        else e
        for e in h.effects
    ] + [h.emitted, h.reported, h.posted_stats, h.agent.state]


def test_an_idle_agent_rebuilt_from_its_disk_lives_as_the_live_one() -> None:
    """Two devices live the same day; one drops its agent whenever it says it may
    (`Agent.resumable`) and rebuilds it from what it committed: the two do the same."""
    lives = []
    for rebuild in (False, True):
        h = Harness()
        h.updates.append(offer("1.0.1"))
        h.run(AppStarted())
        h.run(AppReady())
        for session in range(3):
            h.run(MovedToBackground())  # boots the queued bundle: the app confirms it
            h.run(AppReady(h.agent.state.boot.id if h.agent.state.boot else None))
            h.tick(5)
            assert h.agent.resumable(h.now + 600)
            h.now += 600
            if rebuild:
                h.rebuild()
            h.updates.append(offer(f"1.0.{session + 2}"))
            h.run(MovedToForeground())
            h.run(AppReady(h.agent.state.boot.id if h.agent.state.boot else None))
            h.tick(30)
        lives.append(_life(h))
    assert lives[0] == lives[1]


def test_an_agent_with_anything_pending_is_not_resumable() -> None:
    h = updated_device()
    assert not h.agent.resumable(h.now + 3600)  # in the foreground: a periodic check to come
    h.run(MovedToBackground())  # boots 1.0.1, unconfirmed: its app-ready timeout runs
    assert not h.agent.resumable(h.now + 3600)
    h.run(AppReady(h.reloads[-1].boot_id))
    assert not h.agent.resumable(h.now + 3600)  # stats to send
    while (deadline := h.agent.next_deadline()) is not None:  # each batch at its time
        h.now = max(h.now, deadline)
        h.run(TimerFired())
    assert h.agent.pending_stats == ()
    assert not h.agent.resumable(h.now)  # one second between two batches
    assert h.agent.resumable(h.now + 1)


def test_a_dropped_agent_is_freed_at_once_no_cycle_waits_for_the_collector() -> None:
    """The fleet drops idle devices' agents: their memory must come back without a gc pass."""
    h = updated_device()
    h.run(MovedToBackground())
    alive = weakref.ref(h.agent)
    gc.disable()
    try:
        h.rebuild()
        assert alive() is None
    finally:
        gc.enable()
