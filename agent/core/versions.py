"""Anti-rollback: is an offered version older than one this device already confirmed?

The Capgo signature covers a bundle's checksum, not its version, so a man in the middle can
replay an older signed release (version, url, checksum and session key together) and the plugin
installs it. otasim's agent keeps a floor, the highest version that confirmed a boot here
(`DeviceState.highest_confirmed`), and refuses offers below it unless `allow_downgrade` is set.

Versions are compared as semver 2.0.0 (pre-releases sort before their release, build metadata
is ignored). A version that does not parse never raises the floor, and an offer that does not
parse is refused once a floor exists: the agent cannot prove it is not older.
"""

from __future__ import annotations

import semver

from agent.errors import VerificationError


class DowngradeRefused(VerificationError):
    """The offer is older than a version this device confirmed; it is never installed.

    Reported with the Capgo stats action `download_fail` (metadata `reason=downgrade_refused`).
    """

    def __init__(self, version: str, highest_confirmed: str) -> None:
        super().__init__(
            "download_fail",
            f"{version} is older than {highest_confirmed}, already confirmed on this device",
        )
        self.version = version
        self.highest_confirmed = highest_confirmed


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
