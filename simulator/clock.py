"""The run's virtual time: simulated time advances by work, never by the wall clock.

`VirtualTime` is a conservative, time-stepped scheduler. Every participant (a device's user,
the timeline, the shards' synchronisation) is an asyncio task that sleeps only on the run's
virtual time. A step starts at T, the earliest deadline anyone waits for, and releases every
deadline before `T + window_s` (never past the next barrier): those devices run concurrently,
with real HTTP to the real server and real disk work, and each keeps its own exact simulated
time (`DeviceClock.t`) while it works, so a 60 ms latency or a 0.12 s body costs exactly that.
The step ends when every participant is waiting again; then the clock moves on.

Barriers (timeline steps, shard synchronisation) run alone: no device is released past a
barrier before the barrier's work is done. Devices interact only through the server, whose
state changes only at barriers and through each device's own requests, so what a device sees
depends on its own state, its own random streams and the barriers, never on the machine's
speed or on how many devices happened to share a step: the window only sets how much work
runs concurrently (`window_s` is the lookahead, not the time resolution, which is exact).

A step's devices do not all run at once: at most `concurrency` participants run together, the
others start in deadline order as running ones park again. This bounds what the fleet holds
in real time (HTTP connections, open device folders) without changing what any device sees,
since none depends on when, in real time, another one ran.

Real time never enters simulated time: real HTTP and disk work cost nothing but what the
network model says (`simulator.network`), and a `time_scale` cap only slows the steps down
to watch a run live or to pace an external server.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

SIM_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: what device clocks read at t = 0
WINDOW_S = 600.0  # default lookahead of a step, simulated seconds (measured: docs/simulator.md)
HOUSEKEEPING_S = 3600.0  # simulated seconds between two `housekeeping` calls

T = TypeVar("T")


class VirtualTime:
    """One run's simulated clock and the scheduler that advances it.

    `t` is the start of the current step (seconds since the run's t = 0); `now()` reads it as
    epoch seconds for whoever is not a device (the progress line, the timeline).
    """

    def __init__(
        self,
        window_s: float = WINDOW_S,
        epoch: float = SIM_EPOCH,
        cap: float | None = None,
        housekeeping: Callable[[], object] | None = None,
        concurrency: int | None = None,
    ) -> None:
        """`housekeeping`: called between two steps, while nothing runs, at most once every
        `HOUSEKEEPING_S` simulated seconds (the fleet gives free memory back to the kernel).
        `concurrency`: at most this many released participants run at once (None: all)."""
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.window_s = window_s
        self.epoch = epoch
        self.cap = cap  # at most `cap` simulated seconds per real second (None: uncapped)
        self.t = 0.0
        self.horizon = 0.0  # work due before this runs in the current step
        self.steps = 0
        self._devices: list[tuple[float, int, asyncio.Future[None]]] = []
        self._barriers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._running = 0
        self._concurrency = concurrency
        self._ready: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: asyncio.Event | None = None
        self._housekeeping = housekeeping
        self._next_housekeeping = HOUSEKEEPING_S

    def now(self) -> float:
        return self.epoch + self.t

    def clock(self) -> DeviceClock:
        """A clock for one device, starting at the current step."""
        return DeviceClock(self, self.t)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the step clock (for participants that are not devices)."""
        await self.until(self.t + max(0.0, seconds))

    async def until(self, due: float, *, barrier: bool = False) -> None:
        """Return once simulated time `due` is reached. A barrier runs alone in its step;
        a device deadline inside the current step's window returns at once."""
        if not barrier and due < self.horizon:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._barriers if barrier else self._devices, (due, next(self._seq), future))
        self._park()
        try:
            await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                self._running += 1  # never released: `participate` parks it once more
            raise

    def participate(self, work: Awaitable[T]) -> Awaitable[T]:
        """`work` as a participant: from now on, the clock waits for it at every step."""
        self._running += 1
        return self._participant(work)

    async def _participant(self, work: Awaitable[T]) -> T:
        try:
            return await work
        finally:
            self._park()

    def _park(self) -> None:
        self._running -= 1
        self._admit()
        if self._running == 0 and self._idle is not None:
            self._idle.set()

    def _admit(self) -> None:
        """Start released participants, in deadline order, while fewer than `concurrency` run."""
        while self._ready and (self._concurrency is None or self._running < self._concurrency):
            future = self._ready.popleft()
            if not future.cancelled():
                self._running += 1
                future.set_result(None)

    async def run(self) -> None:
        """Advance the clock step by step until nobody waits on it any more."""
        self._idle = asyncio.Event()
        started = time.monotonic()
        while True:
            while self._running:
                self._idle.clear()
                await self._idle.wait()
            if not self._devices and not self._barriers:
                return
            if self._housekeeping is not None and self.t >= self._next_housekeeping:
                self._housekeeping()
                self._next_housekeeping = self.t + HOUSEKEEPING_S
            barrier = self._barriers[0][0] if self._barriers else float("inf")
            first = self._devices[0][0] if self._devices else float("inf")
            if barrier <= first:
                self.t = self.horizon = barrier
                released = [heapq.heappop(self._barriers)[2]]
            else:
                self.t, self.horizon = first, min(first + self.window_s, barrier)
                released = []
                while self._devices and self._devices[0][0] < self.horizon:
                    released.append(heapq.heappop(self._devices)[2])
            self.steps += 1
            if self.cap:
                await asyncio.sleep(started + self.t / self.cap - time.monotonic())
            self._ready.extend(released)
            self._admit()


class DeviceClock:
    """One device's exact simulated time (the agent's injected `Clock`)."""

    __slots__ = ("_time", "t")

    def __init__(self, virtual: VirtualTime, t: float) -> None:
        self._time = virtual
        self.t = t  # seconds since the run's t = 0

    def now(self) -> float:
        return self._time.epoch + self.t

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.t + max(0.0, seconds))

    def parks(self, seconds: float) -> bool:
        """Whether sleeping `seconds` now waits for a later step (rather than returning at once)."""
        return self.t + max(0.0, seconds) >= self._time.horizon

    async def sleep_until(self, due: float) -> None:
        """Wait until simulated time `due` (seconds since t = 0), exactly."""
        due = max(due, self.t)
        await self._time.until(due)
        self.t = due
