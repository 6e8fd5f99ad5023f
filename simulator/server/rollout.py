"""Staged rollouts: a sticky per-device draw in basis points, and the auto-pause rule.

The draw hashes app, channel, rollout version and device id, so a device keeps its answer
for a given rollout across checks and restarts (no stored state), raising the percentage only
adds devices, and each new rollout version samples the fleet afresh.
"""

from __future__ import annotations

import hashlib

from simulator.server.model import Channel

BPS_SCALE = 10_000


def draw_bps(app_id: str, channel: str, version: str, device_id: str) -> int:
    """The device's draw for this rollout, uniform in [0, 10000)."""
    digest = hashlib.blake2b(
        f"{app_id}\0{channel}\0{version}\0{device_id}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % BPS_SCALE


def percent_to_bps(percent: float) -> int:
    """Convert a percentage (0..100) to basis points.

    Raises:
        ValueError: outside 0..100.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"rollout percent must be within 0..100, got {percent}")
    return round(percent * 100)


def target_version(channel: Channel, device_id: str, running_version: str) -> str | None:
    """The bundle name this device should run (None = builtin).

    In a running rollout a device whose draw is under the percentage gets the rollout
    version. A paused rollout reaches no new device: only devices already running the
    rollout version keep it, everyone else gets the channel's stable version.
    """
    new = channel.rollout_version
    if new is None or channel.rollout_bps <= 0:
        return channel.version
    if channel.rollout_paused:
        return new if running_version == new else channel.version
    inside = draw_bps(channel.app_id, channel.name, new, device_id) < channel.rollout_bps
    return new if inside else channel.version


def should_auto_pause(channel: Channel, installs: int, fails: int) -> bool:
    """True when the rollout's failure ratio fails/(installs+fails) passes the threshold."""
    threshold = channel.auto_pause_fail_ratio
    if threshold is None or channel.rollout_paused or channel.rollout_version is None:
        return False
    samples = installs + fails
    return samples >= channel.auto_pause_min_samples and fails / samples > threshold
