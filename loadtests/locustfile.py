"""otasim's Locust entry point: real device agents as users.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 [--headless -u 100 -r 10 -t 60s]
    locust -f loadtests/locustfile.py --help          # the otasim options are listed at the end

See docs/loadtests.md: options, load shapes, thresholds, distributed runs.
"""

from __future__ import annotations

from typing import Any

from locust import events

from loadtests.settings import add_options
from loadtests.shapes import OtasimShape
from loadtests.thresholds import check_on_quit
from loadtests.users import DeviceUser

__all__ = ["DeviceUser", "OtasimShape"]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    add_options(parser)


events.quitting.add_listener(check_on_quit)
