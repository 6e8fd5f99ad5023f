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
fallback (else builtin). Two choices here are deliberately safer than the Capgo plugin:

* the ready signal carries the id of the boot it confirms, so a late `notifyAppReady()` from
  the outgoing bundle can never confirm the incoming one (Capgo issue #907);
* a version that failed to boot here is never downloaded or installed again, whatever the
  server offers (`never_retry_failed_versions`, on by default; the plugin retries it).

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
from agent.core.backoff import RandomSource, random_id
from agent.core.effects import (
    CommitState,
    CommitStats,
    DeleteBundle,
    DownloadBundle,
    Effect,
    EmitEvent,
    ReloadApp,
    ReportStat,
    SendRequest,
)
from agent.core.lifecycle import (
    BUILTIN,
    BundleInfo,
    DeviceState,
    activate,
    add_bundle,
    confirm_boot,
    fail_current,
    remove_bundle,
    reset_to_builtin,
    set_status,
)
from agent.core.stats import StatsQueue
from agent.errors import ProtocolError, RateLimited, TransportError, VerificationError
from agent.protocol.base import (
    DeviceInfo,
    Dialect,
    NoUpdate,
    RateLimitHint,
    RevertToBuiltin,
    StatEvent,
    StatsOutcome,
    UpdateOffer,
)
from agent.protocol.capgo import CapgoDialect

DECILES = range(10, 100, 10)


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
        dialect: Dialect | None = None,
        key_id: str | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.state = state
        self.dialect: Dialect = dialect or CapgoDialect()
        self._stats = StatsQueue(stats, rng)
        self._rng = rng
        self._key_id = key_id
        self._foreground = False
        self._checking = False
        self._downloading: str | None = None
        self._deciles_sent: set[int] = set()
        self._launch_check = False
        self._next_periodic: float | None = None
        self._apply_when_done = False
        self._download_kind = "zip"
        self._committed = state
        self._out: list[Effect] = []
        self._deletes: list[str] = []
        self._stats_changed = False
        self._now = 0.0
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

    # -- public API ------------------------------------------------------------------------

    def handle(self, event: ev.Event, now: float) -> list[Effect]:
        """Take one event at time `now` (seconds) and return the effects to perform, in order."""
        self._out, self._now = [], now
        self._handlers[type(event)](event)
        self._flush_stats()
        if self.state != self._committed or self._deletes:
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

    def stats_deadline(self) -> float | None:
        """When the next stats batch may be sent (None: nothing to send, or stats are off)."""
        deadline = self._stats.deadline() if self.config.stats_url else None
        if deadline is None:
            return None
        return max(deadline, self.state.blocked_until or deadline)

    @property
    def pending_stats(self) -> Sequence[StatEvent]:
        return tuple(self._stats.events)

    @property
    def busy(self) -> bool:
        """A check, download or stats flush is waiting for its answer."""
        return self._checking or self._downloading is not None or self._stats.in_flight

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(
            self.identity,
            self.config,
            self._version(self.state.current),
            self.state.channel or self.config.default_channel,
            self._key_id,
        )

    # -- helpers ---------------------------------------------------------------------------

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

    def _commit(self) -> None:
        self._out.append(CommitState(self.state))
        self._committed = self.state
        self._out.extend(DeleteBundle(b) for b in self._deletes)
        self._deletes.clear()

    def _forget(self, bundle_id: str) -> None:
        self.state = remove_bundle(self.state, bundle_id)
        self._deletes.append(bundle_id)

    def _blocked(self) -> bool:
        until = self.state.blocked_until
        if until is not None and until <= self._now:
            self.state = replace(self.state, blocked_until=None)
            return False
        return until is not None

    def _ready_deadline(self) -> float | None:
        boot = self.state.boot
        if boot is None or boot.confirmed or boot.bundle_id == BUILTIN:
            return None
        info = self.state.bundle(boot.bundle_id)
        if info is None or info.status != "pending":
            return None
        return boot.started_at + self.config.app_ready_timeout_s

    # -- lifecycle -------------------------------------------------------------------------

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

    def _start_boot(self) -> None:
        """Start a new boot of the current bundle: committed before the web view reloads."""
        boot_id = self.state.boot.id + 1 if self.state.boot else 1
        self.state = activate(self.state, self.state.current, boot_id, self._now)
        self._commit()
        self._out.append(ReloadApp(boot_id, self.state.current, self._version(self.state.current)))

    def _switch_to(self, bundle_id: str) -> None:
        old = self._version(self.state.current)
        self.state = replace(self.state, current=bundle_id)
        self._start_boot()
        self._stat("set", self._version(bundle_id), old)
        self._emit("set", bundle=self._bundle_payload(bundle_id))

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

    # -- update checks and downloads -----------------------------------------------------------

    def _start_check(self) -> None:
        if self._checking or self._downloading or not self.config.update_url or self._blocked():
            return
        self._checking = True
        self._out.append(SendRequest(self.dialect.check_request(self.device_info())))

    def _on_response(self, event: ev.ResponseReceived) -> None:
        if event.name == "/stats" and self._stats.in_flight:
            outcome, hint = self.dialect.parse_stats(
                event.status, event.headers, event.body, self._now
            )
            self._stats.settle(outcome, hint, self._now)
            self._stats_changed = True
        elif event.name == "/updates" and self._checking:
            self._checking = False
            try:
                result = self.dialect.parse_check(
                    event.status, event.headers, event.body, self._now
                )
            except ProtocolError as exc:
                result = NoUpdate("failed", "malformed_answer", str(exc), status=event.status)
            self._on_check_result(result)

    def _on_transport_failed(self, event: ev.TransportFailed) -> None:
        if event.name == "/stats" and self._stats.in_flight:
            hint = event.error.retry_after_s if isinstance(event.error, RateLimited) else None
            self._stats.settle(StatsOutcome.REQUEUE, hint, self._now)
        elif event.name == "/updates" and self._checking:
            self._checking = False
            self._on_check_result(NoUpdate("failed", "transport_error", str(event.error), status=0))

    def _on_check_result(
        self, result: UpdateOffer | NoUpdate | RevertToBuiltin | RateLimitHint
    ) -> None:
        launch_check, self._launch_check = self._launch_check, False
        install_check = self.state.install_check_pending
        self.state = replace(self.state, install_check_pending=False)
        if isinstance(result, UpdateOffer):
            self._on_offer(result, immediate=self._applies_now(launch_check, install_check))
        elif isinstance(result, NoUpdate):
            self._on_no_update(result)
        elif isinstance(result, RevertToBuiltin):
            self._emit("updateCheckResult", kind="revert", version=BUILTIN)
            if self.state.current != BUILTIN:
                self._stat("reset", self._version(BUILTIN), self._version(self.state.current))
                self.state = replace(self.state, next=None)
                self._switch_to(BUILTIN)
        else:
            self._on_rate_limited(result)

    def _applies_now(self, launch_check: bool, install_check: bool) -> bool:
        mode = self.config.auto_update
        return (
            mode == "always"
            or (mode == "onLaunch" and launch_check)
            or (mode == "atInstall" and install_check)
        )

    def _on_no_update(self, result: NoUpdate) -> None:
        self._emit(
            "updateCheckResult",
            kind=result.kind,
            error=result.error,
            message=result.message,
            statusCode=result.status,
            version=result.version,
        )
        if result.breaking:
            self._emit("breakingAvailable", version=result.version)
            self._emit("majorAvailable", version=result.version)
        if result.kind == "failed":
            self._emit("downloadFailed", version=self._version(self.state.current))
            self._stat("download_fail")
        else:
            self._emit("noNeedUpdate", bundle=self._bundle_payload(self.state.current))

    def _on_rate_limited(self, result: RateLimitHint) -> None:
        self._emit("updateCheckResult", kind="failed", error=result.error, statusCode=429)
        if result.retry_after_s is not None:
            self.state = replace(self.state, blocked_until=self._now + result.retry_after_s)
        if not self.state.rate_limit_reported:
            self.state = replace(self.state, rate_limit_reported=True)
            self._stat("rate_limit_reached")

    def _refuses(self, offer: UpdateOffer) -> bool:
        if f"{offer.version}:{offer.checksum}" in self.state.rejected_artefacts:
            return True
        if self.config.never_retry_failed_versions:
            return offer.version in self.state.failed_versions
        return any(
            b.version == offer.version and b.status == "error" for b in self.state.bundles.values()
        )

    def _on_offer(self, offer: UpdateOffer, *, immediate: bool) -> None:
        if offer.breaking:
            self._emit("breakingAvailable", version=offer.version)
            self._emit("majorAvailable", version=offer.version)
        if offer.version == self._version(self.state.current) or self._refuses(offer):
            self._emit("noNeedUpdate", bundle=self._bundle_payload(self.state.current))
            return
        for info in list(self.state.bundles.values()):
            if info.version == offer.version and info.status in ("pending", "success"):
                self._apply(info.id, immediate=immediate)
                return
        self._start_download(offer, immediate)

    def _start_download(self, offer: UpdateOffer, immediate: bool) -> None:
        resume = None
        for info in list(self.state.bundles.values()):
            if info.status != "downloading":
                continue
            if (info.version, info.checksum) == (offer.version, offer.checksum):
                resume = info.id
            else:
                self._forget(info.id)
        bundle_id = resume or self._new_bundle_id()
        if resume is None:
            info = BundleInfo(bundle_id, offer.version, "downloading", offer.checksum)
            self.state = add_bundle(self.state, info)
        self._commit()
        self._downloading = bundle_id
        self._apply_when_done = immediate
        self._deciles_sent = set()
        self._download_kind = "manifest" if offer.manifest else "zip"
        self._stat(f"download_{self._download_kind}_start", offer.version)
        self._stat("download_0", offer.version)
        self._emit("download", percent=0, bundle=self._bundle_payload(bundle_id))
        self._out.append(DownloadBundle(bundle_id, offer))

    def _new_bundle_id(self) -> str:
        while True:
            bundle_id = random_id(self._rng)
            if bundle_id not in self.state.bundles:
                return bundle_id

    def _on_progress(self, event: ev.DownloadProgressed) -> None:
        if event.bundle_id != self._downloading:
            return
        version = self.state.bundles[event.bundle_id].version
        for decile in DECILES:
            if decile <= event.percent and decile not in self._deciles_sent:
                self._deciles_sent.add(decile)
                self._stat(f"download_{decile}", version)
        self._emit("download", percent=event.percent, bundle=self._bundle_payload(event.bundle_id))

    def _on_downloaded(self, event: ev.DownloadFinished) -> None:
        if event.bundle_id != self._downloading:
            return
        self._downloading = None
        info = self.state.bundles[event.bundle_id]
        self.state = set_status(self.state, info.id, "pending")
        done = replace(self.state.bundles[info.id], downloaded_at=self._now)
        self.state = replace(self.state, bundles={**self.state.bundles, info.id: done})
        self._stat(f"download_{self._download_kind}_complete", info.version)
        self._stat("download_complete", info.version)
        self._emit("downloadComplete", bundle=self._bundle_payload(info.id))
        self._commit()
        self._apply(info.id, immediate=self._apply_when_done)

    def _apply(self, bundle_id: str, *, immediate: bool) -> None:
        self._emit("updateAvailable", bundle=self._bundle_payload(bundle_id))
        if self.config.auto_update == "onlyDownload":
            return
        if immediate:
            self._switch_to(bundle_id)
        elif self.state.next != bundle_id:
            self.state = replace(self.state, next=bundle_id)
            self._commit()
            self._stat("set_next", self._version(bundle_id))
            self._emit("setNext", bundle=self._bundle_payload(bundle_id))

    def _on_download_failed(self, event: ev.DownloadFailed) -> None:
        if event.bundle_id != self._downloading:
            return
        self._downloading = None
        info = self.state.bundles[event.bundle_id]
        error = event.error
        self._emit("downloadFailed", version=info.version, error=str(error))
        action = getattr(error, "action", None)
        if action:
            self._stat(action, info.version)
        self._stat("download_fail", info.version)
        if isinstance(error, VerificationError):
            artefact = f"{info.version}:{info.checksum}"
            self.state = replace(
                self.state, rejected_artefacts=self.state.rejected_artefacts | {artefact}
            )
        if not isinstance(error, TransportError):
            self._forget(info.id)  # a transport failure keeps the partial download to resume
        self._commit()

    def _flush_stats(self) -> None:
        deadline = self._stats.deadline()
        if not self.config.stats_url or deadline is None or deadline > self._now:
            return
        if self._blocked():
            return
        batch = self._stats.take_batch(self._now)
        self._out.append(SendRequest(self.dialect.stats_request(self.device_info(), batch)))
