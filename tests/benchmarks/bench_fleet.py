"""Fleet benchmark (issue 5): how many live devices one process sustains, what an idle one
costs, how many update checks per second the fleet and the embedded server reach, and how
fast steady-rollout runs for 10 000 devices over 24 h.

    .venv/bin/python tests/benchmarks/bench_fleet.py [--max-devices 20000] [--skip-speedup]

Every device is a real agent (`AsyncDevice`) with its own folder and state, checking in at
foreground like a phone; they share one HTTP pool (connections held only while a request is
in flight). The server is the embedded reference server in its own process.

Phases, each printed as it ends:
- ramp: live devices 1 000 -> --max-devices at `--scale` (default 30: each device opens the
  app 10 times a simulated day, so 20 000 devices offer ~70 checks/s). Per level: memory per
  live device (RSS slope between levels; the bundle pool is on tmpfs and not in RSS), open
  files, checks/s achieved vs offered, /updates p50/p99, event-loop lag p99. A level is
  "sustained" when the loop lag p99 stays under 250 ms and >= 90 % of the offered checks ran.
- saturate: 2 000 devices at a time scale far beyond what they can do: the checks/s ceiling.
- speedup: steady-rollout with --speedup-devices at each --speedup-scales (24 h in 24 h/scale),
  with its expectations and loop lag (the speed-up is the time scale when the fleet keeps up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from agent.config import AgentConfig
from agent.drivers.backends import make_async_port
from agent.drivers.http import AsyncHttpPort
from simulator.device import VirtualDevice
from simulator.fleet import Fleet, ScaledClock, plan_fleet
from simulator.runner import RunOptions, simulate
from simulator.scenario import load_scenario
from simulator.server.client import AdminClient
from simulator.server.embedded import run_server

APP = "com.example.bench"
SESSIONS_PER_DAY = 10
SCENARIO = f"""
app_id = "{APP}"
duration_h = 100000
[behaviours.bench]
sessions_per_day = {SESSIONS_PER_DAY}
session_min = 3
kill_share = 0
reboots_per_day = 0
[[fleet]]
network = "lan"
behaviour = "bench"
platform = ["ios", "android"]
"""


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def make_fleet(url: str, devices: int, scale: float, workdir: Path) -> tuple[Fleet, AsyncHttpPort]:
    """A fleet of `devices` on its own HTTP pool (closed by the caller)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "bench.toml"
    path.write_text(SCENARIO)
    scenario = load_scenario(str(path))
    config = AgentConfig(
        update_url=f"{url}/updates", stats_url=f"{url}/stats", channel_url=f"{url}/channel_self"
    )
    http = make_async_port("aiohttp", max_connections=256)
    fleet = Fleet(
        scenario,
        plan_fleet(scenario, devices, seed=1),
        configs={"production": config},
        http=http,
        clock=ScaledClock(scale),
        workdir=workdir,
        published={},
    )
    return fleet, http


async def window(fleet: Fleet, seconds: float) -> dict[str, float]:
    """Measure checks/s, /updates latency and loop lag over the next `seconds`."""
    checks, lags = fleet.metrics.latency["/updates"], fleet.metrics.loop_lag
    c0, l0, t0 = len(checks), len(lags), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    latencies = [v * 1000 for v in checks[c0:]]
    return {
        "checks_per_s": (len(checks) - c0) / elapsed,
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "lag_p99_ms": pct([v * 1000 for v in lags[l0:]], 99),
    }


async def ramp(url: str, max_devices: int, scale: float, workdir: Path, hold_s: float) -> None:
    levels = [n for n in (1000, 2500, 5000, 10000, 15000, 20000, 30000) if n < max_devices]
    levels.append(max_devices)
    base = rss_mb()
    fleet, http = make_fleet(url, max_devices, scale, workdir)
    shell_kb = (rss_mb() - base) * 1024 / max_devices
    print(f"ramp: scale {scale:g}, {SESSIONS_PER_DAY} sessions/day; fleet objects "
          f"{shell_kb:.1f} KB/device before any agent opens", flush=True)  # fmt: skip
    watch = asyncio.create_task(fleet.watch_loop())
    tasks: list[asyncio.Task[None]] = []
    started, last_rss = 0, rss_mb()
    limit = asyncio.Semaphore(100)

    async def launch(device: VirtualDevice) -> None:
        async with limit:
            await device.open_app()  # the app's first launch: state, agent, first check
        tasks.append(asyncio.create_task(device.live(fleet.scenario.duration_s)))

    for level in levels:
        began = time.monotonic()
        await asyncio.gather(*(launch(d) for d in fleet.devices[started:level]))
        opened_s = time.monotonic() - began
        stats = await window(fleet, hold_s)
        alive = sum(d.device is not None for d in fleet.devices[:level])
        now_rss = rss_mb()
        per_device = (now_rss - last_rss) * 1024 / (level - started)
        offered = level * SESSIONS_PER_DAY * scale / 86400
        ok = stats["lag_p99_ms"] < 250 and stats["checks_per_s"] >= 0.9 * offered
        print(
            f"  {level:>6} live ({alive} open; +{level - started} launched in {opened_s:.0f} s): "
            f"RSS {now_rss:,.0f} MB, "
            f"+{per_device:.1f} KB/agent, {open_files()} fds, checks {stats['checks_per_s']:.0f}/s "
            f"(offered {offered:.0f}), /updates p50 {stats['p50_ms']:.0f} ms "
            f"p99 {stats['p99_ms']:.0f} ms, loop lag p99 {stats['lag_p99_ms']:.0f} ms -> "
            f"{'sustained' if ok else 'NOT sustained'}",
            flush=True,
        )
        started, last_rss = level, now_rss
    for task in [*tasks, watch]:
        task.cancel()
    await asyncio.gather(*tasks, watch, return_exceptions=True)
    await http.aclose()


async def saturate(url: str, devices: int, workdir: Path, hold_s: float) -> None:
    scale = 200_000.0  # far more sessions than 2 000 devices can serve: the ceiling shows
    fleet, http = make_fleet(url, devices, scale, workdir)
    watch = asyncio.create_task(fleet.watch_loop())
    tasks = [asyncio.create_task(d.live(fleet.scenario.duration_s)) for d in fleet.devices]
    await asyncio.sleep(hold_s / 2)  # warm up: every device opened
    stats = await window(fleet, hold_s)
    print(f"saturate: {devices} devices: {stats['checks_per_s']:.0f} update checks/s, "
          f"/updates p50 {stats['p50_ms']:.0f} ms p99 {stats['p99_ms']:.0f} ms, "
          f"loop lag p99 {stats['lag_p99_ms']:.0f} ms", flush=True)  # fmt: skip
    for task in [*tasks, watch]:
        task.cancel()
    await asyncio.gather(*tasks, watch, return_exceptions=True)
    await http.aclose()


def speedup(devices: int, scales: list[float], processes: int) -> None:
    for scale in scales:
        with tempfile.TemporaryDirectory(prefix="otasim-bench-report-") as out:
            options = RunOptions(devices=devices, time_scale=scale, report_dir=Path(out),
                                 progress=False, processes=processes)  # fmt: skip
            report, _ = simulate(options)
        run = report["run"]
        checks = ", ".join(f"{r['expect']}={r['value']}" for r in report["expectations"])
        print(f"speedup: steady-rollout {devices} devices, {processes} process(es), "
              f"at {scale:g}x: 24 h in "
              f"{run['wall_s']:.0f} s = {run['speedup']}x, loop lag p99 "
              f"{run['loop_lag_ms'].get('p99')} ms, {'passed' if report['passed'] else 'FAILED'} "
              f"({checks})", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-devices", type=int, default=20_000)
    parser.add_argument("--scale", type=float, default=30.0)
    parser.add_argument("--hold", type=float, default=15.0, help="seconds measured per level")
    parser.add_argument("--speedup-devices", type=int, default=10_000)
    parser.add_argument("--speedup-scales", default="288")
    parser.add_argument("--speedup-processes", type=int, default=2)
    parser.add_argument("--skip-ramp", action="store_true")
    parser.add_argument("--skip-speedup", action="store_true")
    args = parser.parse_args()
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    if not args.skip_ramp:
        with (
            tempfile.TemporaryDirectory(prefix="otasim-bench-", dir=shm) as tmp,
            run_server(Path(tmp) / "server", in_process=False) as server,
        ):
            with AdminClient(server.url, server.admin_key) as admin:
                admin.create_app(APP)
                admin.set_channel(APP, "production", public=True)
            asyncio.run(ramp(server.url, args.max_devices, args.scale, Path(tmp), args.hold))
            asyncio.run(saturate(server.url, 2000, Path(tmp) / "sat", args.hold))
    if not args.skip_speedup:
        scales = [float(s) for s in args.speedup_scales.split(",")]
        speedup(args.speedup_devices, scales, args.speedup_processes)


if __name__ == "__main__":
    main()
