"""Retry and jitter schedules as pure generators; the randomness is injected."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Protocol


class RandomSource(Protocol):
    """What the core needs from `random.Random` (which satisfies it)."""

    def random(self) -> float: ...


def jittered_delay(
    rng: RandomSource,
    attempt: int,
    *,
    base_s: float = 1.0,
    cap_s: float = 300.0,
    factor: float = 2.0,
) -> float:
    """The wait before retry `attempt` (1, 2, ...): base*factor**(attempt-1) capped at `cap_s`,
    with "full jitter" in [d/2, d]."""
    delay = min(base_s * factor ** min(attempt - 1, 256), cap_s)
    return delay / 2 + rng.random() * delay / 2


def exponential_jitter(
    rng: RandomSource, *, base_s: float = 1.0, cap_s: float = 300.0, factor: float = 2.0
) -> Iterator[float]:
    """The waits of `jittered_delay` for attempts 1, 2, 3 ..."""
    for attempt in itertools.count(1):
        yield jittered_delay(rng, attempt, base_s=base_s, cap_s=cap_s, factor=factor)


def random_id(rng: RandomSource, length: int = 10) -> str:
    """A random alphanumeric bundle id, as the plugin names bundle folders."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(alphabet[int(rng.random() * len(alphabet))] for _ in range(length))
