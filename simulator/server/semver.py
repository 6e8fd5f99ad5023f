"""The few semver rules the Capgo backend applies: strict parse, coercion of native builds,
ordering, and plugin-version feature gates ("at least X.Y.Z on each major line")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
_SHORT = re.compile(r"^(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?$")


@dataclass(frozen=True, order=False)
class Version:
    """A parsed semantic version; compare with `key`."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        """Sort key with semver precedence (a release sorts after its prereleases)."""
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)


@lru_cache(maxsize=4096)
def parse(text: str) -> Version | None:
    """Parse a strict semver string; None when it is not one."""
    match = _SEMVER.match(text)
    if match is None:
        return None
    major, minor, patch, pre, _build = match.groups()
    return Version(int(major), int(minor), int(patch), tuple(pre.split(".")) if pre else ())


def coerce(text: str) -> str | None:
    """Capgo's `fixSemver`: `1` -> `1.0.0`, `1.2` -> `1.2.0`; None if still not semver."""
    short = _SHORT.match(text)
    if short is not None:
        return f"{short.group(1)}.{short.group(2) or 0}.0"
    return text if parse(text) is not None else None


def less_than(a: str, b: str) -> bool:
    """`a < b` for two valid semver strings (False if either is invalid)."""
    va, vb = parse(a), parse(b)
    return va is not None and vb is not None and va.key < vb.key


def at_least(plugin_version: str, minimums: dict[int, str]) -> bool:
    """True when `plugin_version` is at least the minimum given for its major line.

    Majors above every listed line pass; majors below every listed line fail, as in
    Capgo's `isDeprecatedPluginVersion`.
    """
    version = parse(plugin_version)
    if version is None:
        return False
    if version.major in minimums:
        return not less_than(plugin_version, minimums[version.major])
    return version.major > max(minimums)
