"""Locust benchmark (issue 6): otasim's device users against Locust's FastHttpUser.

    .venv/bin/python tests/benchmarks/bench_locust.py [--rounds 3] [--duration 5]
        [--capacity 1000 2000 4000] [--capacity-duration 25]

Same nginx endpoint and pinning as bench_http.py (generator on core 0, nginx on core 1):
1. update checks per second on one core, 50 users, no wait: a device user whose task is a
   bare `check_for_update` (the agent builds, sends, parses, decides) versus a
   `FastHttpUser` POSTing the same body (Locust's runner and stats in both);
2. capacity: the shipped `DeviceUser` (sessions and waits as in a real run) at each
   `--capacity` count in one process, reporting Locust's CPU warning (fired above 90 %).
"""

from __future__ import annotations

import argparse

from bench_http import Candidate, measure, print_table, run_one
from bench_http_nginx import run_nginx

HEAD_TO_HEAD = [
    Candidate("locust-fasthttp", 50, "Locust FastHttpUser, bare POST", "locust-fasthttp",
              "bench_locust_gen.py"),
    Candidate("locust-deviceuser", 50, "otasim device user, check_for_update",
              "locust-fasthttp", "bench_locust_gen.py"),
]  # fmt: skip


def capacity(counts: list[int], duration: float) -> None:
    print("\n| DeviceUser devices in one process | /updates per s | CPU % (Locust) | CPU warning |")
    print("|---|---|---|---|")
    with run_nginx(cpu=1) as url:
        for count in counts:
            probe = Candidate("locust-capacity", count, "", "", "bench_locust_gen.py")
            figures = run_one(probe, url, duration, warmup=count / 200 + 3)  # spawning
            rate = figures["requests"] / figures["seconds"]
            print(f"| {count} | {rate:,.0f} | {figures['cpu_percent']:.0f} | "
                  f"{bool(figures['cpu_warning'])} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--capacity", type=int, nargs="*", default=[1000, 2000, 4000])
    parser.add_argument("--capacity-duration", type=float, default=25.0)
    args = parser.parse_args()
    print_table(measure(HEAD_TO_HEAD, args.rounds, args.duration), args.rounds)
    if args.capacity:
        capacity(args.capacity, args.capacity_duration)


if __name__ == "__main__":
    main()
