"""The update agent's decisions, without I/O: `Agent.handle(event, now) -> list[Effect]`.

The lifecycle
-------------
A device boots a *bundle*: `builtin` (shipped in the binary) or one it downloaded. Each start
of the web view is a *boot* with a fresh id, committed to disk before the switch happens. The
web app proves a bundle works by calling `notifyAppReady()` (event `AppReady`) within
`appReadyTimeout`; only then does the bundle become `success` and the *fallback*. If the
signal does not come in time -- the timer fires while the app runs, or the app died and the
next cold start finds the boot still unconfirmed -- the bundle is marked `error`, its version
goes on the device's failed list, `update_fail` is reported and the device returns to the
fallback (else builtin). Three choices here are deliberately safer than the Capgo plugin:

* the ready signal carries the id of the boot it confirms, so a late `notifyAppReady()` from
  the outgoing bundle can never confirm the incoming one (Capgo issue #907);
* content that failed to boot here is never downloaded or installed again, whatever the
  server offers or labels it (`never_retry_failed_versions`, on by default; the plugin
  retries it);
* content that confirmed a boot here is not activated again under another label, nor under a
  label older than one confirmed here (anti-rollback, `agent.core.rollback`;
  `allow_downgrade` restores the plugin's behaviour).

Update checks run at launch, on every foreground and every `periodCheckDelay` while in the
foreground (unless `autoUpdate` is `off`). An offer is downloaded into a `downloading` bundle
(resumable after a kill: the partial download is kept until the same artefact is offered
again or another one replaces it), verified, unpacked, then applied as the apply mode says:
queued as *next* (`atBackground`: applied at the next background or cold start), applied at
once (`always`; `onLaunch` for the first check after a cold start; `atInstall` for the first
check after an install or a store update), or only announced (`onlyDownload`). A bundle that
failed verification is never fetched again for the same version and checksum; a transport
failure leaves the partial download to resume.

Stats actions are queued at the moments of the Capgo plugin (reference §4) and flushed in
batches, at most once a second. A 429 hint silences every request until it expires (24 h max).

The core never reads a clock: `now` comes with each event, is passed to each handler, and
`next_deadline()` tells the driver when to send `TimerFired`. Effects come out in the order
they must be performed.

The machine
-----------
`Agent` is one explicit machine made of parts it owns (composition, no inheritance): a
`Ledger` (`agent.core.base`: the persisted `DeviceState`, the stats queue, the effects of the
step in progress), `Updates` (`agent.core.updates`: checks, offers, downloads, stats flushes)
and the lifecycle handlers here. Two tables say what may follow what, both in
`agent.core.lifecycle`: `BUNDLE_TRANSITIONS` for each bundle's persisted status, and
`ACTIVITY_TRANSITIONS` for the device's running state (`Activity`: idle, launched, checking,
launch-checking, downloading). The download itself -- which range to fetch, resume, restart
after a 416 or a torn partial, the size cap, the deadline and the stall window -- is the
sans-I/O `agent.core.download.Download` machine with its own table (`DOWNLOAD_TRANSITIONS`),
which the drivers' fetchers feed with each attempt, each answer's head, each chunk's arrival
and the body's end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.core import events as ev
from agent.core.backoff import RandomSource
from agent.core.base import Ledger
from agent.core.effects import Effect
from agent.core.lifecycle import (
    BUILTIN,
    Activity,
    DeviceState,
    Move,
    confirm_boot,
    fail_current,
    reset_to_builtin,
)
from agent.core.rollback import plain_content_id
from agent.core.updates import Updates
from agent.protocol.base import (
    UPDATE_CONFIRMED,
    DeviceInfo,
    Dialect,
    NoUpdate,
    ReleaseDocument,
    StatEvent,
    UpdateOffer,
)


class Agent:
    """One device's update logic. Feed it events; perform the effects it returns, in order."""

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
        content_id: Callable[[UpdateOffer], str | None] | None = None,
        open_release: Callable[[UpdateOffer | NoUpdate], ReleaseDocument] | None = None,
    ) -> None:
        """`content_id` maps an offer to its content identity (default: the checksum
        lower-cased; the drivers pass `agent.security.verify.offer_content_id`: the digest the
        app's public key recovers from a signed checksum, or a file signature's identity).
        `open_release` verifies an answer's signed release document (strict mode; raises
        `VerificationError`)."""
        self.config = config
        self.identity = identity
        self._ledger = Ledger(
            config,
            identity,
            state,
            stats,
            rng=rng,
            key_id=key_id,
            reported=getattr(dialect, "reported_actions", None),
        )
        self._updates = Updates(
            self._ledger,
            rng=rng,
            dialect=dialect,
            content_id=content_id or plain_content_id,
            open_release=open_release,
        )
        self._foreground = False
        self._next_periodic: float | None = None

    def handle(self, event: ev.Event, now: float) -> list[Effect]:
        """Take one event at time `now` (seconds) and return the effects to perform, in order."""
        self._ledger.begin()
        _HANDLERS[type(event)](self, event, now)
        self._updates.flush_stats(now)
        return self._ledger.finish()

    def next_deadline(self) -> float | None:
        """When the driver must send `TimerFired` next, or None when nothing is scheduled."""
        deadlines = [
            self._ledger.ready_deadline(),
            self._next_periodic if self._foreground else None,
            self.stats_deadline(),
        ]
        return min((d for d in deadlines if d is not None), default=None)

    def resumable(self, at: float) -> bool:
        """True when an agent built again from the device's disk at `at` behaves as this one
        from then on: in the background, nothing in progress (no check or download, no cold
        start awaiting its first check), nothing scheduled (no app-ready timeout, no stats to
        send), the stats spacing over by `at`, no refusal reported once this run, the last
        commit on disk. A driver may then drop this agent between lifecycle calls and open the
        folder again when it needs it (the simulator's idle devices, whose memory it frees)."""
        return (
            not self._foreground
            and self.next_deadline() is None
            and self._updates.resumable()
            and self._ledger.resumable(at)
        )

    # -- what drivers and observers read -------------------------------------------------

    @property
    def state(self) -> DeviceState:
        return self._ledger.state

    @property
    def activity(self) -> Activity:
        return self._updates.activity

    @property
    def dialect(self) -> Dialect:
        return self._updates.dialect

    @property
    def pending_stats(self) -> Sequence[StatEvent]:
        return tuple(self._ledger.stats.events)

    def stats_deadline(self) -> float | None:
        """When the next stats batch may be sent (None: nothing to send, or stats are off)."""
        return self._ledger.stats_deadline()

    def device_info(self) -> DeviceInfo:
        return self._ledger.device_info()

    def commit_failed(self) -> None:
        """The driver could not write the last commit (disk full): the state and the stats
        queue are written again at the end of the next step, whatever it changes."""
        self._ledger.commit_failed()

    # -- the lifecycle ---------------------------------------------------------------------

    def _on_started(self, _: ev.AppStarted, now: float) -> None:
        self._check_native_version(now)
        boot = self._ledger.state.boot
        if (
            boot is not None
            and boot.bundle_id == self._ledger.state.current
            and self._ledger.ready_deadline() is not None
        ):
            self._roll_back(now)  # the previous run never confirmed its boot
        if self._ledger.state.next is not None and self.config.auto_update != "onlyDownload":
            self._ledger.switch_to(self._ledger.state.next, now)
        else:
            self._ledger.start_boot(now)
        self._ledger.stat(now, "app_launch_start")
        self._updates.move(Move.STARTED)
        self._on_foreground(ev.MovedToForeground(), now)

    def _check_native_version(self, now: float) -> None:
        st, ident = self._ledger.state, self.identity
        if st.native_build is not None and (st.native_build, st.native_code) != (
            ident.version_build,
            ident.version_code,
        ):
            self._ledger.stat(now, "native_app_version_changed", ident.version_build)
            self._ledger.state = replace(self._ledger.state, install_check_pending=True)
            if self.config.reset_when_update:
                self._ledger.state = reset_to_builtin(self._ledger.state)
                for bundle_id in list(self._ledger.state.bundles):
                    self._ledger.forget(bundle_id, now)
        if st.os_version is not None and st.os_version != ident.version_os:
            self._ledger.stat(now, "os_version_changed")
        self._ledger.state = replace(
            self._ledger.state,
            native_build=ident.version_build,
            native_code=ident.version_code,
            os_version=ident.version_os,
        )

    def _roll_back(self, now: float) -> None:
        failed = self._ledger.state.bundles[self._ledger.state.current]
        self._ledger.emit("updateFailed", bundle=self._ledger.bundle_payload(failed.id))
        self._ledger.stat(now, "app_launch_timeout", failed.version)
        self._ledger.stat(now, "update_fail", failed.version)
        self._ledger.state, _ = fail_current(self._ledger.state)
        if self.config.auto_delete_failed:
            self._ledger.forget(failed.id, now)

    def _on_foreground(self, _: ev.MovedToForeground, now: float) -> None:
        self._foreground = True
        self._ledger.stat(now, "app_moved_to_foreground")
        if self.config.period_check_delay_s:
            self._next_periodic = now + self.config.period_check_delay_s
        if self.config.auto_update != "off":
            self._updates.start_check(now)

    def _on_background(self, _: ev.MovedToBackground, now: float) -> None:
        self._foreground = False
        self._ledger.stat(now, "app_moved_to_background")
        if self._ledger.state.next is not None and self._ledger.state.bootable(
            self._ledger.state.next
        ):
            self._ledger.switch_to(self._ledger.state.next, now)

    def _on_ready(self, event: ev.AppReady, now: float) -> None:
        boot = self._ledger.state.boot
        if boot is None or boot.confirmed or event.boot_id not in (None, boot.id):
            return  # a stale signal never confirms another boot (Capgo #907)
        previous = self._ledger.state.fallback
        info = self._ledger.state.bundle(boot.bundle_id)
        self._ledger.state = confirm_boot(self._ledger.state)
        duration_ms = str(int((now - boot.started_at) * 1000))
        self._ledger.stat(now, "app_launch_ready", duration_ms=duration_ms)
        reported = self._ledger.reported
        if info is not None and info.status != "success" and UPDATE_CONFIRMED in (reported or ()):
            old = self._ledger.version(previous)
            self._ledger.stat(now, UPDATE_CONFIRMED, info.version, old)
        self._ledger.emit(
            "appReady", bundle=self._ledger.bundle_payload(boot.bundle_id), status="success"
        )
        if self.config.auto_delete_previous and previous not in (
            BUILTIN,
            self._ledger.state.current,
            self._ledger.state.next,
        ):
            self._ledger.forget(previous, now)
        # after: the queued bundle may be the previous fallback
        self._updates.drop_outdated_next(now)
        self._ledger.commit()

    def _on_timer(self, _: ev.TimerFired, now: float) -> None:
        ready_at = self._ledger.ready_deadline()
        if ready_at is not None and ready_at <= now:
            self._roll_back(now)
            self._ledger.start_boot(now)
        if self._foreground and self._next_periodic and self._next_periodic <= now:
            self._next_periodic = now + self.config.period_check_delay_s
            self._updates.start_check(now)

    def _on_channel(self, event: ev.ChannelStored, now: float) -> None:
        self._ledger.state = replace(self._ledger.state, channel=event.channel)
        self._ledger.commit()


def _on_updates(
    handler: Callable[[Updates, Any, float], None],
) -> Callable[[Agent, Any, float], None]:
    return lambda agent, event, now: handler(agent._updates, event, now)


# By event type. At class level, not bound methods in each agent: an agent then holds no
# reference cycle and its memory goes back as soon as its driver drops it (idle devices).
_HANDLERS: Mapping[type, Callable[[Agent, Any, float], None]] = {
    ev.AppStarted: Agent._on_started,
    ev.MovedToForeground: Agent._on_foreground,
    ev.MovedToBackground: Agent._on_background,
    ev.AppReady: Agent._on_ready,
    ev.TimerFired: Agent._on_timer,
    ev.CheckRequested: lambda agent, _, now: agent._updates.start_check(now),
    ev.ResponseReceived: _on_updates(Updates.on_response),
    ev.TransportFailed: _on_updates(Updates.on_transport_failed),
    ev.DownloadProgressed: _on_updates(Updates.on_progress),
    ev.DownloadFinished: _on_updates(Updates.on_downloaded),
    ev.DownloadFailed: _on_updates(Updates.on_download_failed),
    ev.ChannelStored: Agent._on_channel,
}
