"""What both drivers share: the store, the core, the local effects and the retry policy.

`DeviceRuntime.flow(event)` is a generator (like httpx's `auth_flow`): it feeds the core,
performs every local effect itself (commits, deletes, observer calls) and yields only the two
effects that need the network, `SendRequest` and `DownloadBundle`. The asyncio and blocking
drivers each drive it with their own I/O and send back the resulting events, so no decision
and no disk handling is written twice.
"""

from __future__ import annotations

import functools
import random
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tenacity import retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from agent.config import AgentConfig, DeviceIdentity
from agent.core.agent import Agent
from agent.core.backoff import RandomSource, jittered_delay
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
from agent.core.events import DownloadFailed, DownloadFinished, DownloadProgressed, Event
from agent.core.lifecycle import BUILTIN
from agent.drivers.api import AgentObserver, BundleView, DeviceStatus
from agent.drivers.delta import ManifestFetch
from agent.drivers.fetch import BundleFetch, Fetch
from agent.drivers.http import (
    DeadlinePassed,
    HttpRequest,
    HttpResponse,
    InsecureRedirect,
    InvalidUrl,
    TlsVerifyFailed,
)
from agent.errors import (
    AgentError,
    DownloadStopped,
    LocalError,
    TransportError,
    VerificationError,
)
from agent.protocol.base import (
    ChannelAnswer,
    Dialect,
    NoUpdate,
    OutgoingRequest,
    ReleaseDocument,
    UpdateOffer,
)
from agent.protocol.capgo import retry_hint
from agent.protocol.registry import dialect_for, dialect_spec
from agent.security.keys import PublicKey, load_public_key
from agent.security.release import verified_release
from agent.security.verify import offer_content_id
from agent.store import DeviceStore, FreeSpace, disk_free

IoEffect = SendRequest | DownloadBundle
MAX_IN_PROCESS_WAIT_S = 60.0
"""A Retry-After longer than this ends the attempts; the core's own block takes over."""


class ServerBusy(TransportError):
    """An answer worth retrying (408, 5xx): retried, then handed to the core as it is."""

    def __init__(self, response: HttpResponse, retry_after_s: float | None) -> None:
        super().__init__(f"server answered HTTP {response.status}")
        self.response = response
        self.retry_after_s = retry_after_s


class _JitteredWait(wait_base):
    """Exponential backoff with jitter (0.5 s, 1 s, 2 s ... each in [d/2, d]), honouring a
    server hint (`retry_after_s` of the error) when it is longer."""

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng

    def __call__(self, retry_state: Any) -> float:
        delay = jittered_delay(self._rng, retry_state.attempt_number, base_s=0.5, cap_s=30.0)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        hint = getattr(error, "retry_after_s", None)
        return max(delay, float(hint)) if isinstance(hint, int | float) else delay


def _retryable(error: BaseException) -> bool:
    """Transport failures are retried, except those a second try cannot fix (a certificate
    that does not verify, a refused download or redirect, an unusable URL, a passed deadline)
    and hints longer than we wait in-process."""
    if not isinstance(error, TransportError) or isinstance(
        error, DownloadStopped | TlsVerifyFailed | InsecureRedirect | InvalidUrl | DeadlinePassed
    ):
        return False
    hint = getattr(error, "retry_after_s", None)
    return hint is None or hint <= MAX_IN_PROCESS_WAIT_S


class _Borrowed(AgentObserver):
    """An observer whose hooks may be set one by one (no `__slots__`: its instances have a
    dict, unlike `AgentObserver`'s)."""


def _complete(observer: object | None) -> AgentObserver:
    """An observer with every hook: the caller's where it has one, no-ops elsewhere."""
    if isinstance(observer, AgentObserver):
        return observer
    full = _Borrowed()
    for hook in ("on_request", "on_event", "on_stat", "on_retry"):
        if callable(getattr(observer, hook, None)):
            setattr(full, hook, getattr(observer, hook))
    return full


class DeviceRuntime:
    """One device's store, core and observer, used by exactly one driver."""

    def __init__(
        self,
        folder: Path,
        config: AgentConfig,
        identity: DeviceIdentity,
        *,
        now: Callable[[], float],
        rng: RandomSource | None,
        observer: AgentObserver | None,
        durable: bool = True,
        dialect: Dialect | None = None,
        free_space: FreeSpace = disk_free,
    ) -> None:
        self.config = config
        self.now = now
        self.rng = rng or random.Random()
        self.observer = _complete(observer)
        key_text = config.public_key if dialect_spec(config.dialect).uses_key else None
        self.public_key: PublicKey | None = load_public_key(key_text) if key_text else None
        self.store, state, stats = DeviceStore.open(folder, durable=durable, free_space=free_space)
        spoken = dialect or dialect_for(config)
        self.agent = Agent(
            config,
            identity,
            state,
            stats,
            rng=self.rng,
            dialect=spoken,
            key_id=self.public_key.key_id if self.public_key else None,
            content_id=(
                functools.partial(offer_content_id, public_key=self.public_key)
                if self.public_key
                else None
            ),
            open_release=(
                self._open_release
                # a dialect that verifies signed releases itself says so (Expo, signed)
                if config.strict_release or getattr(spoken, "verifies_releases", False)
                else None
            ),
        )
        self._deferred: list[IoEffect] = []

    def _open_release(self, answer: UpdateOffer | NoUpdate) -> ReleaseDocument:
        """The verified release document of an answer. A dialect that verified the answer's
        signature itself (Expo) hands over a `ReleaseDocument` (no answer's JSON can be one),
        bound here to this app: its certificate is the app's own.

        Raises:
            VerificationError: no valid release document.
        """
        if isinstance(answer.release, ReleaseDocument):
            return replace(answer.release, app_id=self.agent.identity.app_id)
        if self.public_key is None:
            raise VerificationError("signature_required", "the answer carries no signed release")
        manifest = answer.manifest if isinstance(answer, UpdateOffer) else None
        return verified_release(answer.release, manifest, self.public_key)

    def retry_policy(self) -> dict[str, Any]:
        """Keyword arguments for tenacity's (Async)Retrying; add `sleep=` from the clock."""
        return {
            "stop": stop_after_attempt(self.config.transport_attempts),
            "wait": _JitteredWait(self.rng),
            "retry": retry_if_exception(_retryable),
            "reraise": True,
            "before_sleep": self._retrying,
        }

    def _retrying(self, retry_state: Any) -> None:
        """tenacity's before_sleep: tell the observer the attempt it saw will be retried."""
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, AgentError):
            delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
            self.observer.on_retry(error, float(delay))

    def flow(self, event: Event) -> Generator[IoEffect, list[Event], None]:
        """Handle `event` and everything it leads to; yields the effects needing the network."""
        queue: deque[Event] = deque([event])
        try:
            while queue:
                for effect in self.agent.handle(queue.popleft(), self.now()):
                    if isinstance(effect, SendRequest | DownloadBundle):
                        queue.extend((yield effect))
                        while self._deferred:
                            queue.extend((yield self._deferred.pop(0)))
                    else:
                        self._perform(effect)
        finally:
            self._commit(None)

    def _commit(self, effect: CommitState | CommitStats | None) -> None:
        """Perform a commit (None: flush what a store that is not durable holds); the core
        learns of a failed one."""
        try:
            if isinstance(effect, CommitState):
                self.store.commit_state(effect.state)
            elif isinstance(effect, CommitStats):
                self.store.commit_stats(effect.events)
            else:
                self.store.flush()
        except LocalError:
            self.agent.commit_failed()
            raise

    def _perform(self, effect: Effect) -> None:
        if isinstance(effect, CommitState | CommitStats):
            self._commit(effect)
        elif isinstance(effect, DeleteBundle):
            self.store.delete_bundle(effect.bundle_id)
        elif isinstance(effect, ReportStat):
            self.observer.on_stat(effect.action, effect.version_name)
        elif isinstance(effect, EmitEvent):
            self.observer.on_event(effect.name, effect.payload)
        elif isinstance(effect, ReloadApp):
            payload = {"boot_id": effect.boot_id, "bundle": effect.bundle_id}
            self.observer.on_event("appReloaded", payload | {"version": effect.version})
        else:  # SendRequest / DownloadBundle arriving outside flow()
            self._deferred.append(effect)

    def _progress(self, bundle_id: str, percent: int) -> None:
        for effect in self.agent.handle(DownloadProgressed(bundle_id, percent), self.now()):
            self._perform(effect)

    def fetch(self, effect: DownloadBundle) -> Fetch:
        """A download for `effect` (delta when the offer has a manifest); progress reaches the
        core as it happens."""

        def progress(percent: int) -> None:
            self._progress(effect.bundle_id, percent)

        args = (self.store, effect.bundle_id, effect.offer, self.config, self.public_key)
        if not effect.offer.manifest:
            check = getattr(self.agent.dialect, "check_unpacked", None)
            return BundleFetch(
                *args,
                now=self.now,
                progress=progress,
                check_unpacked=functools.partial(check, effect.offer) if check else None,
            )
        state = self.agent.state
        installed = [
            self.store.bundle_dir(b)
            for b in dict.fromkeys((state.current, state.fallback))
            if b != BUILTIN
        ]
        return ManifestFetch(*args, now=self.now, progress=progress, reuse_from=installed)

    def download_failed(self, fetch: Fetch, error: AgentError) -> list[Event]:
        """The events of a failed download. A disk failure frees the download's files at once:
        the state commit that forgets the bundle needs room on that disk too."""
        if isinstance(error, LocalError):
            fetch.close()
            self.store.delete_bundle(fetch.bundle_id)
        return [DownloadFailed(fetch.bundle_id, error)]

    @staticmethod
    def installed(bundle_id: str) -> list[Event]:
        return [DownloadProgressed(bundle_id, 90), DownloadFinished(bundle_id)]

    def http_request(self, request: OutgoingRequest) -> HttpRequest:
        """The request of one exchange: each attempt ends within `exchange_timeout_s` of when
        the HTTP backend begins it (real monotonic time, like the download deadline)."""
        return HttpRequest(
            request.method,
            request.url,
            request.headers,
            request.body,
            timeout_s=self.config.response_timeout_s,
            budget_s=self.config.exchange_timeout_s,
        )

    def channel_set_answer(self, response: HttpResponse, channel: str) -> ChannelAnswer:
        """Parse a channel_self set answer; a refused private channel emits `channelPrivate`.

        Raises:
            ProtocolError: the answer is malformed.
        """
        answer = self.agent.dialect.parse_channel(response.status, response.body)
        if answer.private:
            self.observer.on_event(
                "channelPrivate", {"channel": channel, "message": answer.message}
            )
        return answer

    def check_answer(self, response: HttpResponse) -> HttpResponse:
        """Raise `ServerBusy` for an answer worth retrying (408, 5xx); else return it."""
        if response.status == 408 or response.status >= 500:
            raise ServerBusy(response, retry_hint(response.headers, None, self.now()))
        return response

    def observe(
        self,
        name: str,
        request: HttpRequest,
        status: int | None,
        started: float,
        size: int,
        error: AgentError | None,
    ) -> None:
        elapsed = time.perf_counter() - started
        self.observer.on_request(name, request.method, request.url, status, elapsed, size, error)

    def status(self) -> DeviceStatus:
        state = self.agent.state

        def view(bundle_id: str) -> BundleView:
            if bundle_id == BUILTIN:
                return BundleView(BUILTIN, self.agent.identity.version_build, "success", None)
            info = state.bundles[bundle_id]
            return BundleView(info.id, info.version, info.status, self.store.bundle_dir(info.id))

        return DeviceStatus(
            current=view(state.current),
            next=view(state.next) if state.next else None,
            fallback=view(state.fallback),
            bundles=tuple(view(b) for b in state.bundles),
            failed_versions=tuple(sorted(state.failed_versions)),
            rejected_artefacts=tuple(sorted(state.rejected_artefacts)),
            boot_id=state.boot.id if state.boot else None,
            boot_confirmed=bool(state.boot and state.boot.confirmed),
            channel=state.channel or self.config.default_channel,
            blocked_until=state.blocked_until,
            pending_stats=len(self.agent.pending_stats),
            highest_confirmed=state.highest_confirmed,
        )
