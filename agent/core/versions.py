"""Version order for anti-rollback (`agent.core.rollback`): is a version older than another?

The floor is the highest version that confirmed a boot here (`DeviceState.highest_confirmed`);
`agent.core.rollback` says what it may refuse, given what the mode authenticates.

Versions are compared as semver 2.0.0 (pre-releases sort before their release, build metadata
is ignored). A version that does not parse never raises the floor, and an offer that does not
parse is refused once a floor exists: the agent cannot prove it is not older.
"""

from __future__ import annotations

import semver


def _parse(version: str) -> semver.Version | None:
    try:
        return semver.Version.parse(version)
    except ValueError:
        return None


def raise_floor(floor: str | None, confirmed: str) -> str | None:
    """The floor after `confirmed` booted fine: the higher of the two (semver only)."""
    new = _parse(confirmed)
    if new is None:
        return floor
    if floor is None or new > semver.Version.parse(floor):
        return confirmed
    return floor


def is_downgrade(version: str, floor: str) -> bool:
    """True when `version` is older than `floor`, or cannot be compared with it."""
    offered = _parse(version)
    return offered is None or offered < semver.Version.parse(floor)
