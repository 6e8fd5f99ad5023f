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

The core never reads a clock: `now` comes with each event and `next_deadline()` tells the
driver when to send `TimerFired`. Effects come out in the order they must be performed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.core import events as ev
from agent.core.backoff import RandomSource
from agent.core.effects import CommitStats, Effect
from agent.core.lifecycle import BUILTIN, DeviceState, confirm_boot, fail_current, reset_to_builtin
from agent.core.rollback import plain_content_id
from agent.core.updates import UpdateFlow
from agent.protocol.base import Dialect, NoUpdate, ReleaseDocument, StatEvent, UpdateOffer


class Agent(UpdateFlow):
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
        super().__init__(
            config,
            identity,
            state,
            stats,
            rng=rng,
            dialect=dialect,
            key_id=key_id,
            content_id=content_id or plain_content_id,
            open_release=open_release,
        )
        self._handlers: Mapping[type, Callable[[Any], None]] = {
            ev.AppStarted: self._on_started,
            ev.MovedToForeground: self._on_foreground,
            ev.MovedToBackground: self._on_background,
            ev.AppReady: self._on_ready,
            ev.TimerFired: self._on_timer,
            ev.CheckRequested: lambda _: self._start_check(),
            ev.ResponseReceived: self._on_response,
            ev.TransportFailed: self._on_transport_failed,
            ev.DownloadProgressed: self._on_progress,
            ev.DownloadFinished: self._on_downloaded,
            ev.DownloadFailed: self._on_download_failed,
            ev.ChannelStored: self._on_channel,
        }

    def handle(self, event: ev.Event, now: float) -> list[Effect]:
        """Take one event at time `now` (seconds) and return the effects to perform, in order."""
        self._out, self._now = [], now
        self._handlers[type(event)](event)
        self._flush_stats()
        if self._deletes or (self.state is not self._committed and self.state != self._committed):
            self._commit()
        if self._stats_changed:
            self._stats_changed = False
            self._out.append(CommitStats(tuple(self._stats.events)))
        return self._out

    def next_deadline(self) -> float | None:
        """When the driver must send `TimerFired` next, or None when nothing is scheduled."""
        deadlines = [
            self._ready_deadline(),
            self._next_periodic if self._foreground else None,
            self.stats_deadline(),
        ]
        return min((d for d in deadlines if d is not None), default=None)

    def _on_started(self, _: ev.AppStarted) -> None:
        self._check_native_version()
        boot = self.state.boot
        if (
            boot is not None
            and boot.bundle_id == self.state.current
            and self._ready_deadline() is not None
        ):
            self._roll_back()  # the previous run never confirmed its boot
        if self.state.next is not None and self.config.auto_update != "onlyDownload":
            self._switch_to(self.state.next)
        else:
            self._start_boot()
        self._stat("app_launch_start")
        self._launch_check = True
        self._on_foreground(ev.MovedToForeground())

    def _check_native_version(self) -> None:
        st, ident = self.state, self.identity
        if st.native_build is not None and (st.native_build, st.native_code) != (
            ident.version_build,
            ident.version_code,
        ):
            self._stat("native_app_version_changed", ident.version_build)
            self.state = replace(self.state, install_check_pending=True)
            if self.config.reset_when_update:
                self.state = reset_to_builtin(self.state)
                for bundle_id in list(self.state.bundles):
                    self._forget(bundle_id)
        if st.os_version is not None and st.os_version != ident.version_os:
            self._stat("os_version_changed")
        self.state = replace(
            self.state,
            native_build=ident.version_build,
            native_code=ident.version_code,
            os_version=ident.version_os,
        )

    def _roll_back(self) -> None:
        failed = self.state.bundles[self.state.current]
        self._emit("updateFailed", bundle=self._bundle_payload(failed.id))
        self._stat("app_launch_timeout", failed.version)
        self._stat("update_fail", failed.version)
        self.state, _ = fail_current(self.state)
        if self.config.auto_delete_failed:
            self._forget(failed.id)

    def _on_foreground(self, _: ev.MovedToForeground) -> None:
        self._foreground = True
        self._stat("app_moved_to_foreground")
        if self.config.period_check_delay_s:
            self._next_periodic = self._now + self.config.period_check_delay_s
        if self.config.auto_update != "off":
            self._start_check()

    def _on_background(self, _: ev.MovedToBackground) -> None:
        self._foreground = False
        self._stat("app_moved_to_background")
        if self.state.next is not None and self.state.bootable(self.state.next):
            self._switch_to(self.state.next)

    def _on_ready(self, event: ev.AppReady) -> None:
        boot = self.state.boot
        if boot is None or boot.confirmed or event.boot_id not in (None, boot.id):
            return  # a stale signal never confirms another boot (Capgo #907)
        previous = self.state.fallback
        self.state = confirm_boot(self.state)
        duration_ms = str(int((self._now - boot.started_at) * 1000))
        self._stat("app_launch_ready", duration_ms=duration_ms)
        self._emit("appReady", bundle=self._bundle_payload(boot.bundle_id), status="success")
        if self.config.auto_delete_previous and previous not in (
            BUILTIN,
            self.state.current,
            self.state.next,
        ):
            self._forget(previous)
        self._drop_outdated_next()  # after: the queued bundle may be the previous fallback
        self._commit()

    def _on_timer(self, _: ev.TimerFired) -> None:
        ready_at = self._ready_deadline()
        if ready_at is not None and ready_at <= self._now:
            self._roll_back()
            self._start_boot()
        if self._foreground and self._next_periodic and self._next_periodic <= self._now:
            self._next_periodic = self._now + self.config.period_check_delay_s
            self._start_check()

    def _on_channel(self, event: ev.ChannelStored) -> None:
        self.state = replace(self.state, channel=event.channel)
        self._commit()
