"""Update outcomes and transport retries, counted apart from Locust's request statistics.

Locust's request table (and its Aggregated row) holds HTTP exchanges only. What is not an HTTP
exchange is counted here: update outcomes (`installed`, `rolled back`, `verification
failure`) and the attempts the agent retried within one exchange (a keep-alive reconnect
that the second attempt completed is one successful request, plus one retry here). Workers
send their counts with each report to the master; at quit the master (or the only process)
logs the table and writes `<--csv prefix>_outcomes.csv` (kind, name, count).
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner

UPDATE, RETRY = "update", "retry"
INSTALLED, ROLLED_BACK, VERIFICATION_FAILURE = "installed", "rolled back", "verification failure"
FAILED_OUTCOMES = (ROLLED_BACK, VERIFICATION_FAILURE)
REPORT_KEY = "otasim_outcomes"

log = logging.getLogger("otasim.outcomes")
_counts: dict[int, Counter[tuple[str, str]]] = {}  # per environment: (kind, name) -> count


def counts(environment: Environment) -> Counter[tuple[str, str]]:
    """This process's counts (the master's: everything its workers reported)."""
    return _counts.setdefault(id(environment), Counter())


def count(environment: Environment, kind: str, name: str) -> None:
    counts(environment)[(kind, name)] += 1


def update_success(environment: Environment) -> tuple[int, int]:
    """(installed, failed) update outcomes."""
    totals = counts(environment)
    return totals[(UPDATE, INSTALLED)], sum(totals[(UPDATE, n)] for n in FAILED_OUTCOMES)


def report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    """Worker side of `events.report_to_master`: send the counts since the last report."""
    environment = _reporting.get(client_id)
    if environment is None:
        return
    mine = counts(environment)
    data[REPORT_KEY] = [[kind, name, n] for (kind, name), n in mine.items()]
    mine.clear()


def worker_report(environment: Environment) -> Any:
    """A master-side `events.worker_report` listener adding each worker's counts."""

    def listener(client_id: str, data: dict[str, Any], **_: Any) -> None:
        for kind, name, n in data.get(REPORT_KEY, []):
            counts(environment)[(kind, name)] += int(n)

    return listener


_reporting: dict[str, Environment] = {}


def install(environment: Environment) -> None:
    """Hook the counts into this process's reports (`events.init`)."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        _reporting[runner.client_id] = environment
        environment.events.report_to_master.add_listener(report_to_master)
    else:
        environment.events.worker_report.add_listener(worker_report(environment))


def write_on_quit(environment: Environment, **_: Any) -> None:
    """`events.quitting`: log the outcomes table; write `<csv>_outcomes.csv` when --csv."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    rows = sorted(counts(environment).items())
    for (kind, name), n in rows:
        log.info("%-7s %-22s %d", kind, name, n)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        with open(f"{prefix}_outcomes.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Kind", "Name", "Count"])
            writer.writerows([kind, name, n] for (kind, name), n in rows)
