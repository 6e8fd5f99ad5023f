"""Load over time: `ReleaseDayShape`, `DiurnalShape`, `RampShape`, and `SteadyShape`.

Each is a pure plan, `users_at(t) -> (users, spawn_rate) | None` (None: the test is over), so
it can be checked without Locust (this module does not import it). The locustfile's one
`LoadTestShape`, `OtasimShape`, follows the plan `--load-shape` names.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Protocol

Tick = tuple[int, float] | None


class Plan(Protocol):
    def users_at(self, t: float) -> Tick: ...


@dataclass(frozen=True)
class SteadyShape:
    """`-u` users started at `-r` per second, until `-t` (forever without it)."""

    users: int
    spawn_rate: float
    run_time_s: float | None

    def users_at(self, t: float) -> Tick:
        if self.run_time_s is not None and t >= self.run_time_s:
            return None
        return self.users, self.spawn_rate


@dataclass(frozen=True)
class RampShape:
    """From 0 to `users` evenly over `ramp_s`, then held for `hold_s`."""

    users: int
    ramp_s: float
    hold_s: float

    def users_at(self, t: float) -> Tick:
        if t >= self.ramp_s + self.hold_s:
            return None
        return self.users, self.users / max(self.ramp_s, 1e-3)


@dataclass(frozen=True)
class ReleaseDayShape:
    """A steady fleet, then a release at `release_at_s`: every other device arrives (and
    checks) within `herd_window_s` — the thundering herd — and all are held for `hold_s`."""

    users: int
    steady_share: float
    release_at_s: float
    herd_window_s: float
    hold_s: float

    def users_at(self, t: float) -> Tick:
        steady = max(1, round(self.users * self.steady_share))
        if t < self.release_at_s:
            return steady, float(steady)  # the steady fleet is up within a second
        if t >= self.release_at_s + self.herd_window_s + self.hold_s:
            return None
        return self.users, (self.users - steady) / max(self.herd_window_s, 1e-3)


@dataclass(frozen=True)
class DiurnalShape:
    """A day compressed into `period_s`: users follow a sine between `min_share` x `users`
    (night) and `users` (evening peak), for `cycles` days."""

    users: int
    min_share: float
    period_s: float
    cycles: float

    def users_at(self, t: float) -> Tick:
        if t >= self.period_s * self.cycles:
            return None
        low = self.users * self.min_share
        level = low + (self.users - low) * (1 - math.cos(2 * math.pi * t / self.period_s)) / 2
        # fast enough to follow the steepest part of the curve
        rate = math.pi * (self.users - low) / self.period_s
        return max(1, round(level)), max(1.0, rate)


def plan_from_options(options: argparse.Namespace) -> Plan:
    """The plan `--load-shape` names, built from Locust's own and otasim's options.

    Raises:
        ValueError: a shape option out of range.
    """
    users = int(options.num_users or 1)
    if users < 1:
        raise ValueError("-u/--users must be >= 1")
    for name in ("ramp_s", "herd_window_s", "diurnal_period_s", "hold_s", "release_at_s"):
        if getattr(options, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("steady_share", "diurnal_min_share"):
        if not 0 <= getattr(options, name) <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be within 0..1")
    kind = options.load_shape
    if kind == "ramp":
        return RampShape(users, options.ramp_s, options.hold_s)
    if kind == "release-day":
        return ReleaseDayShape(
            users, options.steady_share, options.release_at_s, options.herd_window_s,
            options.hold_s,
        )  # fmt: skip
    if kind == "diurnal":
        return DiurnalShape(
            users, options.diurnal_min_share, options.diurnal_period_s, options.diurnal_cycles
        )
    return SteadyShape(users, float(options.spawn_rate or 1), options.run_time)
