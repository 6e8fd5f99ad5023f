"""HTTP stack benchmark (issue 3): update checks per second per client stack, one core each.

    .venv/bin/python tests/benchmarks/bench_http.py [--rounds 3] [--duration 5] [--only NAME ...]

Starts nginx on 127.0.0.1 (its own temp prefix; Debian's `nginx-light`) answering a canned
`/updates`, pinned to core 1; every candidate runs in its own process pinned to core 0 and
POSTs the same update-check body for `--duration` seconds after a 1 s warm-up. Rounds are
interleaved so that noise from other load spreads over all candidates. Prints the median
req/s per candidate and its ratio to raw aiohttp, as a Markdown table. Stops nginx itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench_http_nginx import run_nginx

HERE = Path(__file__).parent
# (candidate, concurrency, what it is)
CANDIDATES = [
    ("httpx-async", 1, "httpx.AsyncClient, 1 in flight"),
    ("httpx-async", 50, "httpx.AsyncClient (httpcore pool)"),
    ("httpx-aiohttp", 50, "httpx.AsyncClient over httpx-aiohttp transport"),
    ("aiohttp", 50, "raw aiohttp ClientSession"),
    ("port-aiohttp", 50, "agent port, aiohttp backend"),
    ("port-httpx", 50, "agent port, httpx backend"),
    ("httpx-sync-gevent", 50, "httpx.Client under gevent, 50 greenlets"),
    ("geventhttpclient", 50, "raw geventhttpclient HTTPClient"),
    ("port-geventhttpclient", 50, "agent port, geventhttpclient backend"),
    ("locust-fasthttp", 50, "Locust FastHttpUser x50, library runner"),
]
REFERENCE = ("aiohttp", 50)


def run_one(name: str, concurrency: int, url: str, duration: float) -> float:
    command = [
        "taskset", "-c", "0", sys.executable, str(HERE / "bench_http_gen.py"),
        name, url, str(concurrency), "1", str(duration),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: {done.stderr.strip()[-2000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["errors"]:
        print(f"warning: {name}@{concurrency}: {figures['errors']} errors", file=sys.stderr)
    return float(figures["requests"]) / float(figures["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args()
    chosen = [c for c in CANDIDATES if not args.only or c[0] in args.only]
    if importlib.util.find_spec("httpx_aiohttp") is None:
        print("note: httpx-aiohttp not installed, its candidate is left out", file=sys.stderr)
        chosen = [c for c in chosen if c[0] != "httpx-aiohttp"]
    rates: dict[tuple[str, int], list[float]] = {(n, c): [] for n, c, _ in chosen}
    with run_nginx(cpu=1) as url:
        for _ in range(args.rounds):
            for name, concurrency, _ in chosen:
                rates[(name, concurrency)].append(run_one(name, concurrency, url, args.duration))
    medians = {key: statistics.median(values) for key, values in rates.items()}
    reference = medians.get(REFERENCE)
    print(f"| candidate | in flight | median req/s ({args.rounds} runs) | vs raw aiohttp |")
    print("|---|---|---|---|")
    for name, concurrency, what in chosen:
        median = medians[(name, concurrency)]
        ratio = f"{median / reference:.2f}" if reference else "-"
        print(f"| {name} ({what}) | {concurrency} | {median:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
