"""CI thresholds: a headless run exits 1 when the error ratio, the p95 of `/updates`, or the
update success ratio miss the limits given with `--max-error-ratio`, `--max-p95-updates-ms`,
`--min-update-success-ratio`. Checked once, on the master (or the only process) at quit."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import RequestStats

from loadtests.outcomes import update_success

log = logging.getLogger("otasim.thresholds")


@dataclass(frozen=True)
class Limits:
    max_error_ratio: float | None = None
    max_p95_updates_ms: float | None = None
    min_update_success_ratio: float | None = None

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> Limits:
        return cls(
            options.max_error_ratio, options.max_p95_updates_ms, options.min_update_success_ratio
        )


def missed(stats: RequestStats, limits: Limits, outcomes: tuple[int, int]) -> list[str]:
    """One line per limit the run missed (empty: all held).

    Locust's entries (HTTP exchanges only) give the error ratio; `outcomes` (installed,
    failed: `loadtests.outcomes`) the success ratio, installed / (installed + rolled back +
    verification failures).
    """
    problems = []
    http = list(stats.entries.values())
    requests = sum(e.num_requests for e in http)
    failures = sum(e.num_failures for e in http)
    if limits.max_error_ratio is not None:
        ratio = failures / requests if requests else 1.0
        if ratio > limits.max_error_ratio:
            problems.append(
                f"error ratio {ratio:.4f} > {limits.max_error_ratio} ({requests} requests)"
            )
    if limits.max_p95_updates_ms is not None:
        checks = stats.entries.get(("/updates", "POST"))
        if checks is None or checks.num_requests == 0:
            problems.append("p95 of /updates: no update check was made")
        else:
            p95 = checks.get_response_time_percentile(0.95)
            if p95 > limits.max_p95_updates_ms:
                problems.append(f"p95 of /updates {p95:.0f} ms > {limits.max_p95_updates_ms} ms")
    if limits.min_update_success_ratio is not None:
        installed, failed = outcomes
        if installed + failed == 0:
            problems.append("update success ratio: no update was installed or failed")
        elif installed / (installed + failed) < limits.min_update_success_ratio:
            ratio = installed / (installed + failed)
            problems.append(
                f"update success ratio {ratio:.4f} < {limits.min_update_success_ratio} "
                f"({installed} installed, {failed} failed)"
            )
    return problems


def check_on_quit(environment: Environment, **_: object) -> None:
    """`events.quitting` listener: log what was missed and make the exit code 1."""
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    limits = Limits.from_options(environment.parsed_options)
    problems = missed(environment.stats, limits, update_success(environment))
    for problem in problems:
        log.error("threshold missed: %s", problem)
    if problems:
        environment.process_exit_code = 1
