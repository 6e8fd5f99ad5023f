"""`python -m loadtests`: Locust itself, with otasim's options registered before Locust reads
the command line, so that `python -m loadtests -f loadtests/locustfile.py --help` lists them.

Plain `locust -f loadtests/locustfile.py --help` cannot: Locust answers --help before it
imports the locustfile whose hook adds them (locustio/locust#2917). Everything else is the
same as `locust` (same options, same exit codes).
"""

from __future__ import annotations

import sys

from locust import events  # first: Locust patches the standard library for gevent
from locust.main import main

from loadtests.settings import add_options

if __name__ == "__main__":
    events.init_command_line_parser.add_listener(add_options)
    sys.argv[0] = "locust"
    main()
