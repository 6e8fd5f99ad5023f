"""The one retry schedule (`agent.core.backoff`): the core's stats retries and the drivers'
HTTP retries draw their waits from it."""

from __future__ import annotations

import itertools
import random

from agent.core.backoff import exponential_jitter, jittered_delay


class Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_waits_double_up_to_the_cap_with_jitter_in_half_to_full() -> None:
    low = [jittered_delay(Fixed(0.0), n, base_s=0.5, cap_s=30.0) for n in range(1, 10)]
    high = [jittered_delay(Fixed(0.999999), n, base_s=0.5, cap_s=30.0) for n in range(1, 10)]
    assert low == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert [round(h, 3) for h in high] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_very_late_attempt_waits_the_cap() -> None:
    assert jittered_delay(Fixed(0.0), 100_000, cap_s=600.0) == 300.0


def test_the_generator_is_the_same_schedule() -> None:
    waits = list(itertools.islice(exponential_jitter(random.Random(7), base_s=2.0), 12))
    rng = random.Random(7)
    assert waits == [jittered_delay(rng, n, base_s=2.0) for n in range(1, 13)]
    assert waits[0] < 2.0 < waits[2]
