"""The state and helpers every part of the agent's decisions shares (see `agent.core.agent`).

`AgentBase` holds the persisted `DeviceState`, the stats queue and the transient flags of one
device, and the few primitives every decision uses: queue a stat, emit a plugin event, commit
the state (deleting forgotten bundles only after the commit), start a boot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.core.backoff import RandomSource
from agent.core.effects import CommitState, DeleteBundle, Effect, EmitEvent, ReloadApp, ReportStat
from agent.core.lifecycle import BUILTIN, DeviceState, activate, remove_bundle
from agent.core.rollback import plain_content_id
from agent.core.stats import StatsQueue
from agent.protocol.base import (
    DeviceInfo,
    Dialect,
    NoUpdate,
    OutgoingRequest,
    ReleaseDocument,
    StatEvent,
    UpdateOffer,
)


class AgentBase:
    """Shared state and primitives; `Agent` is the class to use."""

    def __init__(
        self,
        config: AgentConfig,
        identity: DeviceIdentity,
        state: DeviceState,
        stats: Sequence[StatEvent],
        *,
        rng: RandomSource,
        dialect: Dialect,
        key_id: str | None = None,
        content_id: Callable[[UpdateOffer], str | None] = plain_content_id,
        open_release: Callable[[UpdateOffer | NoUpdate], ReleaseDocument] | None = None,
    ) -> None:
        self.config = config
        self._content_id = content_id  # offer -> content identity (pure)
        self._open_release = open_release  # strict mode: verify an answer's release document
        self.identity = identity
        self.state = state
        self.dialect = dialect
        self._stats = StatsQueue(stats, rng)
        self._rng = rng
        self._key_id = key_id
        self._foreground = False
        self._checking = False
        self._downloading: str | None = None
        self._deciles_sent: set[int] = set()
        self._downgrades_reported: set[str] = set()  # "version:checksum" refused this run
        self._launch_check = False
        self._next_periodic: float | None = None
        self._apply_when_done = False
        self._download_kind = "zip"
        self._last_check: tuple[DeviceInfo, OutgoingRequest] | None = None  # (info, request)
        self._listing_for: UpdateOffer | None = None  # an offer whose file list is on its way
        self._committed: DeviceState | None = state  # None: the last commit did not land
        self._out: list[Effect] = []
        self._deletes: list[str] = []
        self._stats_changed = False
        self._now = 0.0

    def stats_deadline(self) -> float | None:
        """When the next stats batch may be sent (None: nothing to send, or stats are off)."""
        deadline = self._stats.deadline() if self.config.stats_url else None
        if deadline is None:
            return None
        return max(deadline, self.state.blocked_until or deadline)

    @property
    def pending_stats(self) -> Sequence[StatEvent]:
        return tuple(self._stats.events)

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(
            self.identity,
            self.config,
            self._version(self.state.current),
            self.state.channel or self.config.default_channel,
            self._key_id,
            self.state.current == BUILTIN,
        )

    def _version(self, bundle_id: str) -> str:
        return self.state.version_of(bundle_id, self.identity.version_build)

    def _bundle_payload(self, bundle_id: str) -> dict[str, Any]:
        info = self.state.bundle(bundle_id)
        status = "success" if info is None else info.status
        return {"id": bundle_id, "version": self._version(bundle_id), "status": status}

    def _emit(self, name: str, **payload: Any) -> None:
        self._out.append(EmitEvent(name, payload))

    def _stat(
        self, action: str, version: str | None = None, old: str | None = None, **meta: str
    ) -> None:
        version = version or self._version(self.state.current)
        self._stats.add(action, version, self._now, old, meta)
        self._stats_changed = True
        self._out.append(ReportStat(action, version))

    def commit_failed(self) -> None:
        """The driver could not write the last commit (disk full): the state and the stats
        queue are written again at the end of the next step, whatever it changes."""
        self._committed = None
        self._stats_changed = True

    def _commit(self) -> None:
        self._out.append(CommitState(self.state))
        self._committed = self.state
        self._out.extend(DeleteBundle(b) for b in self._deletes)
        self._deletes.clear()

    def _forget(self, bundle_id: str) -> None:
        info = self.state.bundles[bundle_id]
        if info.status != "downloading":  # a partial download is not a bundle yet
            self._stat("delete", info.version)
        self.state = remove_bundle(self.state, bundle_id)
        self._deletes.append(bundle_id)

    def _blocked(self) -> bool:
        until = self.state.blocked_until
        if until is not None and until <= self._now:
            self.state = replace(self.state, blocked_until=None)
            return False
        return until is not None

    def _block(self, retry_after_s: float | None) -> None:
        """A 429 on any request: silence the device for the hint; report the first one."""
        if retry_after_s is not None:
            self.state = replace(self.state, blocked_until=self._now + retry_after_s)
        if not self.state.rate_limit_reported:
            self.state = replace(self.state, rate_limit_reported=True)
            self._stat("rate_limit_reached")

    def _ready_deadline(self) -> float | None:
        boot = self.state.boot
        if boot is None or boot.confirmed or boot.bundle_id == BUILTIN:
            return None
        info = self.state.bundle(boot.bundle_id)
        if info is None or info.status != "pending":
            return None
        return boot.started_at + self.config.app_ready_timeout_s

    def _start_boot(self) -> None:
        """Start a new boot of the current bundle: committed before the web view reloads."""
        boot_id = self.state.boot.id + 1 if self.state.boot else 1
        self.state = activate(self.state, self.state.current, boot_id, self._now)
        self._commit()
        self._out.append(ReloadApp(boot_id, self.state.current, self._version(self.state.current)))

    def _switch_to(self, bundle_id: str) -> None:
        """Make `bundle_id` current (a new boot). The outgoing bundle, if no slot keeps it
        (it never confirmed a boot, so it is not the fallback), is deleted."""
        outgoing = self.state.current
        old = self._version(outgoing)
        self.state = replace(self.state, current=bundle_id)
        if outgoing not in (BUILTIN, self.state.next, self.state.fallback, bundle_id):
            self._forget(outgoing)  # in the same commit as the boot, deleted right after it
        self._start_boot()
        self._stat("set", self._version(bundle_id), old)
        self._emit("set", bundle=self._bundle_payload(bundle_id))
