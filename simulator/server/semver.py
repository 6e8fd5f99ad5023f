"""The Capgo backend's version rules on otasim's one version order (`agent.core.versions`):
strict parse (plugin versions, bundle names), `fixSemver` coercion of native builds, precedence,
and plugin-version feature gates ("at least X.Y.Z on each major line")."""

from __future__ import annotations

from agent.core.versions import coerce, less_than
from agent.core.versions import parse_strict as parse

__all__ = ["at_least", "coerce", "less_than", "parse"]


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
