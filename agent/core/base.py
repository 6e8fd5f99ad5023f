"""What one device holds and the primitives every decision uses (see `agent.core.agent`).

`Ledger` holds the persisted `DeviceState`, the stats queue and the effects of the step in
progress, and the few primitives every decision uses: queue a stat, emit a plugin event,
commit the state (deleting forgotten bundles only after the commit), start a boot. It keeps
no clock: every primitive that records a moment takes `now`. `Agent` and `Updates` each hold
the one ledger of their device (composition, not inheritance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.core.backoff import RandomSource
from agent.core.effects import (
    CommitState,
    CommitStats,
    DeleteBundle,
    Effect,
    EmitEvent,
    ReloadApp,
    ReportStat,
)
from agent.core.lifecycle import BUILTIN, DeviceState, activate, remove_bundle
from agent.core.stats import StatsQueue
from agent.protocol.base import DeviceInfo, StatEvent


class Ledger:
    """One device's state, stats queue and pending effects."""

    def __init__(
        self,
        config: AgentConfig,
        identity: DeviceIdentity,
        state: DeviceState,
        stats: Sequence[StatEvent],
        *,
        rng: RandomSource,
        key_id: str | None = None,
        reported: frozenset[str] | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.state = state
        self.stats = StatsQueue(stats, rng)
        self.key_id = key_id
        self.reported = reported  # the stats actions the dialect reports (None: all, as Capgo)
        self.out: list[Effect] = []
        self.stats_changed = False
        self._deletes: list[str] = []
        self._committed: DeviceState | None = state  # None: the last commit did not land

    def begin(self) -> None:
        """Start a step: the effects it returns are collected from here."""
        self.out = []

    def finish(self) -> list[Effect]:
        """End a step: commit the state and the stats queue if they changed; its effects."""
        if self._deletes or (self.state is not self._committed and self.state != self._committed):
            self.commit()
        if self.stats_changed:
            self.stats_changed = False
            self.out.append(CommitStats(tuple(self.stats.events)))
        return self.out

    def resumable(self, at: float) -> bool:
        """The state and the stats queue are on disk as they are here (see `Agent.resumable`)."""
        committed = self._committed
        return (
            committed is not None
            and (committed is self.state or committed == self.state)
            and not self._deletes
            and not self.stats_changed
            and self.stats.settled_by(at)
        )

    def stats_deadline(self) -> float | None:
        """When the next stats batch may be sent (None: nothing to send, or stats are off)."""
        deadline = self.stats.deadline() if self.config.stats_url else None
        if deadline is None:
            return None
        return max(deadline, self.state.blocked_until or deadline)

    def device_info(self) -> DeviceInfo:
        running = self.state.bundle(self.state.current)
        return DeviceInfo(
            self.identity,
            self.config,
            self.version(self.state.current),
            self.state.channel or self.config.default_channel,
            self.key_id,
            running.content if running is not None else None,
            self.state.current == BUILTIN,
        )

    def version(self, bundle_id: str) -> str:
        return self.state.version_of(bundle_id, self.identity.version_build)

    def bundle_payload(self, bundle_id: str) -> dict[str, Any]:
        info = self.state.bundle(bundle_id)
        status = "success" if info is None else info.status
        return {"id": bundle_id, "version": self.version(bundle_id), "status": status}

    def emit(self, name: str, **payload: Any) -> None:
        self.out.append(EmitEvent(name, payload))

    def stat(
        self,
        now: float,
        action: str,
        version: str | None = None,
        old: str | None = None,
        **meta: str,
    ) -> None:
        version = version or self.version(self.state.current)
        if self.reported is None or action in self.reported:  # else the dialect has no report
            self.stats.add(action, version, now, old, meta)
            self.stats_changed = True
        self.out.append(ReportStat(action, version))

    def commit_failed(self) -> None:
        """The driver could not write the last commit (disk full): the state and the stats
        queue are written again at the end of the next step, whatever it changes."""
        self._committed = None
        self.stats_changed = True

    def commit(self) -> None:
        self.out.append(CommitState(self.state))
        self._committed = self.state
        self.out.extend(DeleteBundle(b) for b in self._deletes)
        self._deletes.clear()

    def forget(self, bundle_id: str, now: float) -> None:
        info = self.state.bundles[bundle_id]
        if info.status != "downloading":  # a partial download is not a bundle yet
            self.stat(now, "delete", info.version)
        self.state = remove_bundle(self.state, bundle_id)
        self._deletes.append(bundle_id)

    def blocked(self, now: float) -> bool:
        until = self.state.blocked_until
        if until is not None and until <= now:
            self.state = replace(self.state, blocked_until=None)
            return False
        return until is not None

    def block(self, retry_after_s: float | None, now: float) -> None:
        """A 429 on any request: silence the device for the hint; report the first one."""
        if retry_after_s is not None:
            self.state = replace(self.state, blocked_until=now + retry_after_s)
        if not self.state.rate_limit_reported:
            self.state = replace(self.state, rate_limit_reported=True)
            self.stat(now, "rate_limit_reached")

    def ready_deadline(self) -> float | None:
        boot = self.state.boot
        if boot is None or boot.confirmed or boot.bundle_id == BUILTIN:
            return None
        info = self.state.bundle(boot.bundle_id)
        if info is None or info.status != "pending":
            return None
        return boot.started_at + self.config.app_ready_timeout_s

    def start_boot(self, now: float) -> None:
        """Start a new boot of the current bundle: committed before the web view reloads."""
        boot_id = self.state.boot.id + 1 if self.state.boot else 1
        self.state = activate(self.state, self.state.current, boot_id, now)
        self.commit()
        self.out.append(ReloadApp(boot_id, self.state.current, self.version(self.state.current)))

    def switch_to(self, bundle_id: str, now: float) -> None:
        """Make `bundle_id` current (a new boot). The outgoing bundle, if no slot keeps it
        (it never confirmed a boot, so it is not the fallback), is deleted."""
        outgoing = self.state.current
        old = self.version(outgoing)
        self.state = replace(self.state, current=bundle_id)
        if outgoing not in (BUILTIN, self.state.next, self.state.fallback, bundle_id):
            self.forget(outgoing, now)  # in the same commit as the boot, deleted right after it
        self.start_boot(now)
        self.stat(now, "set", self.version(bundle_id), old)
        self.emit("set", bundle=self.bundle_payload(bundle_id))
