"""The blocking driver: `SyncDevice`, for Locust users and scripts; cooperative under gevent.

It is the asyncio driver's twin: the same `DeviceRuntime` makes every decision and touches the
disk, the same `DriverLoop` retries, observes and downloads; this module only performs the
loop's operations (send, stream, sleep, offload) with a `SyncHttpPort` and the injected clock.
Under gevent's monkey-patching, sockets, `time.sleep` and the device lock yield.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, TypeVar

from agent.config import AgentConfig, DeviceIdentity
from agent.core.backoff import RandomSource
from agent.core.events import (
    AppReady,
    AppStarted,
    ChannelStored,
    CheckRequested,
    Event,
    MovedToBackground,
    MovedToForeground,
    TimerFired,
)
from agent.drivers.api import AgentObserver, DeviceStatus, SyncClock, SystemSyncClock
from agent.drivers.http import HttpResponse, SyncHttpPort
from agent.drivers.loop import Done, DriverLoop, Op, Ops, Send, Sleep, Stream, step
from agent.drivers.runtime import DeviceRuntime
from agent.protocol.base import ChannelAnswer, ChannelListing, Dialect, OutgoingRequest

T = TypeVar("T")


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
        self._loop = DriverLoop(runtime)  # its retry state is per call: used under `_lock`
        self._lock = threading.Lock()

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

    def resumable(self, at: float) -> bool:
        """True when this device, closed now and opened again from its folder at `at`, behaves
        as if it had stayed open (see `agent.core.agent.Agent.resumable`): no call running."""
        return not self._lock.locked() and self._rt.agent.resumable(at)

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
        self._loop.closed = True

    def close(self) -> None:
        self._loop.closed = True

    # -- channel_self ----------------------------------------------------------------------

    def set_channel(self, channel: str) -> ChannelAnswer:
        """Ask the server (POST channel_self); store the channel locally when it allows it.

        Raises:
            TransportError: the server could not be reached. ProtocolError: bad answer.
        """
        dialect, info = self._rt.agent.dialect, self._rt.agent.device_info()
        response = self._serialised_exchange(dialect.channel_set_request(info, channel))
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
            self._serialised_exchange(request)
        self._run(ChannelStored(None))

    def get_channel(self) -> ChannelAnswer:
        """PUT channel_self. Raises TransportError / ProtocolError."""
        dialect, info = self._rt.agent.dialect, self._rt.agent.device_info()
        response = self._serialised_exchange(dialect.channel_get_request(info))
        return dialect.parse_channel(response.status, response.body)

    def list_channels(self) -> list[ChannelListing]:
        """GET channel_self. Raises TransportError / ProtocolError."""
        dialect, info = self._rt.agent.dialect, self._rt.agent.device_info()
        response = self._serialised_exchange(dialect.channel_list_request(info))
        return dialect.parse_channel_list(response.status, response.body)

    # -- I/O -------------------------------------------------------------------------------

    def _run(self, event: Event) -> None:
        with self._lock:
            self._drive(self._loop.run(event))

    def _serialised_exchange(self, outgoing: OutgoingRequest) -> HttpResponse:
        """An exchange outside a lifecycle call (channel_self): waits for the one running."""
        with self._lock:
            return self._drive(self._loop.exchange(outgoing))

    def _drive(self, ops: Ops[T]) -> T:
        """Perform the loop's operations until it returns (see `agent.drivers.loop`)."""
        reply, error = None, None
        try:
            while not isinstance(op := step(ops, reply, error), Done):
                reply, error = None, None
                try:
                    reply = self._perform(op)
                except Exception as exc:  # handed back to the loop, where it was raised
                    error = exc
            return op.value
        finally:
            ops.close()

    def _perform(self, op: Op) -> Any:
        if isinstance(op, Send):
            return self._http.send(op.request)
        if isinstance(op, Stream):
            with self._http.stream(op.request) as response:
                op.sink.open(response.status, response.headers)
                for chunk in response.iter_bytes():
                    op.sink.feed(chunk)
            return None
        if isinstance(op, Sleep):
            return self._clock.sleep(op.seconds)
        return op.work()
