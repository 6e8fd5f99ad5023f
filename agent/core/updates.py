"""Update checks, offers, downloads and stats flushes: the network half of the decisions.

An answer to a check becomes an offer to download (unless refused: same version, a version
that failed here, an artefact that failed verification), a quiet "no update", a revert to
builtin, or a rate-limit block. A finished download is applied as the apply mode says.
"""

from __future__ import annotations

from dataclasses import replace

from agent.core import events as ev
from agent.core.backoff import random_id
from agent.core.base import AgentBase
from agent.core.effects import DownloadBundle, SendRequest
from agent.core.lifecycle import BUILTIN, BundleInfo, add_bundle, set_status
from agent.core.retry import record_failure, refused
from agent.core.rollback import Refusal, refusal
from agent.errors import ProtocolError, RateLimited, TransportError, VerificationError
from agent.protocol.base import (
    NoUpdate,
    OutgoingRequest,
    RateLimitHint,
    ReleaseDocument,
    RevertToBuiltin,
    StatsOutcome,
    UpdateOffer,
)

DECILES = range(10, 100, 10)


class UpdateFlow(AgentBase):
    """Checks and downloads; `Agent` adds the lifecycle and the event dispatch."""

    def _start_check(self) -> None:
        if self._checking or self._downloading or not self.config.update_url or self._blocked():
            return
        self._checking = True
        self._out.append(SendRequest(self._check_request()))

    def _check_request(self) -> OutgoingRequest:
        """The check request, built again only when what it describes changed."""
        info = self.device_info()
        if self._last_check is None or self._last_check[0] != info:
            self._last_check = (info, self.dialect.check_request(info))
        return self._last_check[1]

    def _on_response(self, event: ev.ResponseReceived) -> None:
        if event.name == "/stats" and self._stats.in_flight:
            outcome, hint = self.dialect.parse_stats(
                event.status, event.headers, event.body, self._now
            )
            self._stats.settle(outcome, hint, self._now)
            self._stats_changed = True
            if event.status == 429:
                self._block(hint)
        elif event.name == "/updates" and self._checking:
            listed, self._listing_for = self._listing_for, None
            try:
                if listed is None:
                    result = self.dialect.parse_check(
                        event.status, event.headers, event.body, self._now
                    )
                else:
                    result = self.dialect.parse_listing(
                        listed, event.status, event.headers, event.body
                    )
            except ProtocolError as exc:
                result = NoUpdate("failed", "malformed_answer", str(exc), status=event.status)
            if isinstance(result, UpdateOffer) and result.listing_url and result.manifest is None:
                # the offer's file list is a second exchange of the same check (Appflow)
                self._listing_for = result
                self._out.append(
                    SendRequest(self.dialect.listing_request(self.device_info(), result))
                )
                return
            self._checking = False
            self._on_check_result(result)

    def _on_transport_failed(self, event: ev.TransportFailed) -> None:
        if event.name == "/stats" and self._stats.in_flight:
            hint = event.error.retry_after_s if isinstance(event.error, RateLimited) else None
            self._stats.settle(StatsOutcome.REQUEUE, hint, self._now)
        elif event.name == "/updates" and self._checking:
            self._checking = False
            self._listing_for = None
            self._on_check_result(NoUpdate("failed", "transport_error", str(event.error), status=0))

    def _on_check_result(
        self, result: UpdateOffer | NoUpdate | RevertToBuiltin | RateLimitHint
    ) -> None:
        launch_check, self._launch_check = self._launch_check, False
        install_check = self.state.install_check_pending
        if install_check:
            self.state = replace(self.state, install_check_pending=False)
        if isinstance(result, UpdateOffer):
            self._on_offer(result, immediate=self._applies_now(launch_check, install_check))
        elif isinstance(result, NoUpdate):
            self._on_no_update(result)
        elif isinstance(result, RevertToBuiltin):
            self._emit("updateCheckResult", kind="revert", version=BUILTIN)
            if self.state.current != BUILTIN or self.state.next is not None:
                self._revert_to_builtin()
        else:
            self._on_rate_limited(result)

    def _revert_to_builtin(self) -> None:
        """The server points the device at builtin: boot it, drop what it no longer runs."""
        state = self.state
        if state.current != BUILTIN:
            self._stat("reset", self._version(BUILTIN), self._version(state.current))
        self.state = replace(state, current=BUILTIN, next=None)
        for dropped in {state.current, state.next} - {BUILTIN, None, state.fallback}:
            assert dropped is not None
            self._forget(dropped)  # in the same commit as the boot, deleted right after it
        if state.current != BUILTIN:
            self._start_boot()

    def _applies_now(self, launch_check: bool, install_check: bool) -> bool:
        mode = self.config.auto_update
        return (
            mode == "always"
            or (mode == "onLaunch" and launch_check)
            or (mode == "atInstall" and install_check)
        )

    def _on_no_update(self, result: NoUpdate) -> None:
        if self.config.strict_release:
            self._check_freshness(result if result.kind != "failed" else None)
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
        self._block(result.retry_after_s)

    def _refuses(self, offer: UpdateOffer, content: str | None) -> bool:
        failures = self.state.rejected_artefacts.get(f"{offer.version}:{offer.checksum}")
        if refused(failures, self.config, self._now):
            return True
        if content is not None and refused(
            self.state.rejected_content.get(content), self.config, self._now
        ):
            return True  # under any label: a signed checksum's retries are shared
        if self.config.never_retry_failed_versions:
            failed = self.state.failed_content
            if content is not None and content in failed:
                return True  # the content failed, whatever label it comes under now
            # a label alone refuses only when no content was recorded for it (no checksum, or
            # a state written before content was): a relabel cannot poison a genuine label
            return offer.version in self.state.failed_versions - set(failed.values())
        return any(
            b.version == offer.version and b.status == "error" for b in self.state.bundles.values()
        )

    def _runs(self, bundle_id: str, version: str, content: str | None) -> bool:
        """True when `bundle_id` is `version` with this content (or either has no identity)."""
        info = self.state.bundles.get(bundle_id)
        same_content = content is None or info is None or info.content in (None, content)
        return self._version(bundle_id) == version and same_content

    def _on_offer(self, offer: UpdateOffer, *, immediate: bool) -> None:
        if offer.breaking:
            self._emit("breakingAvailable", version=offer.version)
            self._emit("majorAvailable", version=offer.version)
        content = self._content_id(offer)
        if self._runs(self.state.current, offer.version, content) or self._refuses(offer, content):
            if self.config.strict_release:
                self._check_freshness(offer)
            self._emit("noNeedUpdate", bundle=self._bundle_payload(self.state.current))
            return
        refused = self._release_refusal(offer, content) if self.config.strict_release else None
        if refused is None and not self.config.allow_downgrade:
            state = self.state
            refused = refusal(
                offer.version,
                content,
                state.confirmed_content,
                state.highest_confirmed,
                authenticated=self.config.strict_release,
            )
        if refused is not None:
            self._refuse_rollback(offer, refused)
            return
        for info in list(self.state.bundles.values()):
            if info.status in ("pending", "success") and self._runs(
                info.id, offer.version, content
            ):
                self._apply(info.id, immediate=immediate)
                return
        self._start_download(offer, immediate, content)

    def _release_refusal(self, offer: UpdateOffer, content: str | None) -> Refusal | None:
        """Strict mode: the offer must come with a valid signed release document for this app,
        this version and this content, not older than one accepted here, not expired."""
        assert self._open_release is not None
        try:
            document = self._open_release(offer)
        except VerificationError as exc:
            return Refusal(exc.action, exc.reason, {"reason": exc.action})
        problem = None
        if document.app_id != self.identity.app_id or document.version != offer.version:
            problem = "release_mismatch", f"document is for {document.app_id} {document.version}"
        elif offer.manifest is None and (content is None or document.bundle.lower() != content):
            problem = "release_mismatch", "the bundle is not the signed release's bundle"
        elif document.counter < self.state.release_counter:
            problem = "release_replayed", f"release counter {document.counter} is below one seen"
        elif document.expires <= self._now:
            problem = "release_expired", "the release document has expired"
        if problem is not None:
            return Refusal(problem[0], problem[1], {"reason": problem[0]})
        self._accept_release(document)
        return None

    def _accept_release(self, document: ReleaseDocument) -> None:
        self.state = replace(
            self.state,
            release_counter=max(self.state.release_counter, document.counter),
            release_expires=max(self.state.release_expires, document.expires),
        )

    def _check_freshness(self, result: UpdateOffer | NoUpdate | None) -> None:
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
                and document.app_id == self.identity.app_id
                and document.counter >= self.state.release_counter
            ):
                self._accept_release(document)
        expires = self.state.release_expires
        if expires and expires <= self._now:
            self._emit("releaseStale", expired_at=expires)

    def _refuse_rollback(self, offer: UpdateOffer, refused: Refusal) -> None:
        """Refuse content confirmed here offered as a rollback (a replay, relabelled or not, or
        a channel rolled back past it): nothing is fetched; reported once per offer and run."""
        artefact = f"{offer.version}:{offer.checksum}"
        if artefact in self._downgrades_reported:
            self._emit("noNeedUpdate", bundle=self._bundle_payload(self.state.current))
            return
        self._downgrades_reported.add(artefact)
        self._emit(
            "updateCheckResult",
            kind="failed",
            error=refused.error,
            message=refused.message,
            statusCode=200,
            version=offer.version,
        )
        self._emit("downloadFailed", version=offer.version, error=refused.message)
        self._stat("download_fail", offer.version, **refused.metadata)

    def _drop_outdated_next(self) -> None:
        """After a confirmation, a queued bundle the rollback rules now refuse is dropped."""
        state = self.state
        info = state.bundles.get(state.next) if state.next else None
        if info is None or self.config.allow_downgrade:
            return
        if refusal(info.version, info.content, state.confirmed_content, state.highest_confirmed):
            self.state = replace(state, next=None)
            self._forget(info.id)

    def _start_download(self, offer: UpdateOffer, immediate: bool, content: str | None) -> None:
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
            info = BundleInfo(
                bundle_id, offer.version, "downloading", offer.checksum, content=content
            )
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
        artefact = f"{info.version}:{info.checksum}"
        if artefact in self.state.rejected_artefacts:  # a clean transfer after a bad one
            rejected = {k: v for k, v in self.state.rejected_artefacts.items() if k != artefact}
            self.state = replace(self.state, rejected_artefacts=rejected)
        done = replace(self.state.bundles[info.id], downloaded_at=self._now)
        self.state = replace(self.state, bundles={**self.state.bundles, info.id: done})
        self._stat(f"download_{self._download_kind}_complete", info.version)
        self._stat("download_complete", info.version)
        self._emit("downloadComplete", bundle=self._bundle_payload(info.id))
        self._apply(info.id, immediate=self._apply_when_done)  # commits with its slot

    def _apply(self, bundle_id: str, *, immediate: bool) -> None:
        self._emit("updateAvailable", bundle=self._bundle_payload(bundle_id))
        if self.config.auto_update == "onlyDownload":
            return
        stale = self.state.next if self.state.next not in (None, bundle_id) else None
        queue = not immediate and self.state.next != bundle_id
        self.state = replace(self.state, next=None if immediate else bundle_id)
        if stale is not None and stale not in (self.state.current, self.state.fallback):
            self._forget(stale)  # a newer bundle replaces the queued one, in the same commit
        if immediate:
            self._switch_to(bundle_id)
        elif queue:
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
            rejected = dict(self.state.rejected_artefacts)
            rejected[artefact] = record_failure(rejected.get(artefact), self.config, self._now)
            by_content = dict(self.state.rejected_content)
            if info.content is not None:  # the same budget under any label
                failures = by_content.get(info.content)
                by_content[info.content] = record_failure(failures, self.config, self._now)
            self.state = replace(
                self.state, rejected_artefacts=rejected, rejected_content=by_content
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
        batch = self._stats.take_batch(self._now, self.dialect.stats_batch_size)
        self._out.append(SendRequest(self.dialect.stats_request(self.device_info(), batch)))
