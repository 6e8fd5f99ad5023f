"""Fleet benchmark (issue 9): how fast the fleet runs on virtual time, what a device costs,
how many update checks per second the fleet and the embedded server reach together, and that a
loaded machine gives the same fleet life as a quiet one.

    .venv/bin/python tests/benchmarks/bench_fleet.py [--steady-devices 10000] [--big 100000]

Every run is a real `otasim run` (embedded server in its own process, real agents, real HTTP
over loopback, device folders on /dev/shm, no event logs, as a default run), each in a fresh
Python process so that its peak memory is its own. Phases, each printed as it ends:

- steady: steady-rollout, --steady-devices x 24 h, with 1 and 2 fleet processes: wall time,
  simulated time per real second, where the wall time went (fleet and server CPU), verdict;
- checks: a fleet that opens the app very often (2 h, --check-devices devices on
  --check-processes fleet processes): update checks per second end to end (fleet + server
  sharing the cores);
- memory: peak RSS of the fleet process for two fleet sizes; the slope is what one more device
  costs, plus the bytes its folder holds on tmpfs (state, stats; bundles are pooled);
- idle: what one more idle device holds at the end of the day, counting everything: Python
  objects (tracemalloc slope), resident memory (RSS slope), its folder on tmpfs (pages) and
  the kernel's inodes and dentries of its files (/proc/slabinfo), for the same two sizes;
- contention: the same steady-rollout run with two CPU-burning processes beside it: its
  devices.csv and timeline.csv must be byte-identical to the quiet run's;
- big (only with --big N): steady-rollout with N devices x 24 h in one run, on --big-processes
  fleet processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHECKS_SCENARIO = """
duration_h = 2
[behaviours.busy]
sessions_per_day = 400
session_min = 1
kill_share = 0
reboots_per_day = 0
[[fleet]]
network = "lan"
behaviour = "busy"
platform = ["ios", "android"]
[[releases]]
version = "1.0.1"
size_kb = 20
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
"""

CHILD = """
import json, resource, sys
from pathlib import Path
from simulator.runner import RunOptions, simulate
args = json.loads(sys.argv[1])
workdir = args.pop("workdir", None)
report, _ = simulate(RunOptions(report_dir=Path(args.pop("report_dir")), progress=False,
                                workdir=workdir and Path(workdir), **args))
print(json.dumps({"report": report,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


IDLE_CHILD = """
import gc, json, sys, tracemalloc
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from bench_fleet import device_folders, resident_bytes
from simulator import device
from simulator.runner import RunOptions, simulate
args = json.loads(sys.argv[1])
traced = args.pop("traced")  # else untraced: its resident memory is the process's own
if traced:
    tracemalloc.start()
seen = {}
finish = device.VirtualDevice.finish
async def first_finish(self, *args, **kwargs):
    if not seen and traced:  # every device has lived its day and waits, idle: the run's end
        seen["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        gc.collect()
        seen["traced_after_gc"] = tracemalloc.get_traced_memory()[0]
    elif not seen:
        seen["rss_bytes"] = resident_bytes()
        seen.update(device_folders(self.folder.parent))
    return await finish(self, *args, **kwargs)
device.VirtualDevice.finish = first_finish
simulate(RunOptions(report_dir=Path(args.pop("report_dir")), progress=False, **args))
print(json.dumps(seen))
"""

# What the kernel holds per file on tmpfs when /proc/slabinfo cannot be read: this host's
# shmem_inode_cache (752 B objects, 21 per 4-page slab) and dentry (192 B, 21 per page).
INODE_BYTES, DENTRY_BYTES = 780, 195


def slab_bytes() -> tuple[int, int, str]:
    """(bytes per tmpfs inode, bytes per dentry, where from): each object's share of its slab
    (pages per slab x page size / objects per slab), from /proc/slabinfo when readable."""
    sizes: dict[str, int] = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                name, *fields = line.split()
                if name in ("shmem_inode_cache", "dentry"):  # objsize, per slab, pages per slab
                    per_slab, pages = int(fields[3]), int(fields[4])
                    sizes[name] = pages * os.sysconf("SC_PAGE_SIZE") // per_slab
    except (OSError, ValueError, IndexError):
        pass
    if len(sizes) == 2:
        return sizes["shmem_inode_cache"], sizes["dentry"], "/proc/slabinfo"
    return INODE_BYTES, DENTRY_BYTES, "estimate"


def resident_bytes() -> int:
    """This process's resident memory (RSS) now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def device_folders(devices: Path) -> dict[str, float]:
    """Per device folder, on average: the bytes tmpfs charges for it (whole pages, each file
    once: a bundle file hard-linked from the pool is the pool's), its directory entries (each a
    kernel dentry, a pooled file's link too) and its own inodes (each a kernel inode)."""
    folders = [p for p in devices.iterdir() if p.is_dir()]
    pages = entries = inodes = 0
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            entries += 1 if root == str(folder) else 0
            for name in [*dirs, *files]:
                entries += 1
                st = os.lstat(os.path.join(root, name))
                if st.st_nlink == 1 or name in dirs:  # else shared with the pool
                    inodes += 1
                    pages += st.st_blocks * 512
        inodes += 1  # the folder itself
    n = max(1, len(folders))
    return {"disk_bytes": pages / n, "entries": entries / n, "inodes": inodes / n}


def run(out: Path, folders: bool = False, **options: Any) -> dict[str, Any]:
    """One `otasim run` in a fresh process; its report and peak RSS. Like a default `otasim
    run` (no `--workdir`: device folders in a temporary folder, no event logs), unless
    `folders`: then with `--workdir out/work`, and the tmpfs bytes its device folders hold at
    the end (kept until `out` is removed)."""
    work = out / "work"
    args = {"report_dir": str(out / "report"), **options}
    if folders:
        args["workdir"] = str(work)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if folders:
        result["device_disk_bytes"] = _tmpfs_bytes(work / "devices")
    return result


def _tmpfs_bytes(folder: Path) -> int:
    """Bytes the device folders hold: every file once (bundle files hard-linked from the
    pool are counted once, as the pool holds them once), plus the folders themselves."""
    seen: set[int] = set()
    total = 0
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(root, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def scratch() -> tempfile.TemporaryDirectory[str]:
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="otasim-bench-", dir=shm)


def describe(report: dict[str, Any]) -> str:
    run_, wall = report["run"], report["run"]["wall"]
    checks = ", ".join(f"{r['expect']}={r['value']}" for r in report["expectations"])
    return (
        f"{run_['wall_s']:.1f} s wall, {run_['speedup']:,}x simulated/real, fleet CPU "
        f"{wall['fleet_cpu_s']} s (kernel {wall['fleet_system_s']} s), server CPU "
        f"{wall['server_cpu_s']} s, {wall['clock_steps']:,} clock steps; "
        f"{'passed' if report['passed'] else 'FAILED'} ({checks})"
    )


def steady(devices: int, processes_list: list[int]) -> None:
    for processes in processes_list:
        with scratch() as tmp:
            result = run(Path(tmp), devices=devices, processes=processes)
        print(f"steady: {devices:,} devices x 24 h, {processes} process(es): "
              f"{describe(result['report'])}", flush=True)  # fmt: skip


def checks(devices: int, processes: int) -> None:
    with scratch() as tmp:
        path = Path(tmp) / "busy.toml"
        path.write_text(CHECKS_SCENARIO)
        report = run(Path(tmp), scenario=str(path), devices=devices, processes=processes)["report"]
    count = report["requests"]["/updates"]["count"]
    wall = report["run"]["wall_s"]
    print(f"checks: {devices:,} devices, {processes} process(es), {count:,} update checks in "
          f"{wall:.1f} s wall = {count / wall:,.0f} checks/s end to end "
          f"({describe(report)})", flush=True)  # fmt: skip


def memory(small: int, large: int) -> None:
    sizes = {}
    for devices in (small, large):
        with scratch() as tmp:
            result = run(Path(tmp), folders=True, devices=devices)
        sizes[devices] = (result["maxrss_kb"], result["device_disk_bytes"])
    (rss_s, _), (rss_l, disk_l) = sizes[small], sizes[large]
    per_rss = (rss_l - rss_s) / (large - small)
    per_disk = disk_l / large / 1024
    print(f"memory: peak RSS {rss_s / 1024:,.0f} MB at {small:,} devices, {rss_l / 1024:,.0f} MB "
          f"at {large:,}: {per_rss:.1f} KB per device in memory + {per_disk:.1f} KB of device "
          f"folder on tmpfs = {per_rss + per_disk:.1f} KB per device", flush=True)  # fmt: skip


def idle(small: int, large: int) -> None:
    """What one more idle device costs, counting everything it holds, when every device has
    lived its day (at the first device's final flush), from two fleet sizes: its Python
    objects (tracemalloc slope), the process's resident memory (RSS slope, in a run without
    tracemalloc: adds C allocations, the allocator's slack and what the busiest step left
    behind), its folder on tmpfs (whole pages) and the kernel's inode and dentry for each of
    its files. Runs as `otasim run` does by default: device folders in a temporary folder on
    /dev/shm, no event logs."""
    seen: dict[int, dict[str, float]] = {small: {}, large: {}}
    for devices in (small, large):
        for traced in (True, False):  # tracemalloc's own tables would swell the RSS
            with scratch() as tmp:
                args = {"report_dir": f"{tmp}/report", "devices": devices, "traced": traced}
                here = str(Path(__file__).parent)
                done = subprocess.run(
                    [sys.executable, "-c", IDLE_CHILD, json.dumps(args), here],
                    capture_output=True,
                    text=True,
                )
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-2000:])
                seen[devices].update(json.loads(done.stdout.strip().splitlines()[-1]))

    def slope(key: str) -> float:
        return (seen[large][key] - seen[small][key]) / (large - small) / 1024

    inode_b, dentry_b, source = slab_bytes()
    big = seen[large]
    disk = big["disk_bytes"] / 1024
    kernel = (big["inodes"] * inode_b + big["entries"] * dentry_b) / 1024
    python, rss = slope("traced_bytes"), slope("rss_bytes")
    print(f"idle: {small:,} -> {large:,} devices, per idle device: Python objects "
          f"{python:.1f} KB (tracemalloc; {slope('traced_after_gc'):.1f} KB after a gc), "
          f"resident {rss:.1f} KB (RSS slope), its folder {disk:.1f} KB on tmpfs, kernel "
          f"{kernel:.1f} KB ({big['inodes']:.1f} inodes x {inode_b} B + {big['entries']:.1f} "
          f"dentries x {dentry_b} B, {source}): {max(python, rss) + disk + kernel:.1f} KB "
          f"counting everything", flush=True)  # fmt: skip


def _burn(until: float) -> None:
    while time.monotonic() < until:
        sum(i * i for i in range(10_000))


def contention(devices: int) -> None:
    outputs = []
    for burners in (0, 2):
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_burn, args=(time.monotonic() + 1800,)) for _ in range(burners)]
        for p in procs:
            p.start()
        try:
            with scratch() as tmp:
                result = run(Path(tmp), devices=devices)
                report = Path(tmp) / "report"
                outputs.append(
                    (
                        (report / "devices.csv").read_bytes(),
                        (report / "timeline.csv").read_bytes(),
                        result["report"]["run"]["wall_s"],
                    )
                )
        finally:
            for p in procs:
                p.terminate()
                p.join()
    (dev_q, tl_q, wall_q), (dev_l, tl_l, wall_l) = outputs
    print(f"contention: {devices:,} devices, quiet {wall_q:.1f} s vs two CPU burners "
          f"{wall_l:.1f} s wall: devices.csv {'identical' if dev_q == dev_l else 'DIFFERENT'}, "
          f"timeline.csv {'identical' if tl_q == tl_l else 'DIFFERENT'}", flush=True)  # fmt: skip


def big(devices: int, processes: int) -> None:
    with scratch() as tmp:
        result = run(Path(tmp), devices=devices, processes=processes)
    print(f"big: {devices:,} devices x 24 h, {processes} process(es): "
          f"{describe(result['report'])}; peak RSS of the parent process "
          f"{result['maxrss_kb'] / 1024:,.0f} MB", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steady-devices", type=int, default=10_000)
    parser.add_argument("--steady-processes", default="1,2", help="fleet processes to try")
    parser.add_argument("--check-devices", type=int, default=2_000)
    parser.add_argument("--check-processes", type=int, default=2, help="fleet processes")
    parser.add_argument("--memory-devices", default="2000,20000", help="two fleet sizes")
    parser.add_argument("--contention-devices", type=int, default=2_000)
    parser.add_argument("--big", type=int, default=0, help="also run N devices x 24 h")
    parser.add_argument("--big-processes", type=int, default=2, help="fleet processes")
    parser.add_argument("--only", help="comma-separated phases to run")
    args = parser.parse_args()
    small, large = (int(n) for n in args.memory_devices.split(","))
    phases = {
        "steady": lambda: steady(
            args.steady_devices, [int(n) for n in args.steady_processes.split(",")]
        ),
        "checks": lambda: checks(args.check_devices, args.check_processes),
        "memory": lambda: memory(small, large),
        "idle": lambda: idle(small, large),
        "contention": lambda: contention(args.contention_devices),
        "big": lambda: big(args.big, args.big_processes) if args.big else None,
    }
    chosen = args.only.split(",") if args.only else list(phases)
    for name in chosen:
        phases[name]()


if __name__ == "__main__":
    main()
