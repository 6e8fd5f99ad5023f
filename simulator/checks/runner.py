"""Select checks (--only/--skip) and run them in order, one result each."""

from __future__ import annotations

import fnmatch
import time
import traceback
from collections.abc import Iterable, Sequence

from agent.errors import TransportError

from simulator.checks.context import CheckContext
from simulator.checks.errors import CheckFailed, Skip
from simulator.checks.model import FAMILIES, REGISTRY, Check, Outcome, Result


def all_checks() -> list[Check]:
    """Every check, family modules imported, in registry (documentation) order."""
    from simulator.checks import bundles, decisions, protocol, transport  # noqa: F401

    order = list(FAMILIES)
    return sorted(REGISTRY.values(), key=lambda c: order.index(c.family))


def _matches(check: Check, pattern: str) -> bool:
    return check.family == pattern or fnmatch.fnmatchcase(check.id, pattern)


def select(only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Check]:
    """The checks named by `only` (all when empty) minus those named by `skip`.

    A name is a check id, a family (`protocol`, `bundle`, `decide`, `transport`) or a glob.

    Raises:
        ValueError: a name matches no check.
    """
    checks = all_checks()
    for pattern in (*only, *skip):
        if not any(_matches(c, pattern) for c in checks):
            raise ValueError(f"no check matches {pattern!r} (otasim check --list shows them)")
    chosen = [c for c in checks if not only or any(_matches(c, p) for p in only)]
    return [c for c in chosen if not any(_matches(c, p) for p in skip)]


def run_one(ctx: CheckContext, check: Check) -> Result:
    started = time.perf_counter()
    try:
        outcome = check.run(ctx)
    except Skip as exc:
        outcome = Outcome("skip", str(exc))
    except CheckFailed as exc:
        outcome = Outcome("fail", str(exc))
    except TransportError as exc:
        outcome = Outcome("fail", f"no answer: {exc}")
    except Exception as exc:  # a checker bug is reported, never blamed on the server
        where = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = Outcome(
            "error", f"checker error {type(exc).__name__}: {exc} ({where.name}:{where.lineno})"
        )
    return Result.of(check, outcome, time.perf_counter() - started)


def run_checks(ctx: CheckContext, checks: Iterable[Check]) -> list[Result]:
    """Run the checks (those that read the whole log last); results in the given order."""
    chosen = list(checks)
    done = {c.id: run_one(ctx, c) for c in sorted(chosen, key=lambda c: c.reads_log)}
    return [done[c.id] for c in chosen]
