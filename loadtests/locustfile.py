"""otasim's Locust entry point: real device agents as users.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8787 [--headless -u 100 -r 10 -t 60s]
    python -m loadtests -f loadtests/locustfile.py --help  # Locust's help and otasim's options

See docs/loadtests.md: options, load shapes, thresholds, distributed runs.
"""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape, events

from loadtests import outcomes
from loadtests.settings import add_options
from loadtests.shapes import Plan, Tick, plan_from_options
from loadtests.thresholds import check_on_quit
from loadtests.users import DeviceUser, write_worker_summary

__all__ = ["DeviceUser", "OtasimShape"]


class OtasimShape(LoadTestShape):
    """The load shape chosen with `--load-shape` (default `steady`: plain -u/-r/-t).

    Built from the parsed options on its first tick; in distributed runs it runs on the master.
    """

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self._plan: Plan | None = None

    def tick(self) -> Tick:
        if self._plan is None:
            assert self.runner is not None
            self._plan = plan_from_options(self.runner.environment.parsed_options)
        return self._plan.users_at(self.get_run_time())


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    add_options(parser)


events.init.add_listener(lambda environment, **_: outcomes.install(environment))
events.quitting.add_listener(check_on_quit)
events.quitting.add_listener(outcomes.write_on_quit)
events.quitting.add_listener(write_worker_summary)
