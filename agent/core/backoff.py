"""Retry and jitter schedules as pure generators; the randomness is injected."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class RandomSource(Protocol):
    """What the core needs from `random.Random` (which satisfies it)."""

    def random(self) -> float: ...


def exponential_jitter(
    rng: RandomSource, *, base_s: float = 1.0, cap_s: float = 300.0, factor: float = 2.0
) -> Iterator[float]:
    """Delays base, base*factor, ... capped at `cap_s`, each with "full jitter" in [d/2, d]."""
    delay = base_s
    while True:
        yield delay / 2 + rng.random() * delay / 2
        delay = min(delay * factor, cap_s)


def random_id(rng: RandomSource, length: int = 10) -> str:
    """A random alphanumeric bundle id, as the plugin names bundle folders."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(alphabet[int(rng.random() * len(alphabet))] for _ in range(length))
