"""Reference server benchmark (issue 4): update checks per second on one uvicorn worker.

    .venv/bin/python tests/benchmarks/bench_server.py [--duration 10] [--concurrency 64]
                                                      [--endpoint updates|stats]

Starts `otasim serve` in a subprocess pinned to core 1, seeds realistic data (100 apps, each
with 10 channels, 3 bundles and a 20 % rollout on its public channel; 100 000 known devices;
1 000 device overrides), then a load generator in a second process pinned to core 0 (aiohttp,
`--concurrency` connections) POSTs update checks from random known devices for `--duration`
seconds after a 2 s warm-up: a third already up to date, the rest offered a bundle. Prints
checks/s, checks per CPU-second the server process used (the per-core figure, robust to other
load on a shared machine), latency percentiles and the answers seen. `--endpoint stats` sends
stats batches of 10 events instead. The server stops by itself at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

APPS, CHANNELS, DEVICES, OVERRIDES = 100, 10, 100_000, 1_000
VERSIONS = ("1.0.1", "1.0.2", "1.0.3")


def app_name(i: int) -> str:
    return f"com.bench.app{i:03d}"


def device_ids() -> list[str]:
    rng = random.Random(7)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(DEVICES)]


def seed(url: str, key: str, data_dir: Path) -> None:
    from simulator.server.client import AdminClient
    from simulator.server.db import DB_NAME

    bundle = data_dir.parent / "bench.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("index.html", "<html>bench</html>" * 100)
    with AdminClient(url, key) as admin:
        for a in range(APPS):
            app = app_name(a)
            admin.create_app(app)
            for version in VERSIONS:
                admin.upload_bundle(app, version, zip_path=bundle, checksum="0" * 64)
            for c in range(CHANNELS):
                admin.set_channel(
                    app,
                    f"channel{c:02d}",
                    version="1.0.2",
                    public=c == 0,
                    allow_device_self_set=c == 1,
                )
            admin.set_rollout(app, "channel00", "1.0.3", 20)
    ids = device_ids()
    now = time.time()
    rows = [
        (app_name(i % APPS), d, "android", "1.0.2", "1.0.0", "8.51.14", 1, 0, None, "", now)
        for i, d in enumerate(ids)
    ]
    with sqlite3.connect(data_dir / DB_NAME, timeout=30) as db:
        db.executemany("INSERT INTO devices VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        channel_ids = {
            r[0]: r[1]
            for r in db.execute("SELECT app_id, id FROM channels WHERE name = 'channel01'")
        }
        db.executemany(
            "INSERT INTO channel_devices VALUES (?, ?, ?)",
            [
                (app_name(i % APPS), d, channel_ids[app_name(i % APPS)])
                for i, d in enumerate(ids[:OVERRIDES])
            ],
        )
    with AdminClient(url, key) as admin:  # the override set changed behind the cache
        admin.set_channel(app_name(0), "channel09", public=False)


STATS_ACTIONS = ("app_moved_to_foreground", "download_zip_start", "download_complete", "set")


def bodies(endpoint: str) -> list[bytes]:
    """Update checks (a third already up to date), or stats batches of 10 events."""
    rng = random.Random(11)
    out = []
    for i, device_id in enumerate(device_ids()[:20_000]):
        info = {
            "app_id": app_name(i % APPS),
            "device_id": device_id,
            "platform": "android",
            "version_name": "1.0.2" if rng.random() < 1 / 3 else "builtin",
            "version_build": "1.0.0",
            "version_code": "1",
            "version_os": "14",
            "plugin_version": "8.51.14",
            "is_emulator": False,
            "is_prod": True,
            "defaultChannel": "",
        }
        if endpoint == "stats":
            batch = [
                info | {"version_name": "1.0.2", "action": STATS_ACTIONS[k % 4]} for k in range(10)
            ]
            out.append(json.dumps(batch).encode())
        else:
            out.append(json.dumps(info).encode())
    return out


async def generate(url: str, endpoint: str, duration: float, concurrency: int) -> dict[str, Any]:
    import aiohttp

    payloads = bodies(endpoint)
    latencies: list[float] = []
    answers: dict[str, int] = {}
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + 2.0, start + 2.0 + duration

    async def worker(session: aiohttp.ClientSession, offset: int) -> None:
        nonlocal errors
        i = offset
        while (now := time.perf_counter()) < stop_at:
            body = payloads[i % len(payloads)]
            i += concurrency
            async with session.post(
                f"{url}/{endpoint}", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answer = await response.json()
            done = time.perf_counter()
            if done >= measure_from and now >= measure_from:
                latencies.append(done - now)
                name = answer.get("error") or ("offer" if "url" in answer else answer.get("status"))
                answers[name] = answers.get(name, 0) + 1
                errors += response.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, k) for k in range(concurrency)))
    latencies.sort()
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / duration,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "answers": answers,
        "non_200": errors,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(pid, {core})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--endpoint",
        choices=["updates", "stats"],
        default="updates",
        help="update checks, or stats batches of 10 events",
    )
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        result = generate(args.generate, args.endpoint, args.duration, args.concurrency)
        print(json.dumps(asyncio.run(result)))
        return
    from simulator.server.embedded import run_server

    with (
        tempfile.TemporaryDirectory() as tmp,
        run_server(Path(tmp) / "data", in_process=False) as srv,
    ):
        pin(srv.pid, 1)
        t0 = time.perf_counter()
        seed(srv.url, srv.admin_key, srv.data_dir)
        seconds = time.perf_counter() - t0
        print(f"seeded {APPS} apps x {CHANNELS} channels, {DEVICES} devices in {seconds:.1f} s")
        gen = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--generate",
                srv.url,
                "--duration",
                str(args.duration),
                "--concurrency",
                str(args.concurrency),
                "--endpoint",
                args.endpoint,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        pin(gen.pid, 0)
        time.sleep(2.0)  # the generator's warm-up
        cpu_start = cpu_seconds(srv.pid)
        out, _ = gen.communicate(timeout=args.duration + 120)
        server_cpu = cpu_seconds(srv.pid) - cpu_start
    result = json.loads(out)
    per_cpu_s = result["requests"] / server_cpu
    print(
        f"| {args.endpoint} requests/s | per server CPU-second | p50 ms | p99 ms | in flight "
        "| answers |\n"
        "|---|---|---|---|---|---|\n"
        f"| {result['requests_per_s']:.0f} | {per_cpu_s:.0f} | {result['p50_ms']:.1f} "
        f"| {result['p99_ms']:.1f} | {args.concurrency} | {result['answers']} "
        f"(non-200: {result['non_200']}) |"
    )


if __name__ == "__main__":
    main()
