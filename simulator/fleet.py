"""Run a scenario's fleet: N virtual devices on one asyncio loop, a timeline, a time scale.

`ScaledClock` compresses every device timer and the timeline by `time_scale`; network delays
and timeouts stay real. `plan_fleet` turns a scenario and a seed into the same devices every
time (identity, network, behaviour, per-device random seeds). `Fleet.run()` drives it all and
returns the `Metrics`; `simulator.commands.run` wraps it with the server and the report.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.http import AsyncHttpPort
from agent.protocol.profiles import get_profile

from simulator.device import BundlePool, DeviceContext, VirtualDevice
from simulator.metrics import DeviceOutcome, Metrics
from simulator.network import Mitm, MitmMode, ShapedPort, profile
from simulator.publish import PublishError, publish
from simulator.release import ReleaseError
from simulator.scenario import Choice, Scenario, Step
from simulator.server.client import AdminClient, AdminError

SIM_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: device clocks start here


class ScaledClock:
    """Simulated epoch seconds running `scale` times faster than real time."""

    def __init__(self, scale: float, epoch: float = SIM_EPOCH) -> None:
        self.scale = scale
        self.epoch = epoch  # what now() says at t0
        self.t0 = time.monotonic()  # CLOCK_MONOTONIC: the same for every process of the host

    def now(self) -> float:
        return self.epoch + (time.monotonic() - self.t0) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)


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


def plan_fleet(scenario: Scenario, devices: int, seed: int) -> list[DeviceSpec]:
    """The fleet for `seed`: groups apportioned exactly by share, attributes drawn per device."""
    rng = random.Random(seed)
    specs: list[DeviceSpec] = []
    counts = apportion([g.share for g in scenario.groups], devices)
    for group, count in zip(scenario.groups, counts, strict=True):
        for _ in range(count):
            specs.append(
                DeviceSpec(
                    index=len(specs),
                    device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    platform=pick(group.platform, rng),
                    os=pick(group.os, rng),
                    native_version=pick(group.native_version, rng),
                    channel=pick(group.channel, rng),
                    network=pick(group.network, rng),
                    behaviour=pick(group.behaviour, rng),
                    mitm=pick(scenario.mitm_modes, rng) if group.mitm else "",
                    seed=rng.getrandbits(48),
                )
            )
    return specs


def apportion(shares: Sequence[float], total: int) -> list[int]:
    """Split `total` by `shares` (largest remainder), so counts add up exactly."""
    weight = sum(shares)
    exact = [total * s / weight for s in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def pick(choice: Choice, rng: random.Random) -> str:
    values, weights = zip(*choice, strict=True)
    return str(rng.choices(values, weights)[0])


class Fleet:
    """The virtual devices of one run and what they share."""

    def __init__(
        self,
        scenario: Scenario,
        specs: Sequence[DeviceSpec],
        *,
        configs: Mapping[str, AgentConfig],
        http: AsyncHttpPort,
        clock: ScaledClock,
        workdir: Path,
        published: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.metrics = Metrics()
        self.mitms = {
            mode: Mitm(cast(MitmMode, mode), scenario.mitm_rate) for mode, _ in scenario.mitm_modes
        }
        self.start = clock.epoch  # simulated t = 0, reached when run() starts the clock
        ctx = DeviceContext(
            configs=configs,
            http=self._port_factory(http),
            clock=clock,
            metrics=self.metrics,
            pool=BundlePool(workdir / "pool"),
            published=published,
            start=self.start,
            profile=get_profile(next(iter(configs.values())).plugin) if configs else get_profile(),
        )
        self.devices = [self._device(ctx, spec, workdir) for spec in specs]

    def _port_factory(
        self, inner: AsyncHttpPort
    ) -> Callable[[DeviceOutcome, random.Random], AsyncHttpPort]:
        def make(outcome: DeviceOutcome, rng: random.Random) -> AsyncHttpPort:
            return ShapedPort(
                inner,
                profile(outcome.network),
                rng=rng,
                clock=lambda: self.clock.now() - self.start,
                mitm=self.mitms.get(outcome.mitm),
                faults=self.metrics.faults,
            )

        return make

    def _device(self, ctx: DeviceContext, spec: DeviceSpec, workdir: Path) -> VirtualDevice:
        sc = self.scenario
        outcome = DeviceOutcome(
            spec.index, spec.device_id, spec.platform, spec.os, spec.network,
            spec.behaviour, spec.channel, spec.mitm,
        )  # fmt: skip
        self.metrics.devices.append(outcome)
        identity = DeviceIdentity(
            device_id=spec.device_id,
            app_id=sc.app_id,
            platform=spec.platform,  # type: ignore[arg-type]
            version_build=spec.native_version,
            version_os=spec.os,
            plugin_version=ctx.profile.plugin_version,
        )
        folder = workdir / "devices" / f"{spec.index:06d}"
        device = VirtualDevice(
            ctx, identity, sc.behaviours[spec.behaviour], outcome, folder, spec.seed
        )
        return device

    def now_s(self) -> float:
        """Simulated seconds since the fleet started."""
        return self.clock.now() - self.start

    async def watch_loop(self, every_s: float = 0.1) -> None:
        """Record how late the event loop wakes up (real seconds): past a few simulated
        minutes' worth, the fleet is overloaded and its timings are no longer faithful."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + every_s
            await asyncio.sleep(every_s)
            self.metrics.loop_lag.append(loop.time() - asked)

    async def run(self, flush_wait_s: float = 120.0, t0: float | None = None) -> Metrics:
        """Start the clock (now, or at monotonic time `t0` shared by the shards of a fleet),
        live until the scenario's end, then let every device deliver its stats; the metrics."""
        self.clock.t0 = time.monotonic() if t0 is None else t0
        await asyncio.sleep(max(0.0, self.clock.t0 - time.monotonic()))
        end = self.scenario.duration_s
        watch = asyncio.create_task(self.watch_loop())
        try:
            await asyncio.gather(*(d.live(end) for d in self.devices))
        finally:
            watch.cancel()
        limit = asyncio.Semaphore(256)

        async def finish(device: VirtualDevice) -> None:
            async with limit:
                await device.finish(flush_wait_s)

        await asyncio.gather(*(finish(d) for d in self.devices))
        for mitm in self.mitms.values():
            self.metrics.mitm.update(mitm.tampered)
        return self.metrics


class ServerControl(Protocol):
    """The server the timeline acts on (the embedded one; None for an external server)."""

    def client(self) -> AdminClient: ...

    def down(self) -> None: ...

    def up(self) -> None: ...


@dataclass(frozen=True)
class Publication:
    dist: Path
    delta: bool


class Timeline:
    """Performs the scenario's steps at their simulated times through the admin API."""

    def __init__(
        self,
        scenario: Scenario,
        server: ServerControl,
        releases: Mapping[str, Publication],
        private_pem: bytes,
    ) -> None:
        self.scenario = scenario
        self.server = server
        self.releases = releases
        self.private_pem = private_pem
        self.published_s: dict[str, float] = {}

    async def run(self, fleet: Fleet, steps: Sequence[Step]) -> None:
        """Perform `steps` in order, each when the fleet's clock reaches it."""
        for step in steps:
            await fleet.clock.sleep(step.at_s - fleet.now_s())
            record = await asyncio.to_thread(self.perform, step, max(fleet.now_s(), step.at_s))
            fleet.metrics.steps.append(record)

    def perform(self, step: Step, at_s: float) -> dict[str, object]:
        """Do one step now (blocking); returns what the report shows of it."""
        label = " ".join(x for x in (step.action, step.version or "") if x)
        if (
            step.action in ("publish", "rollout")
            and step.percent is not None
            and step.percent < 100
        ):
            label += f" {step.percent:g}%"
        record: dict[str, object] = {
            "at_h": round(at_s / 3600, 3), "action": step.action, "version": step.version,
            "channel": step.channel, "percent": step.percent, "label": label, "error": None,
        }  # fmt: skip
        try:
            self._act(step, at_s)
        except (AdminError, PublishError, ReleaseError, OSError) as exc:
            record["error"] = str(exc)
        return record

    def _act(self, step: Step, at_s: float) -> None:
        app, channel, version = self.scenario.app_id, step.channel, step.version or ""
        if step.action == "server_down":
            return self.server.down()
        if step.action == "server_up":
            return self.server.up()
        client = self.server.client()
        if step.action == "publish":
            rel = self.releases[version]
            percent = step.percent if step.percent is not None and step.percent < 100 else None
            publish(
                client, app_id=app, version=version, channel=channel, source=rel.dist,
                private_pem=self.private_pem, delta=rel.delta, rollout_percent=percent,
            )  # fmt: skip
            self.published_s.setdefault(version, at_s)
        elif step.action == "rollout":
            client.set_rollout(app, channel, version, step.percent or 0.0)
        elif step.action == "rollback":
            client.rollback(app, channel, version)
        else:
            getattr(client, f"{step.action}_rollout")(app, channel)
        return None
