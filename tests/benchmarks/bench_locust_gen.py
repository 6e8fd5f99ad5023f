"""Locust generators of the benchmarks (library mode, the runner and its stats included).

    python bench_locust_gen.py CANDIDATE URL USERS WARMUP_S DURATION_S

- `locust-fasthttp`: Locust's `FastHttpUser` POSTing the canned update check, no wait;
- `locust-deviceuser`: otasim's device user (`DeviceUserBase`) whose one task is a bare
  `check_for_update` (the agent builds, sends and parses the same check), no wait;
- `locust-capacity`: `DeviceUser` as shipped (sessions, waits) — is the process still
  responsive with USERS devices? Reports Locust's CPU warning.

Prints one JSON line: `/updates` requests in the measured window, errors, seconds (and
`cpu_warning` for the capacity probe).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from bench_http_gen import BODY, HEADERS, Window  # noqa: E402
from locust import FastHttpUser, User, constant, task  # noqa: E402
from locust.argument_parser import get_parser  # noqa: E402
from locust.env import Environment  # noqa: E402

from loadtests.settings import add_options  # noqa: E402
from loadtests.users import DeviceUser, DeviceUserBase  # noqa: E402


def user_class(name: str, base: str, path: str) -> type[User]:
    if name == "locust-fasthttp":

        class BarePost(FastHttpUser):
            host = base
            wait_time = constant(0)

            @task
            def check(self) -> None:
                self.client.post(f"/{path}", data=BODY, headers=HEADERS)

        return BarePost
    if name == "locust-deviceuser":

        class CheckingDevice(DeviceUserBase):
            host = base
            wait_time = constant(0)

            @task
            def check(self) -> None:
                self.device_now.check_for_update()

        return CheckingDevice

    class ShippedDevice(DeviceUser):
        host = base

    return ShippedDevice


def measure(name: str, url: str, users: int, window: Window) -> dict[str, Any]:
    base, path = url.rsplit("/", 1)
    parser = get_parser()
    add_options(parser)
    # the default device root: in /dev/shm, removed when this process exits
    options = parser.parse_args(["--max-devices-per-worker", str(users)])
    env = Environment(user_classes=[user_class(name, base, path)], parsed_options=options)
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=min(users, 200))
    gevent.sleep(window.start - time.monotonic())
    checks = env.stats.get(f"/{path}", "POST")
    window.at_start = checks.num_requests
    gevent.sleep(window.end - time.monotonic())
    window.at_end = checks.num_requests
    window.errors = env.stats.total.num_failures
    cpu_warning = runner.cpu_warning_emitted
    runner.quit()
    top_errors = sorted(env.stats.errors.values(), key=lambda e: -e.occurrences)[:3]
    return {
        **window.result(),
        "cpu_warning": cpu_warning,
        "cpu_percent": runner.current_cpu_usage,
        "top_errors": [
            f"{e.occurrences} x {e.method} {e.name}: {e.error}"[:200] for e in top_errors
        ],
    }


def main() -> None:
    name, url, users_text, warmup_text, duration_text = sys.argv[1:6]
    window = Window(float(warmup_text), float(duration_text))
    figures = measure(name, url, int(users_text), window)
    print(json.dumps({"candidate": name, "concurrency": int(users_text), **figures}))


if __name__ == "__main__":
    main()
