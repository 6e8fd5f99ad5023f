"""Scenario files (TOML): the fleet mix, the releases, the timeline, faults and expectations.

A scenario is data. `load_scenario(name_or_path)` reads a bundled scenario by name (the
files in `simulator/scenarios/`) or any TOML file, validates every key and returns a frozen
`Scenario`. Errors name the file, the key and what is wrong (`ScenarioError`).

Times in files are hours of simulated fleet life (`at_h`, `duration_h`); values that pick
per device (platform, os, channel, network, behaviour, native_version, dialect) are a string, a list
(uniform choice) or a table of weights (`{ "4g" = 3, "wifi" = 1 }`). The full format is in
docs/simulator.md.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.protocol.registry import DEFAULT_DIALECT, DIALECTS

from simulator.metrics import METRICS
from simulator.network import PROFILES

SCENARIO_DIR = Path(__file__).parent / "scenarios"
ACTIONS = (
    "publish",
    "rollout",
    "pause",
    "resume",
    "complete",
    "rollback",
    "server_down",
    "server_up",
)
PLATFORMS = ("ios", "android")
Choice = tuple[tuple[str, float], ...]  # (value, weight)


class ScenarioError(ValueError):
    """A scenario file is invalid: `<file>: <key>: <what is wrong>`."""


@dataclass(frozen=True)
class Behaviour:
    """How the people holding a group of phones use the app."""

    sessions_per_day: float = 8.0  # times the app comes to the foreground (launch or resume)
    session_min: float = 4.0  # mean time in foreground
    kill_share: float = 0.3  # sessions that end with the app killed instead of backgrounded
    reboots_per_day: float = 0.05


@dataclass(frozen=True)
class Group:
    share: float
    platform: Choice
    os: Choice
    native_version: Choice
    channel: Choice
    network: Choice
    behaviour: Choice
    mitm: bool
    dialect: Choice = (("capgo", 1.0),)  # the server protocol (agent.protocol.registry)


@dataclass(frozen=True)
class Release:
    """A bundle the simulator builds (embedded server) with its otasim behaviour file."""

    version: str
    size_kb: int = 200
    crash_on_boot: tuple[tuple[str, float], ...] = ()  # (platform, probability)
    boots: bool = True  # False: no index.html, never boots
    delta: bool = False
    start_s: float = 0.0  # the app calls notifyAppReady() this long after booting it


@dataclass(frozen=True)
class Step:
    at_s: float
    action: str
    version: str | None = None
    channel: str = "production"
    percent: float | None = None


@dataclass(frozen=True)
class Expectation:
    metric: str
    version: str | None = None
    at_s: float | None = None
    min: float | None = None
    max: float | None = None
    about: str | None = None  # the endpoint or cause the metric is narrowed to

    def describe(self) -> str:
        of = self.version or self.about
        what = self.metric + (f"({of})" if of else "")
        when = f" at {self.at_s / 3600:g} h" if self.at_s is not None else ""
        bound = f">= {self.min:g}" if self.min is not None else f"<= {self.max:g}"
        return f"{what}{when} {bound}"


@dataclass(frozen=True)
class DiskFull:
    """A share of the fleet whose disk is full from `from_s` until `until_s` (run time)."""

    share: float
    from_s: float
    until_s: float


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    description: str
    duration_s: float
    devices: int
    time_scale: float | None  # an optional cap: simulated seconds per real second
    app_id: str
    native_version: str
    groups: tuple[Group, ...]
    behaviours: dict[str, Behaviour]
    releases: tuple[Release, ...]
    timeline: tuple[Step, ...]
    mitm_modes: Choice  # each device behind the MITM gets one of these modes
    mitm_rate: float
    expectations: tuple[Expectation, ...]
    disk_full: DiskFull | None = None


def with_dialect(scenario: Scenario, dialect: str) -> Scenario:
    """`scenario` with every fleet group speaking `dialect` (`otasim run --dialect`)."""
    groups = tuple(replace(g, dialect=((dialect, 1.0),)) for g in scenario.groups)
    return replace(scenario, groups=groups)


def bundled_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str) -> Scenario:
    """Load a bundled scenario by name, or a TOML file by path.

    Raises:
        ScenarioError: not found, not TOML, or any key invalid (file, key and reason named).
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(bundled_scenarios())
        raise ScenarioError(f"{name_or_path}: no such scenario file or bundled name ({known})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return _Reader(str(path)).scenario(raw, path.stem)


BUILTIN_BEHAVIOURS = {
    "daily": Behaviour(),
    "heavy": Behaviour(sessions_per_day=20, session_min=6, kill_share=0.2),
    "rare": Behaviour(sessions_per_day=1, session_min=3, kill_share=0.5),
}
_TOP = {
    "name", "description", "duration_h", "devices", "time_scale", "app_id", "native_version",
    "fleet", "behaviours", "releases", "timeline", "mitm", "expect", "disk_full", "dialect",
}  # fmt: skip


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _Reader:
    """Validates raw TOML data into a Scenario; every error names file and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, what: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {key}: {what}")

    def table(self, raw: object, key: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected a table, got {type(raw).__name__}")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise self.fail(
                _join(key, unknown[0]), f"unknown key (known: {', '.join(sorted(known))})"
            )
        return raw

    def items(self, raw: dict[str, Any], key: str) -> list[Any]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "expected an array of tables ([[" + key + "]])")
        return value

    def number(
        self, t: dict[str, Any], key: str, where: str, default: float | None = None,
        lo: float = 0.0, hi: float = float("inf"),
    ) -> float:  # fmt: skip
        value = t.get(key, default)
        if value is None:
            raise self.fail(_join(where, key), "required")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(_join(where, key), f"expected a number, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(_join(where, key), f"{value!r} is out of range [{lo:g}, {hi:g}]")
        return float(value)

    def string(self, t: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = t.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(_join(where, key), f"expected a non-empty string, got {value!r}")
        return value

    def choice(
        self, t: dict[str, Any], key: str, where: str, default: str, allowed: object = None
    ) -> Choice:
        value = t.get(key, default)
        if isinstance(value, str):
            pairs: list[tuple[str, float]] = [(value, 1.0)]
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            pairs = [(v, 1.0) for v in value]
        elif isinstance(value, dict) and value:
            pairs = [(k, self.number(value, k, _join(where, key))) for k in value]
        else:
            raise self.fail(_join(where, key), "expected a string, a list of strings or weights")
        for v, _ in pairs:
            if allowed is not None and v not in allowed:  # type: ignore[operator]
                known = ", ".join(sorted(allowed))  # type: ignore[call-overload]
                raise self.fail(_join(where, key), f"unknown value {v!r} (known: {known})")
        if sum(w for _, w in pairs) <= 0:
            raise self.fail(_join(where, key), "weights must add up to more than 0")
        return tuple(pairs)

    def scenario(self, raw: dict[str, Any], stem: str) -> Scenario:
        self.table(raw, "", _TOP)
        behaviours = dict(BUILTIN_BEHAVIOURS)
        for name, b in self.table(
            raw.get("behaviours", {}), "behaviours", set(raw.get("behaviours", {}))
        ).items():
            behaviours[name] = self.behaviour(b, f"behaviours.{name}")
        releases = tuple(
            self.release(r, f"releases[{i}]") for i, r in enumerate(self.items(raw, "releases"))
        )
        duration_s = self.number(raw, "duration_h", "", 24, lo=0.01) * 3600
        versions = {r.version for r in releases}
        dialect = self.choice(raw, "dialect", "", DEFAULT_DIALECT, set(DIALECTS))
        groups = tuple(
            self.group(g, f"fleet[{i}]", behaviours, dialect)
            for i, g in enumerate(self.items(raw, "fleet"))
        )
        if not groups:
            raise self.fail("fleet", "at least one [[fleet]] group is required")
        mitm = self.table(raw.get("mitm", {}), "mitm", {"mode", "rate"})
        modes = self.choice(mitm, "mode", "mitm", "flip", {"flip", "swap", "replay"})
        if "mode" not in mitm and any(g.mitm for g in groups):
            raise self.fail("mitm.mode", "required when a fleet group sets mitm = true")
        return Scenario(
            name=self.string(raw, "name", "", stem),
            source=self.source,
            description=str(raw.get("description", "")),
            duration_s=duration_s,
            devices=int(self.number(raw, "devices", "", 1000, lo=1)),
            time_scale=(
                self.number(raw, "time_scale", "", lo=1e-3) if "time_scale" in raw else None
            ),
            app_id=self.string(raw, "app_id", "", "com.example.otasim"),
            native_version=self.string(raw, "native_version", "", "1.0.0"),
            groups=groups,
            behaviours=behaviours,
            releases=releases,
            timeline=tuple(
                self.step(s, f"timeline[{i}]", versions, duration_s)
                for i, s in enumerate(self.items(raw, "timeline"))
            ),
            mitm_modes=modes if "mode" in mitm else (),
            mitm_rate=self.number(mitm, "rate", "mitm", 1.0, hi=1.0),
            expectations=tuple(
                self.expectation(e, f"expect[{i}]", versions, duration_s)
                for i, e in enumerate(self.items(raw, "expect"))
            ),
            disk_full=self.disk_full(raw["disk_full"], duration_s) if "disk_full" in raw else None,
        )

    def disk_full(self, raw: object, duration_s: float) -> DiskFull:
        t = self.table(raw, "disk_full", {"share", "from_h", "until_h"})
        hours = duration_s / 3600
        from_h = self.number(t, "from_h", "disk_full", 0.0, hi=hours)
        until_h = self.number(t, "until_h", "disk_full", hours, hi=hours)
        if until_h <= from_h:
            raise self.fail("disk_full.until_h", f"must be after from_h ({from_h:g})")
        return DiskFull(
            share=self.number(t, "share", "disk_full", hi=1.0),
            from_s=from_h * 3600,
            until_s=until_h * 3600,
        )

    def behaviour(self, raw: object, where: str) -> Behaviour:
        t = self.table(raw, where, set(Behaviour.__dataclass_fields__))
        base = Behaviour()
        values = {k: self.number(t, k, where, getattr(base, k)) for k in t}
        if values.get("kill_share", 0) > 1:
            raise self.fail(f"{where}.kill_share", "a share must be within [0, 1]")
        if values.get("sessions_per_day", 1) <= 0:
            raise self.fail(
                f"{where}.sessions_per_day",
                "must be above 0 (the app must open to run; for no devices, give the group"
                " share 0)",
            )
        return Behaviour(**values)

    def release(self, raw: object, where: str) -> Release:
        t = self.table(
            raw, where, {"version", "size_kb", "crash_on_boot", "boots", "delta", "start_s"}
        )
        crash = self.table(t.get("crash_on_boot", {}), f"{where}.crash_on_boot", set(PLATFORMS))
        boots, delta = t.get("boots", True), t.get("delta", False)
        if not isinstance(boots, bool) or not isinstance(delta, bool):
            raise self.fail(where, "boots and delta must be true or false")
        return Release(
            version=self.string(t, "version", where),
            size_kb=int(self.number(t, "size_kb", where, 200, lo=1, hi=512 * 1024)),
            crash_on_boot=tuple(
                (p, self.number(crash, p, f"{where}.crash_on_boot", hi=1)) for p in crash
            ),
            boots=boots,
            delta=delta,
            start_s=self.number(t, "start_s", where, 0.0),
        )

    def group(
        self, raw: object, where: str, behaviours: dict[str, Behaviour], dialect: Choice
    ) -> Group:
        keys = {
            "dialect",
            "share",
            "platform",
            "os",
            "native_version",
            "channel",
            "network",
            "behaviour",
            "mitm",
        }
        t = self.table(raw, where, keys)
        mitm = t.get("mitm", False)
        if not isinstance(mitm, bool):
            raise self.fail(f"{where}.mitm", "expected true or false")
        return Group(
            share=self.number(t, "share", where, 1.0),
            platform=self.choice(t, "platform", where, "android", PLATFORMS),
            os=self.choice(t, "os", where, "14"),
            native_version=self.choice(t, "native_version", where, "1.0.0"),
            channel=self.choice(t, "channel", where, "production"),
            network=self.choice(t, "network", where, "4g", set(PROFILES)),
            behaviour=self.choice(t, "behaviour", where, "daily", set(behaviours)),
            mitm=mitm,
            dialect=(
                self.choice(t, "dialect", where, DEFAULT_DIALECT, set(DIALECTS))
                if "dialect" in t
                else dialect
            ),
        )

    def step(self, raw: object, where: str, versions: set[str], duration_s: float) -> Step:
        t = self.table(raw, where, {"at_h", "action", "version", "channel", "percent"})
        action = self.string(t, "action", where)
        if action not in ACTIONS:
            raise self.fail(
                f"{where}.action", f"unknown action {action!r} (known: {', '.join(ACTIONS)})"
            )
        version = t.get("version")
        needs_version = action in ("publish", "rollout", "rollback")
        if needs_version and version is None:
            raise self.fail(f"{where}.version", f"required by action {action!r}")
        if (
            version is not None
            and version not in versions
            and not (action == "rollback" and version == "builtin")
        ):
            raise self.fail(f"{where}.version", f"{version!r} is not one of the [[releases]]")
        percent = self.number(t, "percent", where, None if action == "rollout" else 100, hi=100)
        return Step(
            at_s=self.number(t, "at_h", where, hi=duration_s / 3600) * 3600,
            action=action,
            version=version,
            channel=self.string(t, "channel", where, "production"),
            percent=percent,
        )

    def expectation(
        self, raw: object, where: str, versions: set[str], duration_s: float
    ) -> Expectation:
        keys = {"metric", "version", "at_h", "min", "max", "endpoint", "cause"}
        t = self.table(raw, where, keys)
        metric = self.string(t, "metric", where)
        if metric not in METRICS:
            raise self.fail(
                f"{where}.metric", f"unknown metric {metric!r} (known: {', '.join(METRICS)})"
            )
        spec = METRICS[metric]
        version = t.get("version")
        if spec.needs_version and version not in versions:
            raise self.fail(
                f"{where}.version",
                f"metric {metric!r} needs the version of one of the [[releases]]",
            )
        for key in ("endpoint", "cause", *(() if spec.needs_version else ("version",))):
            if key in t and key != spec.about:
                raise self.fail(_join(where, key), f"metric {metric!r} takes no {key}")
        about = self.string(t, spec.about, where) if spec.about and spec.about in t else None
        if ("min" in t) == ("max" in t):
            raise self.fail(where, "give exactly one of min or max")
        bound = "min" if "min" in t else "max"
        at_h = t.get("at_h")
        return Expectation(
            metric=metric,
            version=version,
            at_s=None
            if at_h is None
            else self.number(t, "at_h", where, hi=duration_s / 3600) * 3600,
            about=about,
            **{bound: self.bound(t, bound, where, spec.unit)},
        )

    def bound(self, t: dict[str, Any], key: str, where: str, unit: str) -> float:
        """An expectation's min or max, in its metric's range: a share is 0 to 1 (95 for a
        share is refused, naming 0.95), a count or a latency is not negative."""
        value = t[key]
        if unit == "share" and isinstance(value, int | float) and 1 < value <= 100:
            raise self.fail(
                _join(where, key),
                f"{value!r} is out of range [0, 1]: this metric is a share of devices "
                f"(did you mean {value / 100:g}?)",
            )
        return self.number(t, key, where, hi=1.0 if unit == "share" else float("inf"))
