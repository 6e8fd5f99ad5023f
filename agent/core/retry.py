"""Bounded retry of an artefact that failed verification.

An artefact ("version:checksum") whose download failed verification (checksum, signature,
decryption, unzip) is never activated. It is not refused for good either: one flipped or
MITM'd transfer must not deny a release forever. After its n-th failure it may be fetched again
once `backoff_s x 2^(n-1)` has passed, at most `retries` times within `window_s` of the first
failure; when that window has passed, a new one starts. A version that failed to *boot* is a
different matter (`DeviceState.failed_versions`): it stays refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.config import AgentConfig


@dataclass(frozen=True)
class ArtefactFailures:
    """Verification failures of one artefact within its current window."""

    count: int
    first_at: float
    last_at: float


def refused(failures: ArtefactFailures | None, config: AgentConfig, now: float) -> bool:
    """True while the artefact may not be fetched again."""
    if failures is None or now - failures.first_at >= config.artefact_retry_window_s:
        return False
    if failures.count > config.artefact_retries:
        return True
    wait = config.artefact_retry_backoff_s * 2.0 ** (failures.count - 1)
    return now < failures.last_at + min(wait, config.artefact_retry_window_s)


def record_failure(
    failures: ArtefactFailures | None, config: AgentConfig, now: float
) -> ArtefactFailures:
    """The failures after one more, starting a new window when the last one has passed."""
    if failures is None or now - failures.first_at >= config.artefact_retry_window_s:
        return ArtefactFailures(1, now, now)
    return ArtefactFailures(failures.count + 1, failures.first_at, now)
