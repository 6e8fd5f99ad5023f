"""The one version order of otasim (agent, reference server and metrics), and anti-rollback.

Versions are compared as semver 2.0.0 by the `semver` library: pre-releases sort before their
release (`1.0.0-rc.1 < 1.0.0`), build metadata is ignored for precedence. Before parsing, a
version gets the one coercion Capgo's backend applies (`fixSemver`): a version with no dot gets
`.0.0`, one with a single dot gets `.0` (`1` -> `1.0.0`, `1.2` -> `1.2.0`); whatever still does
not parse is not a version this order knows (`less_than` is then False).

Anti-rollback: the Capgo signature covers a bundle's checksum, not its version, so a man in the
middle can replay an older signed release (version, url, checksum and session key together) and
the plugin installs it. otasim's agent keeps a floor, the highest version that confirmed a boot
here (`DeviceState.highest_confirmed`), and refuses offers below it unless `allow_downgrade` is
set. A version that does not parse never raises the floor, and an offer that does not parse is
refused once a floor exists: the agent cannot prove it is not older.
"""

from __future__ import annotations

from functools import lru_cache

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


@lru_cache(maxsize=4096)
def parse_strict(text: str) -> semver.Version | None:
    """`text` as a strict semver 2.0.0 version (no coercion); None when it is not one."""
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        return None


def coerce(text: str) -> str | None:
    """Capgo's `fixSemver` followed by a strict parse: `1` -> `1.0.0`, `1.2` -> `1.2.0`,
    `1.2.3-rc.1` unchanged; None when the result is still not semver."""
    dots = text.count(".")
    fixed = f"{text}.0.0" if dots == 0 else f"{text}.0" if dots == 1 else text
    return fixed if parse_strict(fixed) is not None else None


def parse(text: str) -> semver.Version | None:
    """`text` after Capgo's coercion, as a semver version; None when it is not one."""
    fixed = coerce(text)
    return None if fixed is None else parse_strict(fixed)


def less_than(a: str, b: str) -> bool:
    """`a < b` in semver precedence after coercion; False when either is not a version."""
    va, vb = parse(a), parse(b)
    return va is not None and vb is not None and va < vb


def sort_key(text: str) -> tuple[int, semver.Version, str]:
    """A total order for display: versions by precedence (equal precedence, such as two
    build-metadata variants, by text), then every non-version string by text."""
    version = parse(text)
    return (0, version, text) if version is not None else (1, semver.Version(0), text)


def raise_floor(floor: str | None, confirmed: str) -> str | None:
    """The floor after `confirmed` booted fine: the higher of the two (versions only)."""
    if parse(confirmed) is None:
        return floor
    if floor is None or less_than(floor, confirmed):
        return confirmed
    return floor


def is_downgrade(version: str, floor: str) -> bool:
    """True when `version` is older than `floor`, or cannot be compared with it."""
    return parse(version) is None or less_than(version, floor)
