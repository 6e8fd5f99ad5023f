"""Every server dialect the agent speaks, by name: the one list the rest of otasim reads.

`AgentConfig.dialect` names one of `DIALECTS`; the drivers build it with `dialect_for(config)`.
A `DialectSpec` also says where a dialect's endpoints live under a server's base URL, so that
`--server URL` (and the embedded reference server) work for every dialect. Adding a dialect is
one module beside `capgo.py` and one line here (see docs/dialects.md for the other three
steps: the reference server's routes, the publish step, the scenario/CLI name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.protocol.appflow import AppflowDialect
from agent.protocol.capawesome import CapawesomeDialect
from agent.protocol.capgo import CapgoDialect
from agent.protocol.codepush import CodePushDialect
from agent.protocol.expo import ExpoDialect
from agent.protocol.profiles import get_profile

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.protocol.base import Dialect

DEFAULT_DIALECT = "capgo"


@dataclass(frozen=True)
class DialectSpec:
    """One dialect: how to build it for an app's config and where its endpoints live.

    `paths` are the update, stats and channel endpoints under a server's base URL: a path
    ("updates"), "." for the base URL itself (a dialect that builds its own paths from it), or
    "" when the dialect has no such endpoint (its devices send no stats, set no channel).
    """

    name: str
    family: str  # what users call the server family
    make: Callable[[AgentConfig], Dialect]
    paths: tuple[str, str, str]
    reports: frozenset[str] | None = None  # the stats actions its devices send (None: all)
    uses_key: bool = True  # the app's (Capgo) public key means something to it

    def urls(self, base: str) -> tuple[str, str, str]:
        """The update, stats and channel URLs of a server at `base`."""
        root = base.rstrip("/")
        return tuple(  # type: ignore[return-value]
            root if p == "." else f"{root}/{p}" if p else "" for p in self.paths
        )


def _capgo(config: AgentConfig) -> Dialect:
    return CapgoDialect(get_profile(config.plugin))


def _capawesome(config: AgentConfig) -> Dialect:
    return CapawesomeDialect()


def _appflow(config: AgentConfig) -> Dialect:
    return AppflowDialect()


_SPECS = (
    DialectSpec("capgo", "Capgo", _capgo, ("updates", "stats", "channel_self")),
    DialectSpec(
        "expo",
        "Expo Updates (protocol v1)",
        ExpoDialect.from_config,
        ("expo", "", ""),
        ExpoDialect.reported_actions,
    ),
    DialectSpec(
        "codepush",
        "CodePush (react-native-code-push)",
        CodePushDialect.from_config,
        ("v0.1/public/codepush/update_check", "v0.1/public/codepush/report_status", ""),
        CodePushDialect.reported_actions,
    ),
    DialectSpec("capawesome", "Capawesome Live Update", _capawesome, (".", "", ""), frozenset()),
    DialectSpec(
        "appflow", "Ionic Appflow Deploy", _appflow, (".", "", ""), frozenset(), uses_key=False
    ),
)
DIALECTS: dict[str, DialectSpec] = {spec.name: spec for spec in _SPECS}


def dialect_spec(name: str) -> DialectSpec:
    """The spec of dialect `name`.

    Raises:
        ValueError: no dialect has that name.
    """
    spec = DIALECTS.get(name)
    if spec is None:
        raise ValueError(f"unknown dialect {name!r} (known: {', '.join(DIALECTS)})")
    return spec


def dialect_for(config: AgentConfig) -> Dialect:
    """The dialect an app's config names (`AgentConfig.dialect`), built for that config."""
    return dialect_spec(config.dialect).make(config)
