"""The blocking driver: `SyncDevice`, for Locust users and scripts; cooperative under gevent.

It is the asyncio driver's twin: the same `DeviceRuntime` makes every decision and touches the
disk; this module only moves bytes through a `SyncHttpPort` (with tenacity retries) and sleeps
on the injected clock. Under gevent's monkey-patching, sockets and `time.sleep` yield.
"""

from __future__ import annotations

import time
from pathlib import Path

from tenacity import Retrying

from agent.config import AgentConfig, DeviceIdentity
from agent.core.backoff import RandomSource
from agent.core.effects import DownloadBundle, SendRequest
from agent.core.events import (
    AppReady,
    AppStarted,
    ChannelStored,
    CheckRequested,
    Event,
    MovedToBackground,
    MovedToForeground,
    ResponseReceived,
    TimerFired,
    TransportFailed,
)
from agent.drivers.api import AgentObserver, DeviceStatus, SyncClock, SystemSyncClock
from agent.drivers.fetch import Transfer
from agent.drivers.http import HttpResponse, SyncHttpPort
from agent.drivers.runtime import DeviceRuntime, IoEffect, ServerBusy
from agent.errors import AgentError, TransportError
from agent.protocol.base import ChannelAnswer, ChannelListing, Dialect, OutgoingRequest


class SyncDevice:
    """One device driven by blocking calls. Create with `SyncDevice.open(...)`.

    Same API as `AsyncDevice`, without `await`. The HTTP port belongs to the caller.

    Every lifecycle method runs what it triggers (checks, downloads, commits) to completion.
    Network, server and verification failures never raise: they become plugin events, stats
    and state. They raise only `LocalError` (the device's disk failed; the device stays
    usable) and `RuntimeError` once the device was killed or closed.
    """

    def __init__(self, runtime: DeviceRuntime, http: SyncHttpPort, clock: SyncClock) -> None:
        self._rt = runtime
        self._http = http
        self._clock = clock
        self._closed = False
        self._retrying = Retrying(sleep=clock.sleep, **runtime.retry_policy())  # one per device

    @classmethod
    def open(
        cls,
        folder: Path,
        config: AgentConfig,
        identity: DeviceIdentity,
        http: SyncHttpPort,
        *,
        clock: SyncClock | None = None,
        rng: RandomSource | None = None,
        observer: AgentObserver | None = None,
        durable: bool = True,
        dialect: Dialect | None = None,
    ) -> SyncDevice:
        """Open (or create) the device stored in `folder`, repairing it after any kill.

        `durable=False` skips fsync on commits: still safe against kills, not power loss
        (for simulated fleets, see `agent.store.atomic_write`). `dialect`: the server protocol
        (default: the one `config.dialect` names).

        Raises:
            LocalError: the folder cannot be created or its state is corrupt.
            PublicKeyError: `config.public_key` is not a usable key.
        """
        clock = clock or SystemSyncClock()
        runtime = DeviceRuntime(
            Path(folder),
            config,
            identity,
            now=clock.now,
            rng=rng,
            observer=observer,
            durable=durable,
            dialect=dialect,
        )
        return cls(runtime, http, clock)

    # -- lifecycle -------------------------------------------------------------------------

    def launch(self) -> None:
        """Cold start: roll back an unconfirmed boot, apply a queued bundle, boot, check.

        Raises:
            LocalError: the disk failed. RuntimeError: the device was killed or closed.
        """
        self._run(AppStarted())

    def notify_app_ready(self, boot_id: int | None = None) -> None:
        """The web app is up (`notifyAppReady()`); pass the boot id it was started as.

        Raises:
            LocalError: the disk failed. RuntimeError: the device was killed or closed.
        """
        self._run(AppReady(boot_id))

    def foreground(self) -> None:
        """The app comes to the foreground: check, download, apply as the mode says.

        Raises:
            LocalError: the disk failed. RuntimeError: the device was killed or closed.
        """
        self._run(MovedToForeground())

    def background(self) -> None:
        """The app goes to the background: apply the queued bundle.

        Raises:
            LocalError: the disk failed. RuntimeError: the device was killed or closed.
        """
        self._run(MovedToBackground())

    def check_for_update(self) -> None:
        """Check for an update now (also in `off` mode).

        Raises:
            LocalError: the disk failed. RuntimeError: the device was killed or closed.
        """
        self._run(CheckRequested())

    def run_timers(self) -> None:
        """Fire what is due: app-ready timeout, stats flush, periodic check.

        Raises:
            LocalError: the disk failed. RuntimeError: the device was killed or closed.
        """
        deadline = self._rt.agent.next_deadline()
        if deadline is not None and deadline <= self._clock.now():
            self._run(TimerFired())

    def next_deadline(self) -> float | None:
        return self._rt.agent.next_deadline()

    def flush_stats(self, max_wait_s: float = 5.0) -> bool:
        """Send the pending stats now (waiting for the 1 s spacing); True when none are left.

        Raises:
            LocalError: the disk failed. RuntimeError: the device was killed or closed.
        """
        give_up = self._clock.now() + max_wait_s
        while self._rt.agent.pending_stats:
            deadline = self._rt.agent.stats_deadline()
            if deadline is None or deadline > give_up:
                return False
            self._clock.sleep(max(0.0, deadline - self._clock.now()))
            self._run(TimerFired())
        return True

    def status(self) -> DeviceStatus:
        return self._rt.status()

    def kill(self) -> None:
        """The process dies: nothing more runs; reopen the folder to boot again.

        A call interrupted by anything but an `AgentError` (a cancellation, a bug) closes the
        device the same way.
        """
        self._closed = True

    def close(self) -> None:
        self._closed = True

    # -- channel_self ----------------------------------------------------------------------

    def set_channel(self, channel: str) -> ChannelAnswer:
        """Ask the server (POST channel_self); store the channel locally when it allows it.

        Raises:
            TransportError: the server could not be reached. ProtocolError: bad answer.
        """
        dialect, info = self._rt.agent.dialect, self._rt.agent.device_info()
        response = self._exchange(dialect.channel_set_request(info, channel))
        answer = self._rt.channel_set_answer(response, channel)
        if answer.allowed and dialect.stores_channel_locally:  # else the server keeps it
            self._run(ChannelStored(channel))
        return answer

    def unset_channel(self) -> None:
        """Forget the locally stored channel; plugins before 7.34.0 (plugin-6) also ask the
        server to drop its override (DELETE channel_self). Raises TransportError."""
        dialect, info = self._rt.agent.dialect, self._rt.agent.device_info()
        request = dialect.channel_unset_request(info)
        if request is not None:
            self._exchange(request)
        self._run(ChannelStored(None))

    def get_channel(self) -> ChannelAnswer:
        """PUT channel_self. Raises TransportError / ProtocolError."""
        dialect, info = self._rt.agent.dialect, self._rt.agent.device_info()
        response = self._exchange(dialect.channel_get_request(info))
        return dialect.parse_channel(response.status, response.body)

    def list_channels(self) -> list[ChannelListing]:
        """GET channel_self. Raises TransportError / ProtocolError."""
        dialect, info = self._rt.agent.dialect, self._rt.agent.device_info()
        response = self._exchange(dialect.channel_list_request(info))
        return dialect.parse_channel_list(response.status, response.body)

    # -- I/O -------------------------------------------------------------------------------

    def _run(self, event: Event) -> None:
        if self._closed:
            raise RuntimeError("this device was killed or closed; open it again")
        flow = self._rt.flow(event)
        try:
            effect = next(flow)
            while True:
                effect = flow.send(self._perform(effect))
        except StopIteration:
            pass
        except AgentError:
            raise  # a local failure: the next commit writes the whole state again
        except BaseException:
            self._closed = True  # killed, cancelled or a bug: reopen the folder
            raise

    def _perform(self, effect: IoEffect) -> list[Event]:
        if isinstance(effect, SendRequest):
            name = effect.request.name
            try:
                response = self._exchange(effect.request)
            except TransportError as exc:
                return [TransportFailed(name, exc)]
            return [ResponseReceived(name, response.status, response.headers, response.body)]
        return self._download(effect)

    def _exchange(self, outgoing: OutgoingRequest) -> HttpResponse:
        request = self._rt.http_request(outgoing)
        try:
            for attempt in self._retrying:
                with attempt:
                    started = time.perf_counter()
                    try:
                        response = self._http.send(request)
                    except TransportError as exc:
                        self._rt.observe(outgoing.name, request, None, started, 0, exc)
                        raise
                    self._rt.observe(
                        outgoing.name, request, response.status, started, len(response.body), None
                    )
                    return self._rt.check_answer(response)
        except ServerBusy as busy:
            return busy.response
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _download(self, effect: DownloadBundle) -> list[Event]:
        fetch = self._rt.fetch(effect)
        try:
            for transfer in fetch.transfers():
                self._transfer(transfer)
            fetch.install()
        except AgentError as exc:
            return self._rt.download_failed(fetch, exc)
        finally:
            fetch.close()
        return self._rt.installed(effect.bundle_id)

    def _transfer(self, transfer: Transfer) -> None:
        for attempt in self._retrying:
            with attempt:
                request = transfer.request()
                started, size, status = time.perf_counter(), 0, None
                try:
                    with self._http.stream(request) as response:
                        status = response.status
                        transfer.open(response.status, response.headers)
                        for chunk in response.iter_bytes():
                            size += len(chunk)
                            transfer.feed(chunk)
                    transfer.complete()
                except AgentError as exc:
                    self._rt.observe(transfer.name, request, status, started, size, exc)
                    raise
                self._rt.observe(transfer.name, request, status, started, size, None)
