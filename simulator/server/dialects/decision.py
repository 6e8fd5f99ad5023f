"""Reading a Capgo decision from another dialect's route: what it offers, or builtin."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from simulator.server.model import BUILTIN, Answer, Bundle


def offered(answer: Answer, bundle: Bundle | None, dialect: str) -> Mapping[str, Any] | None:
    """The `dialect` artefacts of the bundle the decision offers; None when it offers nothing,
    or a bundle published without them (that dialect's devices then get no update)."""
    if answer.body.get("url") is None or bundle is None:
        return None
    return bundle.dialects.get(dialect)


def to_builtin(answer: Answer) -> bool:
    """The decision sends the device back to the bundle in its binary."""
    return (
        answer.body.get("error") == "already_on_builtin" and answer.body.get("version") == BUILTIN
    )
