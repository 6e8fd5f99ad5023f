"""What a check is, what it concludes, and the registry the family modules fill.

A check is a small function of the `CheckContext` (simulator/checks/context.py) registered with
`@check(id, title, severity, why)`. It returns an `Outcome`: `passed`, `failed`, `warned`
(a problem that does not stop devices, or evidence too thin to pass) or `skipped` (what it
needs is missing: a public key, --allow-writes, an offer). A check may also raise `Skip` or
`CheckFailed` (simulator/checks/errors.py) from deep inside a helper (the context raises
`Skip` when the server offers nothing to download).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from simulator.checks.context import CheckContext

Severity = Literal["error", "warning"]
Status = Literal["pass", "fail", "warn", "skip", "error"]
FAMILIES = {
    "protocol": "Protocol answers",
    "bundle": "Bundles",
    "decide": "Decisions",
    "transport": "Transport and hardening",
}


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str


def passed(detail: str) -> Outcome:
    return Outcome("pass", detail)


def failed(detail: str) -> Outcome:
    return Outcome("fail", detail)


def warned(detail: str) -> Outcome:
    return Outcome("warn", detail)


def skipped(reason: str) -> Outcome:
    return Outcome("skip", reason)


CheckFunction = Callable[["CheckContext"], Outcome]


@dataclass(frozen=True)
class Check:
    """One registered check. `why` is one line: what devices suffer when it fails."""

    id: str
    title: str
    severity: Severity
    why: str
    run: CheckFunction
    reads_log: bool = False  # judges the whole conversation: runs after the other checks

    @property
    def family(self) -> str:
        return self.id.split(".", 1)[0]


REGISTRY: dict[str, Check] = {}


def check(
    id: str, title: str, severity: Severity, why: str, *, reads_log: bool = False
) -> Callable[[CheckFunction], Check]:
    """Register the decorated function as a check (ids are `<family>.<name>`, unique).

    `reads_log`: the check judges every answer of the run (`CheckContext.log`), so it runs
    after the others; it is still reported in its place.
    """

    def register(func: CheckFunction) -> Check:
        family = id.split(".", 1)[0]
        if family not in FAMILIES or id in REGISTRY:
            raise ValueError(f"bad or duplicate check id {id!r}")
        registered = Check(id, title, severity, why, func, reads_log)
        REGISTRY[id] = registered
        return registered

    return register


@dataclass(frozen=True)
class Result:
    """A check's outcome as reported: a problem on a warning-severity check shows as `warn`."""

    check: Check
    status: Status
    detail: str
    duration_s: float

    @classmethod
    def of(cls, check: Check, outcome: Outcome, duration_s: float) -> Result:
        status = outcome.status
        if status == "fail" and check.severity == "warning":
            status = "warn"
        return cls(check, status, outcome.detail, duration_s)
