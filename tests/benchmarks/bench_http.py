"""HTTP stack benchmark (issue 3): update checks per second per client stack, one core each.

    .venv/bin/python tests/benchmarks/bench_http.py [--rounds 3] [--duration 5] [--only NAME ...]

Starts nginx on 127.0.0.1 (its own temp prefix; Debian's `nginx-light`) answering a canned
`/updates`, pinned to core 1; every candidate runs in its own process pinned to core 0 and
POSTs the same update-check body for `--duration` seconds after a 1 s warm-up (`agent-*`
candidates: devices running the agent, checking for updates). Rounds are interleaved so
that noise from other load spreads over all candidates. Prints the median checks/s per
candidate and its ratio to the raw client of its family, as a Markdown table. Stops nginx.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from bench_http_nginx import run_nginx

HERE = Path(__file__).parent


class Candidate(NamedTuple):
    name: str
    concurrency: int
    what: str
    reference: str  # the raw client it is compared with
    script: str = "bench_http_gen.py"


CANDIDATES = [
    Candidate("httpx-async", 1, "httpx.AsyncClient, 1 in flight", "aiohttp"),
    Candidate("httpx-async", 50, "httpx.AsyncClient (httpcore pool)", "aiohttp"),
    Candidate("httpx-aiohttp", 50, "httpx.AsyncClient over httpx-aiohttp", "aiohttp"),
    Candidate("aiohttp", 50, "raw aiohttp ClientSession", "aiohttp"),
    Candidate("port-aiohttp", 50, "agent HTTP port, aiohttp backend", "aiohttp"),
    Candidate("port-httpx", 50, "agent HTTP port, httpx backend", "aiohttp"),
    Candidate("agent-aio", 50, "50 devices, asyncio driver, aiohttp port", "aiohttp"),
    Candidate("httpx-sync-gevent", 50, "httpx.Client under gevent", "geventhttpclient"),
    Candidate("geventhttpclient", 50, "raw geventhttpclient HTTPClient", "geventhttpclient"),
    Candidate("port-geventhttpclient", 50, "agent port, geventhttpclient", "geventhttpclient"),
    Candidate("agent-sync-gevent", 50, "50 devices, blocking driver, gevent", "geventhttpclient"),
    Candidate("locust-fasthttp", 50, "Locust FastHttpUser (runner + stats)", "geventhttpclient",
              "bench_locust_gen.py"),
]  # fmt: skip


def run_one(candidate: Candidate, url: str, duration: float, warmup: float = 1.0) -> dict[str, Any]:
    """Run one candidate in its own process pinned to core 0; its JSON figures."""
    command = [
        "taskset", "-c", "0", sys.executable, str(HERE / candidate.script),
        candidate.name, url, str(candidate.concurrency), str(warmup), str(duration),
    ]  # fmt: skip
    timeout = warmup + duration + 120
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{candidate.name}: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["errors"]:
        print(f"warning: {candidate.name}: {figures['errors']} errors", file=sys.stderr)
    for line in figures.get("top_errors", []):
        print(f"  {line}", file=sys.stderr)
    return figures


def measure(candidates: list[Candidate], rounds: int, duration: float) -> dict[Candidate, float]:
    """Median req/s of each candidate over interleaved rounds, nginx started and stopped here."""
    rates: dict[Candidate, list[float]] = {c: [] for c in candidates}
    with run_nginx(cpu=1) as url:
        for _ in range(rounds):
            for candidate in candidates:
                figures = run_one(candidate, url, duration)
                rates[candidate].append(figures["requests"] / figures["seconds"])
    return {c: statistics.median(values) for c, values in rates.items()}


def print_table(medians: dict[Candidate, float], rounds: int) -> None:
    by_name = {(c.name, c.concurrency): m for c, m in medians.items()}
    print(f"| candidate | in flight | median checks/s ({rounds} runs) | ratio to raw |")
    print("|---|---|---|---|")
    for candidate, median in medians.items():
        reference = by_name.get((candidate.reference, 50))
        ratio = f"{median / reference:.2f} (vs {candidate.reference})" if reference else "-"
        what = f"{candidate.name}: {candidate.what}"
        print(f"| {what} | {candidate.concurrency} | {median:,.0f} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args()
    chosen = [c for c in CANDIDATES if not args.only or c.name in args.only]
    if importlib.util.find_spec("httpx_aiohttp") is None:
        print("note: httpx-aiohttp not installed, its candidate is left out", file=sys.stderr)
        chosen = [c for c in chosen if c.name != "httpx-aiohttp"]
    print_table(measure(chosen, args.rounds, args.duration), args.rounds)


if __name__ == "__main__":
    main()
