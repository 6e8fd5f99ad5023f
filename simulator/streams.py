"""Per-device random streams that cost a few dozen bytes instead of 2.5 KB.

Every device draws from its own streams (the user's decisions, the agent's jitter, its
network's faults), so what it does never depends on how its draws interleave with another
device's. `random.Random` (Mersenne Twister) keeps 624 words of state inline: three per device
were about 8.7 KB of a fleet device's memory. `DeviceRandom` keeps one 64-bit integer: it is
SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", OOPSLA
2014; the generator Java's `SplittableRandom` uses and that seeds xoshiro), whose outputs pass
BigCrush. Plenty for a simulation's decisions; never for anything secret.

The distributions (`expovariate`, `gauss`, `uniform`, `randrange`) are the standard library's
own code, which only needs `random()` and `getrandbits()` from its generator: the same
formulas as `random.Random`, on this generator's numbers.
"""

from __future__ import annotations

from random import Random

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # the golden-ratio increment of the state
_TO_UNIT = 2.0**-53


def _mix(z: int) -> int:
    """SplitMix64's output function (the variant 13 finaliser of MurmurHash3)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


class DeviceRandom:
    """Stream number `stream` of the device seeded with `seed`: the same numbers every run.

    Stream starts are hashed from (seed, stream), so streams of one device and of different
    devices start at unrelated points of the generator's 2**64 cycle.
    """

    __slots__ = ("_state", "gauss_next")

    def __init__(self, seed: int, stream: int = 0) -> None:
        self._state = _mix(_mix((seed * 8 + stream) & _MASK) ^ _GAMMA)
        self.gauss_next: float | None = None  # `gauss` keeps its second value here

    def _next64(self) -> int:
        self._state = state = (self._state + _GAMMA) & _MASK
        return _mix(state)

    def random(self) -> float:
        """A float in [0, 1) with 53 random bits (`_next64`, inlined: the hot draw)."""
        self._state = z = (self._state + _GAMMA) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) * _TO_UNIT

    def getrandbits(self, k: int) -> int:
        """An integer of `k` random bits."""
        if k < 0:
            raise ValueError("number of bits must be non-negative")
        bits, got = 0, 0
        while got < k:
            bits = (bits << 64) | self._next64()
            got += 64
        return bits >> (got - k)

    expovariate = Random.expovariate
    gauss = Random.gauss
    uniform = Random.uniform
    randrange = Random.randrange
    _randbelow = Random._randbelow_with_getrandbits
