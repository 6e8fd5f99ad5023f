"""Random lives of one device: lifecycle events, server answers, download outcomes and crashes.

Invariants after every step: the device has a bootable bundle (in memory and on "disk"); a
version that failed to boot is never current again; a stale ready signal never confirms a
later boot; content that confirmed a boot here is never fetched or switched to again under a
version older than one confirmed here, except by the agent's own fall back after a failed boot
(anti-rollback, `allow_downgrade` off; each version here has one content); no effect
contradicts the state (no download of a refused version, no reload of a bundle that cannot
boot, no deletion of a bundle a slot names).
"""

from __future__ import annotations

import contextlib
import json

from core_harness import Crash, Harness, answer, config, offer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent.core.effects import CommitState, DownloadBundle, ReloadApp
from agent.core.events import (
    AppReady,
    AppStarted,
    Event,
    MovedToBackground,
    MovedToForeground,
)
from agent.core.lifecycle import BUILTIN, Activity, DeviceState, reconcile
from agent.errors import LocalError, TransportError, VerificationError

VERSIONS = ["1.0.1", "1.0.2", "1.0.3"]


def semver(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


ANSWERS = st.one_of(
    st.sampled_from(VERSIONS).map(offer),
    st.sampled_from(VERSIONS).map(offer),
    st.sampled_from(VERSIONS).map(offer),
    st.just(answer({"error": "no_new_version_available", "kind": "up_to_date"})),
    st.just(answer({"error": "disabled_platform_ios", "kind": "blocked"})),
    st.just(answer({"error": "no_channel"})),
    st.just(answer({"error": "too_many_requests"}, 429, **{"retry-after": "30"})),
    st.just(answer({"version": "builtin"})),
    st.just((200, {}, b"{broken")),
    st.just((503, {}, b"")),
)
DOWNLOADS = st.sampled_from(
    [
        None,
        None,
        VerificationError("checksum_fail", "x"),
        TransportError("reset"),
        LocalError("unzip_fail", "x"),
    ]
)


class DeviceLife(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(config=config())
        self.failed: set[str] = set()
        self.floor = "0.0.0"  # no content confirmed here is activated again below this
        self.confirmed: set[str] = set()
        self.running, self.fallback = BUILTIN, BUILTIN
        self.h.run(AppStarted())

    def _run(self, event: Event) -> None:
        before = len(self.h.effects)
        try:
            self.h.run(event)
        finally:
            self._check_effects(before)
        self.failed |= {v for a, v in self.h.reported if a == "update_fail"}

    def _rollback(self, version: str) -> bool:
        return version in self.confirmed and semver(version) < semver(self.floor)

    def _check_effects(self, start: int) -> None:
        for effect in self.h.effects[start:]:
            if isinstance(effect, DownloadBundle):
                assert effect.offer.version not in self.failed
                assert not self._rollback(effect.offer.version), (effect, self.floor)
            elif isinstance(effect, CommitState):
                self._raise_floor(effect.state)
                self.fallback = effect.state.fallback
            elif isinstance(effect, ReloadApp):
                switched = effect.bundle_id not in (self.running, self.fallback)
                assert not (switched and self._rollback(effect.version)), (effect, self.floor)
                self.running = effect.bundle_id
        assert self.h.violations == []

    def _raise_floor(self, state: DeviceState) -> None:
        """The model's anti-rollback floor: the highest version whose confirmed boot was
        committed (independent of the agent's own bookkeeping)."""
        boot = state.boot
        if boot is not None and boot.confirmed and boot.bundle_id != BUILTIN:
            version = state.bundles[boot.bundle_id].version
            self.floor = max(self.floor, version, key=semver)
            self.confirmed.add(version)

    @rule(reply=ANSWERS)
    def server_will_answer(self, reply: tuple[int, dict[str, str], bytes]) -> None:
        self.h.updates.append(reply)

    @rule()
    def older_release_replayed(self) -> None:
        """A man in the middle replays the oldest signed release (whole offer)."""
        self.h.updates.append(offer(VERSIONS[0]))

    @rule(outcome=DOWNLOADS)
    def next_download_will(self, outcome: Exception | None) -> None:
        self.h.downloads.append(outcome)  # type: ignore[arg-type]

    @rule()
    def foreground(self) -> None:
        self._run(MovedToForeground())

    @rule()
    def background(self) -> None:
        self._run(MovedToBackground())

    @rule()
    def ready(self) -> None:
        self._run(AppReady(self.h.agent.state.boot.id if self.h.agent.state.boot else None))

    @rule()
    def stale_ready(self) -> None:
        boot = self.h.agent.state.boot
        if boot is None or boot.id < 2:
            return
        confirmed = boot.confirmed
        self._run(AppReady(boot.id - 1))
        after = self.h.agent.state.boot
        assert after is not None and (after.id != boot.id or after.confirmed == confirmed)

    @rule(seconds=st.sampled_from([0.5, 2.0, 11.0, 700.0]))
    def time_passes(self, seconds: float) -> None:
        before = len(self.h.effects)
        self.h.tick(seconds)
        self._check_effects(before)
        self.failed |= {v for a, v in self.h.reported if a == "update_fail"}

    @rule()
    def relaunch(self) -> None:
        self.h.restart()
        self._run(AppStarted())

    @rule(after=st.integers(0, 12), event=st.sampled_from(["launch", "fg", "bg"]))
    def crash_midway(self, after: int, event: str) -> None:
        self.h.crash_after = after
        if event == "launch":
            self.h.restart()
        with contextlib.suppress(Crash):
            self._run(
                {"launch": AppStarted(), "fg": MovedToForeground(), "bg": MovedToBackground()}[
                    event
                ]
            )
        self.h.crash_after = None
        self.h.restart()
        self._run(AppStarted())

    @invariant()
    def bootable_in_memory_and_on_disk(self) -> None:
        state = self.h.agent.state
        assert state.bootable(state.current) and state.bootable(state.fallback)
        assert state.current == BUILTIN or state.current in self.h.disk_bundles
        on_disk = reconcile(self.h.disk_state, self.h.disk_bundles)
        assert on_disk.bootable(on_disk.current)

    @invariant()
    def nothing_in_flight_between_events(self) -> None:
        """Every event runs to completion: no check or download is left in flight."""
        assert self.h.agent.activity in (Activity.IDLE, Activity.LAUNCHED)

    @invariant()
    def no_orphan_bundles(self) -> None:
        state = self.h.agent.state
        for info in state.bundles.values():
            if info.status in ("pending", "success"):
                assert info.id in (state.current, state.next, state.fallback), info

    @invariant()
    def failed_versions_never_run_again(self) -> None:
        state = self.h.agent.state
        assert state.version_of(state.current, "1.0.0") not in self.failed
        assert self.failed <= state.failed_versions

    @invariant()
    def stats_queue_is_bounded_and_persisted(self) -> None:
        assert len(self.h.agent.pending_stats) <= 200
        for request in self.h.sent[-3:]:
            if request.name == "/stats":
                assert isinstance(json.loads(request.body), list)


DeviceLife.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDeviceLife = DeviceLife.TestCase


class DeviceLifeAppliedAtOnce(DeviceLife):
    """The same lives with `autoUpdate: always` (every offer applied at once)."""

    def __init__(self) -> None:
        RuleBasedStateMachine.__init__(self)
        self.h = Harness(config=config(auto_update="always"))
        self.failed = set()
        self.floor = "0.0.0"
        self.confirmed = set()
        self.running, self.fallback = BUILTIN, BUILTIN
        self.h.run(AppStarted())


DeviceLifeAppliedAtOnce.TestCase.settings = DeviceLife.TestCase.settings
TestDeviceLifeAppliedAtOnce = DeviceLifeAppliedAtOnce.TestCase
