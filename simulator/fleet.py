"""Run a scenario's fleet: N virtual devices on one asyncio loop, on the run's virtual time.

`plan_fleet` turns a scenario and a seed into the same devices every time (identity, network,
behaviour, per-device random seeds). `Fleet.run()` drives the devices and the run's
synchronisation points (the steps of `simulator.timeline`, the man in the middle's shared
knowledge) on a `simulator.clock.VirtualTime` and returns the `Metrics`; `simulator.shards`
runs it in one or several processes and `simulator.runner` wraps it with the server and the
report.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.http import AsyncHttpPort
from agent.protocol.profiles import get_profile
from agent.protocol.registry import DEFAULT_DIALECT

from simulator.app import draw_device, pick
from simulator.clock import DeviceClock, VirtualTime
from simulator.device import (
    BundlePool,
    ConfigKey,
    DeviceContext,
    EventLog,
    VirtualDevice,
    folder_name,
)
from simulator.gctune import batched_collection
from simulator.metrics import DeviceOutcome, Metrics
from simulator.network import Learned, Mitm, MitmMode, ShapedPort, merge_learned, profile
from simulator.scenario import Scenario
from simulator.streams import DeviceRandom


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    index: int
    device_id: str
    platform: str
    os: str
    native_version: str
    channel: str
    network: str
    behaviour: str
    mitm: str  # "" when not behind the man in the middle
    seed: int
    disk_full: bool = False  # in the scenario's disk-full share
    dialect: str = DEFAULT_DIALECT  # the server protocol the device speaks


def plan_fleet(scenario: Scenario, devices: int, seed: int) -> list[DeviceSpec]:
    """The fleet for `seed`: groups apportioned exactly by share, attributes drawn per device."""
    rng = random.Random(seed)
    specs: list[DeviceSpec] = []
    counts = apportion([g.share for g in scenario.groups], devices)
    for group, count in zip(scenario.groups, counts, strict=True):
        for _ in range(count):
            drawn = draw_device(group, rng)
            specs.append(
                DeviceSpec(
                    index=len(specs),
                    device_id=drawn.device_id,
                    platform=drawn.platform,
                    os=drawn.os,
                    native_version=drawn.native_version,
                    channel=drawn.channel,
                    network=pick(group.network, rng),
                    behaviour=pick(group.behaviour, rng),
                    mitm=pick(scenario.mitm_modes, rng) if group.mitm else "",
                    seed=rng.getrandbits(48),
                )
            )
    dialects = random.Random(f"{seed}:dialect")  # drawn apart too: a mix changes no other draw
    for group, count, first in zip(scenario.groups, counts, _starts(counts), strict=True):
        if group.dialect != ((DEFAULT_DIALECT, 1.0),):
            for index in range(first, first + count):
                specs[index] = replace(specs[index], dialect=pick(group.dialect, dialects))
    if scenario.disk_full is not None:  # drawn apart: the other draws stay as without it
        count = round(scenario.disk_full.share * devices)
        full = random.Random(f"{seed}:disk_full").sample(range(devices), count)
        for index in full:
            specs[index] = replace(specs[index], disk_full=True)
    return specs


def _starts(counts: Sequence[int]) -> list[int]:
    """The index of each group's first device."""
    return [sum(counts[:i]) for i in range(len(counts))]


def apportion(shares: Sequence[float], total: int) -> list[int]:
    """Split `total` by `shares` (largest remainder), so counts add up exactly."""
    weight = sum(shares)
    exact = [total * s / weight for s in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


SYNCS_PER_RUN = 96  # with a man in the middle: what it learned is shared this often


class Fleet:
    """The virtual devices of one run (or of one shard of it) and what they share."""

    def __init__(
        self,
        scenario: Scenario,
        specs: Sequence[DeviceSpec],
        *,
        configs: Mapping[ConfigKey, AgentConfig],
        http: AsyncHttpPort,
        time: VirtualTime,
        workdir: Path,
        published: Mapping[str, Mapping[str, str]],
        event_logs: bool = False,
    ) -> None:
        self.scenario = scenario
        self.event_logs = event_logs  # each device's event log, next to its folder
        self.time = time
        self.metrics = Metrics()
        self.finished = 0  # devices done with the run's end (stats delivered, state read)
        self.mitms = {
            mode: Mitm(cast(MitmMode, mode), scenario.mitm_rate) for mode, _ in scenario.mitm_modes
        }
        ctx = DeviceContext(
            configs=configs,
            http=self._port_factory(http),
            time=time,
            metrics=self.metrics,
            pool=BundlePool(workdir / "pool"),
            published=published,
            profile=get_profile(next(iter(configs.values())).plugin) if configs else get_profile(),
            devices=workdir / "devices",
        )
        if event_logs:
            ctx.devices.mkdir(parents=True, exist_ok=True)
        self.devices = [self._device(ctx, spec) for spec in specs]

    def _port_factory(
        self, inner: AsyncHttpPort
    ) -> Callable[[DeviceOutcome, DeviceRandom, DeviceClock], AsyncHttpPort]:
        def make(outcome: DeviceOutcome, rng: DeviceRandom, clock: DeviceClock) -> AsyncHttpPort:
            return ShapedPort(
                inner,
                profile(outcome.network),
                rng=rng,
                clock=clock,
                index=outcome.index,
                mitm=self.mitms.get(outcome.mitm),
                faults=self.metrics.faults,
            )

        return make

    def _device(self, ctx: DeviceContext, spec: DeviceSpec) -> VirtualDevice:
        sc = self.scenario
        outcome = self.metrics.add_device(DeviceOutcome(
            spec.index, spec.device_id, spec.platform, spec.os, spec.network,
            spec.behaviour, spec.channel, spec.mitm, spec.disk_full, spec.dialect,
        ))  # fmt: skip
        identity = DeviceIdentity(
            device_id=spec.device_id,
            app_id=sc.app_id,
            platform=spec.platform,  # type: ignore[arg-type]
            version_build=spec.native_version,
            version_os=spec.os,
            plugin_version=ctx.profile.plugin_version,
        )
        log = ctx.devices / f"{folder_name(spec.index)}.log"
        device = VirtualDevice(
            ctx, identity, sc.behaviours[spec.behaviour], outcome, spec.seed,
            disk_full=sc.disk_full if spec.disk_full else None,
            log=EventLog(log) if self.event_logs else None,
        )  # fmt: skip
        return device

    def now_s(self) -> float:
        """Simulated seconds since the fleet started (the current step's)."""
        return self.time.t

    def sync_points(self) -> list[float]:
        """Simulated times at which every shard stops for the others (time zero, each
        timeline step, and with a man in the middle a regular grid): barriers."""
        end = self.scenario.duration_s
        points = {0.0, *(max(0.0, s.at_s) for s in self.scenario.timeline if s.at_s <= end)}
        if self.mitms:
            points.update(end * k / SYNCS_PER_RUN for k in range(1, SYNCS_PER_RUN))
        return sorted(points)

    def learned(self) -> dict[str, Learned]:
        """What each man in the middle learned since the last synchronisation point."""
        return {mode: mitm.take_learned() for mode, mitm in sorted(self.mitms.items())}

    def commit(self, shards: Sequence[Mapping[str, Learned]]) -> None:
        """Make what every shard's men in the middle learned known to ours (same order
        whatever the sharding: earliest simulated time, then device index)."""
        for mode, mitm in self.mitms.items():
            mitm.commit(merge_learned([s.get(mode, {}) for s in shards]))

    async def run(
        self, sync: Callable[[float], Awaitable[None]], flush_wait_s: float = 600.0
    ) -> Metrics:
        """Live until the scenario's end, then let every device deliver its stats (bounded by
        `flush_wait_s` simulated seconds); `sync(at_s)` runs alone at each sync point."""
        vt, end = self.time, self.scenario.duration_s

        async def syncs() -> None:
            for at in self.sync_points():
                await vt.until(at, barrier=True)
                await sync(at)

        async def device(d: VirtualDevice) -> None:
            await d.live(end)
            await d.finish(flush_wait_s)
            self.finished += 1

        work = [vt.participate(syncs()), *(vt.participate(device(d)) for d in self.devices)]
        with batched_collection():
            await asyncio.gather(vt.run(), *work)
        for mitm in self.mitms.values():
            self.metrics.mitm.update(mitm.tampered)
        return self.metrics
