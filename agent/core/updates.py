"""Update checks, offers, downloads and stats flushes: the network half of the decisions.

An answer to a check becomes an offer to download (unless refused: same version, a version
that failed here, an artefact that failed verification), a quiet "no update", a revert to
builtin, or a rate-limit block. A finished download is applied as the apply mode says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent.core import events as ev
from agent.core.backoff import RandomSource, random_id
from agent.core.base import Ledger
from agent.core.effects import DownloadBundle, SendRequest
from agent.core.lifecycle import (
    ACTIVITY_TRANSITIONS,
    BUILTIN,
    Activity,
    BundleInfo,
    Move,
    add_bundle,
    advance,
    set_status,
)
from agent.core.retry import record_failure, refused
from agent.core.rollback import Refusal, refusal
from agent.errors import ProtocolError, RateLimited, TransportError, VerificationError
from agent.protocol.base import (
    DeviceInfo,
    Dialect,
    NoUpdate,
    OutgoingRequest,
    RateLimitHint,
    ReleaseDocument,
    RevertToBuiltin,
    StatsOutcome,
    UpdateOffer,
)

DECILES = range(10, 100, 10)


@dataclass
class DownloadJob:
    """The download in flight (activity DOWNLOADING): what to do with it when it lands."""

    bundle_id: str
    immediate: bool  # apply at once when installed (else queue as next)
    kind: str  # "zip" or "manifest", as the stats name it
    deciles_sent: set[int] = field(default_factory=set)


class Updates:
    """Checks and downloads of one device, over its `Ledger`; `Agent` owns one."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        rng: RandomSource,
        dialect: Dialect,
        content_id: Callable[[UpdateOffer], str | None],
        open_release: Callable[[UpdateOffer | NoUpdate], ReleaseDocument] | None,
    ) -> None:
        self._ledger = ledger
        self._rng = rng
        self.dialect = dialect
        self._content_id = content_id  # offer -> content identity (pure)
        # strict mode, or a dialect that verifies signed answers itself (Expo): the release
        self._open_release = open_release
        self.activity = Activity.IDLE
        self.job: DownloadJob | None = None  # set exactly while DOWNLOADING
        self._downgrades_reported: set[str] = set()  # "version:checksum" refused this run
        self._last_check: tuple[DeviceInfo, OutgoingRequest] | None = None  # (info, request)
        self._listing_for: UpdateOffer | None = None  # an offer whose file list is on its way

    def move(self, move: Move) -> None:
        self.activity = advance(self.activity, move)

    @property
    def checking(self) -> bool:
        return self.activity in (Activity.CHECKING, Activity.LAUNCH_CHECKING)

    def resumable(self) -> bool:
        """Nothing in progress and nothing remembered for this run only (see `Agent.resumable`)."""
        return (
            self.activity is Activity.IDLE
            and self._listing_for is None
            and not self._downgrades_reported
        )

    def start_check(self, now: float) -> None:
        if (
            Move.CHECK_SENT not in ACTIVITY_TRANSITIONS[self.activity]
            or not self._ledger.config.update_url
            or self._ledger.blocked(now)
        ):
            return
        self.move(Move.CHECK_SENT)
        self._ledger.out.append(SendRequest(self._check_request()))

    def _check_request(self) -> OutgoingRequest:
        """The check request, built again only when what it describes changed."""
        info = self._ledger.device_info()
        if self._last_check is None or self._last_check[0] != info:
            self._last_check = (info, self.dialect.check_request(info))
        return self._last_check[1]

    def on_response(self, event: ev.ResponseReceived, now: float) -> None:
        if event.name == "/stats" and self._ledger.stats.in_flight:
            outcome, hint = self.dialect.parse_stats(event.status, event.headers, event.body, now)
            self._ledger.stats.settle(outcome, hint, now)
            self._ledger.stats_changed = True
            if event.status == 429:
                self._ledger.block(hint, now)
        elif event.name == "/updates" and self.checking:
            listed, self._listing_for = self._listing_for, None
            try:
                if listed is None:
                    result = self.dialect.parse_check(event.status, event.headers, event.body, now)
                else:  # relative hrefs resolve against where the list came from
                    listed = replace(listed, listing_url=event.url or listed.listing_url)
                    result = self.dialect.parse_listing(
                        listed, event.status, event.headers, event.body
                    )
            except ProtocolError as exc:
                result = NoUpdate("failed", "malformed_answer", str(exc), status=event.status)
            if isinstance(result, UpdateOffer) and result.listing_url and result.manifest is None:
                # the offer's file list is a second exchange of the same check (Appflow)
                self._listing_for = result
                info = self._ledger.device_info()
                self._ledger.out.append(SendRequest(self.dialect.listing_request(info, result)))
                return
            self._on_check_result(now, result)

    def on_transport_failed(self, event: ev.TransportFailed, now: float) -> None:
        if event.name == "/stats" and self._ledger.stats.in_flight:
            hint = event.error.retry_after_s if isinstance(event.error, RateLimited) else None
            self._ledger.stats.settle(StatsOutcome.REQUEUE, hint, now)
        elif event.name == "/updates" and self.checking:
            self._listing_for = None
            self._on_check_result(
                now, NoUpdate("failed", "transport_error", str(event.error), status=0)
            )

    def _on_check_result(
        self, now: float, result: UpdateOffer | NoUpdate | RevertToBuiltin | RateLimitHint
    ) -> None:
        launch_check = self.activity is Activity.LAUNCH_CHECKING
        install_check = self._ledger.state.install_check_pending
        if install_check:
            self._ledger.state = replace(self._ledger.state, install_check_pending=False)
        if isinstance(result, UpdateOffer):
            self._on_offer(now, result, immediate=self._applies_now(launch_check, install_check))
        elif isinstance(result, NoUpdate):
            self._on_no_update(now, result)
        elif isinstance(result, RevertToBuiltin):
            self._on_revert(now, result)
        else:
            self._on_rate_limited(now, result)
        if self.checking:  # nothing to download
            self.move(Move.ANSWERED)

    def _on_revert(self, now: float, result: RevertToBuiltin) -> None:
        if result.counter is not None and self._open_release is not None:
            if result.counter < self._ledger.state.release_counter:
                message = f"revert counter {result.counter} is below a release accepted here"
                self._on_no_update(now, NoUpdate("failed", "release_replayed", message))
                return
            self._ledger.state = replace(self._ledger.state, release_counter=result.counter)
        self._ledger.emit("updateCheckResult", kind="revert", version=BUILTIN)
        if self._ledger.state.current != BUILTIN or self._ledger.state.next is not None:
            self._revert_to_builtin(now)

    def _revert_to_builtin(self, now: float) -> None:
        """The server points the device at builtin: boot it, drop what it no longer runs."""
        state = self._ledger.state
        if state.current != BUILTIN:
            self._ledger.stat(
                now, "reset", self._ledger.version(BUILTIN), self._ledger.version(state.current)
            )
        self._ledger.state = replace(state, current=BUILTIN, next=None)
        for dropped in {state.current, state.next} - {BUILTIN, None, state.fallback}:
            assert dropped is not None
            # in the same commit as the boot, deleted right after it
            self._ledger.forget(dropped, now)
        if state.current != BUILTIN:
            self._ledger.start_boot(now)

    def _applies_now(self, launch_check: bool, install_check: bool) -> bool:
        mode = self._ledger.config.auto_update
        return (
            mode == "always"
            or (mode == "onLaunch" and launch_check)
            or (mode == "atInstall" and install_check)
        )

    def _on_no_update(self, now: float, result: NoUpdate) -> None:
        if self._open_release is not None:
            self._check_freshness(now, result if result.kind != "failed" else None)
        self._ledger.emit(
            "updateCheckResult",
            kind=result.kind,
            error=result.error,
            message=result.message,
            statusCode=result.status,
            version=result.version,
        )
        if result.breaking:
            self._ledger.emit("breakingAvailable", version=result.version)
            self._ledger.emit("majorAvailable", version=result.version)
        if result.kind == "failed":
            self._ledger.emit(
                "downloadFailed", version=self._ledger.version(self._ledger.state.current)
            )
            self._ledger.stat(now, "download_fail")
        else:
            self._ledger.emit(
                "noNeedUpdate", bundle=self._ledger.bundle_payload(self._ledger.state.current)
            )

    def _on_rate_limited(self, now: float, result: RateLimitHint) -> None:
        self._ledger.emit("updateCheckResult", kind="failed", error=result.error, statusCode=429)
        self._ledger.block(result.retry_after_s, now)

    def _refuses(self, now: float, offer: UpdateOffer, content: str | None) -> bool:
        failures = self._ledger.state.rejected_artefacts.get(f"{offer.version}:{offer.checksum}")
        if refused(failures, self._ledger.config, now):
            return True
        if content is not None and refused(
            self._ledger.state.rejected_content.get(content), self._ledger.config, now
        ):
            return True  # under any label: a signed checksum's retries are shared
        if self._ledger.config.never_retry_failed_versions:
            failed = self._ledger.state.failed_content
            if content is not None and content in failed:
                return True  # the content failed, whatever label it comes under now
            # a label alone refuses only when its failure had no content identity (no
            # checksum): a relabel cannot poison a genuine label, even when the same content
            # later fails again under another label
            return offer.version in self._ledger.state.failed_unidentified
        return any(
            b.version == offer.version and b.status == "error"
            for b in self._ledger.state.bundles.values()
        )

    def _runs(self, bundle_id: str, version: str, content: str | None) -> bool:
        """True when `bundle_id` is `version` with this content (or either has no identity)."""
        info = self._ledger.state.bundles.get(bundle_id)
        same_content = content is None or info is None or info.content in (None, content)
        return self._ledger.version(bundle_id) == version and same_content

    def _on_offer(self, now: float, offer: UpdateOffer, *, immediate: bool) -> None:
        if offer.breaking:
            self._ledger.emit("breakingAvailable", version=offer.version)
            self._ledger.emit("majorAvailable", version=offer.version)
        content = offer.package_hash or self._content_id(offer)
        if self._runs(self._ledger.state.current, offer.version, content) or self._refuses(
            now, offer, content
        ):
            if self._open_release is not None:
                self._check_freshness(now, offer)
            self._ledger.emit(
                "noNeedUpdate", bundle=self._ledger.bundle_payload(self._ledger.state.current)
            )
            return
        refused = self._insecure_refusal(offer) or self._build_refusal(offer)
        if refused is None and self._open_release is not None:
            refused = self._release_refusal(now, offer, content)
        if refused is None and not self._ledger.config.allow_downgrade:
            state = self._ledger.state
            refused = refusal(
                offer.version,
                content,
                state.confirmed_content,
                state.highest_confirmed,
                authenticated=self._open_release is not None,
            )
        if refused is not None:
            self._refuse_rollback(now, offer, refused)
            return
        for info in list(self._ledger.state.bundles.values()):
            if info.status in ("pending", "success") and self._runs(
                info.id, offer.version, content
            ):
                self._apply(now, info.id, immediate=immediate)
                return
        self._start_download(now, offer, immediate, content)

    def _insecure_refusal(self, offer: UpdateOffer) -> Refusal | None:
        """An answer fetched over https must not send the download over plain http (a man in
        the middle's downgrade, as a redirect from https to http is refused)."""
        if not self._ledger.config.update_url.lower().startswith("https:"):
            return None
        urls = [offer.url, *(entry.download_url for entry in offer.manifest or ())]
        plain = next((u for u in urls if u and not u.lower().startswith("https:")), None)
        if plain is None:
            return None
        message = f"refused a download over plain http from an https update URL: {plain[:200]}"
        return Refusal("insecure_url", message, {"reason": "insecure_url"})

    def _build_refusal(self, offer: UpdateOffer) -> Refusal | None:
        """An update made for another native build (Expo's runtimeVersion) would run against
        native code it was not built for: refused before anything is fetched."""
        build = self._ledger.identity.version_build
        if offer.native_build is None or offer.native_build == build:
            return None
        message = (
            f"the update is for runtime version {offer.native_build[:64]!r}, this is {build!r}"
        )
        return Refusal("runtime_mismatch", message, {"reason": "runtime_mismatch"})

    def _release_refusal(
        self, now: float, offer: UpdateOffer, content: str | None
    ) -> Refusal | None:
        """Strict mode: the offer must come with a valid signed release document for this app,
        this version and this content, not older than one accepted here, not expired."""
        assert self._open_release is not None
        try:
            document = self._open_release(offer)
        except VerificationError as exc:
            return Refusal(exc.action, exc.reason, {"reason": exc.action})
        problem = None
        if document.app_id != self._ledger.identity.app_id or document.version != offer.version:
            problem = "release_mismatch", f"document is for {document.app_id} {document.version}"
        elif offer.manifest is None and (content is None or document.bundle.lower() != content):
            problem = "release_mismatch", "the bundle is not the signed release's bundle"
        elif document.counter < self._ledger.state.release_counter:
            problem = "release_replayed", f"release counter {document.counter} is below one seen"
        elif document.expires <= now:
            problem = "release_expired", "the release document has expired"
        if problem is not None:
            return Refusal(problem[0], problem[1], {"reason": problem[0]})
        self._accept_release(document)
        return None

    def _accept_release(self, document: ReleaseDocument) -> None:
        self._ledger.state = replace(
            self._ledger.state,
            release_counter=max(self._ledger.state.release_counter, document.counter),
            release_expires=max(self._ledger.state.release_expires, document.expires),
        )

    def _check_freshness(self, now: float, result: UpdateOffer | NoUpdate | None) -> None:
        """Strict mode, an answer that installs nothing: take a fresher valid document it
        carries; once the newest one held has expired, say so (a frozen device, or a
        publisher that stopped re-signing)."""
        assert self._open_release is not None
        if result is not None and result.release is not None:
            try:
                document = self._open_release(result)
            except VerificationError:
                document = None
            if (
                document is not None
                and document.app_id == self._ledger.identity.app_id
                and document.counter >= self._ledger.state.release_counter
            ):
                self._accept_release(document)
        expires = self._ledger.state.release_expires
        if expires and expires <= now:
            self._ledger.emit("releaseStale", expired_at=expires)

    def _refuse_rollback(self, now: float, offer: UpdateOffer, refused: Refusal) -> None:
        """Refuse an offer (content confirmed here offered as a rollback, a replay, relabelled or
        not, a channel rolled back past it, or another build's update): nothing is fetched;
        reported once per offer and run."""
        artefact = f"{offer.version}:{offer.checksum}"
        if artefact in self._downgrades_reported:
            self._ledger.emit(
                "noNeedUpdate", bundle=self._ledger.bundle_payload(self._ledger.state.current)
            )
            return
        self._downgrades_reported.add(artefact)
        self._ledger.emit(
            "updateCheckResult",
            kind="failed",
            error=refused.error,
            message=refused.message,
            statusCode=200,
            version=offer.version,
        )
        self._ledger.emit("downloadFailed", version=offer.version, error=refused.message)
        self._ledger.stat(now, "download_fail", offer.version, **refused.metadata)

    def drop_outdated_next(self, now: float) -> None:
        """After a confirmation, a queued bundle the rollback rules now refuse is dropped."""
        state = self._ledger.state
        info = state.bundles.get(state.next) if state.next else None
        if info is None or self._ledger.config.allow_downgrade:
            return
        if refusal(info.version, info.content, state.confirmed_content, state.highest_confirmed):
            self._ledger.state = replace(state, next=None)
            self._ledger.forget(info.id, now)

    def _start_download(
        self, now: float, offer: UpdateOffer, immediate: bool, content: str | None
    ) -> None:
        resume = None
        for info in list(self._ledger.state.bundles.values()):
            if info.status != "downloading":
                continue
            if (info.version, info.checksum) == (offer.version, offer.checksum):
                resume = info.id
            else:
                self._ledger.forget(info.id, now)
        bundle_id = resume or self._new_bundle_id()
        if resume is None:
            info = BundleInfo(
                bundle_id, offer.version, "downloading", offer.checksum, content=content
            )
            self._ledger.state = add_bundle(self._ledger.state, info)
        self._ledger.commit()
        self.move(Move.DOWNLOAD_STARTED)
        self.job = DownloadJob(bundle_id, immediate, "manifest" if offer.manifest else "zip")
        self._ledger.stat(now, f"download_{self.job.kind}_start", offer.version)
        self._ledger.stat(now, "download_0", offer.version)
        self._ledger.emit("download", percent=0, bundle=self._ledger.bundle_payload(bundle_id))
        self._ledger.out.append(DownloadBundle(bundle_id, offer))

    def _new_bundle_id(self) -> str:
        while True:
            bundle_id = random_id(self._rng)
            if bundle_id not in self._ledger.state.bundles:
                return bundle_id

    def _ends_job(self, bundle_id: str) -> DownloadJob | None:
        """The job `bundle_id` names, now ended (None: an event of no download in flight)."""
        job = self.job
        if job is None or job.bundle_id != bundle_id:
            return None
        self.job = None
        self.move(Move.DOWNLOAD_ENDED)
        return job

    def on_progress(self, event: ev.DownloadProgressed, now: float) -> None:
        job = self.job
        if job is None or event.bundle_id != job.bundle_id:
            return
        version = self._ledger.state.bundles[event.bundle_id].version
        for decile in DECILES:
            if decile <= event.percent and decile not in job.deciles_sent:
                job.deciles_sent.add(decile)
                self._ledger.stat(now, f"download_{decile}", version)
        self._ledger.emit(
            "download", percent=event.percent, bundle=self._ledger.bundle_payload(event.bundle_id)
        )

    def on_downloaded(self, event: ev.DownloadFinished, now: float) -> None:
        job = self._ends_job(event.bundle_id)
        if job is None:
            return
        info = self._ledger.state.bundles[event.bundle_id]
        self._ledger.state = set_status(self._ledger.state, info.id, "pending")
        artefact = f"{info.version}:{info.checksum}"
        if artefact in self._ledger.state.rejected_artefacts:  # a clean transfer after a bad one
            rejected = {
                k: v for k, v in self._ledger.state.rejected_artefacts.items() if k != artefact
            }
            self._ledger.state = replace(self._ledger.state, rejected_artefacts=rejected)
        done = replace(self._ledger.state.bundles[info.id], downloaded_at=now)
        self._ledger.state = replace(
            self._ledger.state, bundles={**self._ledger.state.bundles, info.id: done}
        )
        self._ledger.stat(now, f"download_{job.kind}_complete", info.version)
        self._ledger.stat(now, "download_complete", info.version)
        self._ledger.emit("downloadComplete", bundle=self._ledger.bundle_payload(info.id))
        self._apply(now, info.id, immediate=job.immediate)  # commits with its slot

    def _apply(self, now: float, bundle_id: str, *, immediate: bool) -> None:
        self._ledger.emit("updateAvailable", bundle=self._ledger.bundle_payload(bundle_id))
        if self._ledger.config.auto_update == "onlyDownload":
            return
        stale = (
            self._ledger.state.next if self._ledger.state.next not in (None, bundle_id) else None
        )
        queue = not immediate and self._ledger.state.next != bundle_id
        self._ledger.state = replace(self._ledger.state, next=None if immediate else bundle_id)
        if stale is not None and stale not in (
            self._ledger.state.current,
            self._ledger.state.fallback,
        ):
            self._ledger.forget(
                stale, now
            )  # a newer bundle replaces the queued one, in the same commit
        if immediate:
            self._ledger.switch_to(bundle_id, now)
        elif queue:
            self._ledger.commit()
            self._ledger.stat(now, "set_next", self._ledger.version(bundle_id))
            self._ledger.emit("setNext", bundle=self._ledger.bundle_payload(bundle_id))

    def on_download_failed(self, event: ev.DownloadFailed, now: float) -> None:
        if self._ends_job(event.bundle_id) is None:
            return
        info = self._ledger.state.bundles[event.bundle_id]
        error = event.error
        self._ledger.emit("downloadFailed", version=info.version, error=str(error))
        action = getattr(error, "action", None)
        if action:
            self._ledger.stat(now, action, info.version)
        self._ledger.stat(now, "download_fail", info.version)
        if isinstance(error, VerificationError):
            artefact = f"{info.version}:{info.checksum}"
            rejected = dict(self._ledger.state.rejected_artefacts)
            rejected[artefact] = record_failure(rejected.get(artefact), self._ledger.config, now)
            by_content = dict(self._ledger.state.rejected_content)
            if info.content is not None:  # the same budget under any label
                failures = by_content.get(info.content)
                by_content[info.content] = record_failure(failures, self._ledger.config, now)
            self._ledger.state = replace(
                self._ledger.state, rejected_artefacts=rejected, rejected_content=by_content
            )
        if not isinstance(error, TransportError):
            self._ledger.forget(
                info.id, now
            )  # a transport failure keeps the partial download to resume
        self._ledger.commit()

    def flush_stats(self, now: float) -> None:
        deadline = self._ledger.stats.deadline()
        if not self._ledger.config.stats_url or deadline is None or deadline > now:
            return
        if self._ledger.blocked(now):
            return
        batch = self._ledger.stats.take_batch(now, self.dialect.stats_batch_size)
        self._ledger.out.append(
            SendRequest(self.dialect.stats_request(self._ledger.device_info(), batch))
        )
