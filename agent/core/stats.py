"""The pending stats queue: at most 200 events, one batch in flight, at most one POST a second.

Events stay in the queue until the server took or refused their batch, so a kill during a
flush sends them again (at least once). 429/408/5xx and transport failures put the batch back
and delay the next flush (the server's hint, else exponential backoff with jitter).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from agent.core.backoff import RandomSource, exponential_jitter
from agent.protocol.base import StatEvent, StatsOutcome

MAX_PENDING = 200
FLUSH_INTERVAL_S = 1.0
BATCH_SIZE = 100


class StatsQueue:
    def __init__(self, events: Sequence[StatEvent], rng: RandomSource) -> None:
        self.events: list[StatEvent] = list(events)[-MAX_PENDING:]
        self._next_seq = max((e.seq for e in self.events), default=-1) + 1
        self._in_flight: frozenset[int] | None = None
        self._not_before = float("-inf")
        self._rng = rng
        self._backoff: Iterator[float] | None = None

    def add(
        self,
        action: str,
        version_name: str,
        now: float,
        old_version_name: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> StatEvent:
        event = StatEvent(
            self._next_seq, action, version_name, int(now * 1000), old_version_name, metadata or {}
        )
        self._next_seq += 1
        self.events.append(event)
        if len(self.events) > MAX_PENDING:  # the oldest event gives way, as in the plugin
            del self.events[0]
        return event

    @property
    def in_flight(self) -> bool:
        return self._in_flight is not None

    def settled_by(self, at: float) -> bool:
        """True when a queue loaded from disk at `at` behaves as this one: no batch in flight,
        no backoff running, the spacing after the last batch over by `at` (the sequence
        numbers, local to the device, may start again)."""
        return self._in_flight is None and self._backoff is None and self._not_before <= at

    def deadline(self) -> float | None:
        """When the next batch may go, or None when there is nothing to send."""
        if not self.events or self._in_flight is not None:
            return None
        return self._not_before

    def take_batch(self, now: float, size: int = BATCH_SIZE) -> list[StatEvent]:
        """Mark the oldest `size` events as in flight (plugins 6 and 7 send one per POST).

        Raises:
            RuntimeError: a batch already is in flight.
        """
        if self._in_flight is not None:
            raise RuntimeError("a stats batch is already in flight")
        batch = self.events[:size]
        self._in_flight = frozenset(e.seq for e in batch)
        self._not_before = now + FLUSH_INTERVAL_S
        return batch

    def settle(self, outcome: StatsOutcome, retry_after_s: float | None, now: float) -> None:
        """Apply the server's verdict on the batch in flight."""
        sent = self._in_flight or frozenset()
        self._in_flight = None
        if outcome is StatsOutcome.REQUEUE:
            if self._backoff is None:
                self._backoff = exponential_jitter(self._rng, base_s=2.0, cap_s=600.0)
            delay = max(retry_after_s or 0.0, next(self._backoff))
            self._not_before = max(self._not_before, now + delay)
            return
        self._backoff = None
        self.events = [e for e in self.events if e.seq not in sent]
