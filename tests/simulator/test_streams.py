"""Per-device random streams: reproducible, independent, uniform, and small."""

from __future__ import annotations

import random
import statistics
import tracemalloc

import pytest

from simulator.streams import DeviceRandom


def test_a_stream_repeats_itself_and_differs_from_its_neighbours() -> None:
    def draws(seed: int, stream: int) -> list[float]:
        rng = DeviceRandom(seed, stream)
        return [rng.random() for _ in range(100)]

    assert draws(7, 1) == draws(7, 1)
    others = [draws(7, 0), draws(7, 2), draws(8, 1), draws(15, 1)]
    assert all(set(other).isdisjoint(draws(7, 1)) for other in others)


def test_draws_are_uniform_and_the_distributions_are_the_standard_librarys() -> None:
    rng = DeviceRandom(2026, 0)
    unit = [rng.random() for _ in range(50_000)]
    assert min(unit) >= 0.0 and max(unit) < 1.0
    assert statistics.fmean(unit) == pytest.approx(0.5, abs=0.01)
    deciles = [sum(1 for u in unit if i / 10 <= u < (i + 1) / 10) for i in range(10)]
    assert max(deciles) - min(deciles) < 500  # about 5 000 each
    waits = [rng.expovariate(1 / 60) for _ in range(20_000)]
    assert statistics.fmean(waits) == pytest.approx(60, rel=0.05)
    latency = [rng.gauss(100, 10) for _ in range(20_000)]
    assert statistics.fmean(latency) == pytest.approx(100, abs=0.5)
    assert statistics.stdev(latency) == pytest.approx(10, rel=0.05)
    spots = {rng.randrange(16) for _ in range(1_000)}
    assert spots == set(range(16))
    assert all(1.0 <= rng.uniform(1, 2) < 2.0 for _ in range(1_000))
    assert rng.getrandbits(0) == 0 and 0 <= rng.getrandbits(100) < 2**100
    assert max(rng.getrandbits(130) for _ in range(200)).bit_length() > 120


def test_a_stream_holds_a_small_fraction_of_a_mersenne_twister() -> None:
    def bytes_each(make: type[object], n: int = 1_000) -> float:
        tracemalloc.start()
        try:
            held = [make(i) for i in range(n)]  # type: ignore[call-arg]
            size = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert len(held) == n
        return size / n

    ours, twister = bytes_each(DeviceRandom), bytes_each(random.Random)
    assert ours < 200 and twister > 2_000
