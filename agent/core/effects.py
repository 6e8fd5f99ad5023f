"""Outputs of the core, in the imperative: what the driver must do, in list order.

The order matters: a `CommitState` that records a boot comes before the `ReloadApp` that
starts it, and a `CommitState` that forgets a bundle comes before the `DeleteBundle`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.core.lifecycle import DeviceState
from agent.protocol.base import OutgoingRequest, StatEvent, UpdateOffer


@dataclass(frozen=True)
class SendRequest:
    """Send one request and answer with ResponseReceived or TransportFailed."""

    request: OutgoingRequest


@dataclass(frozen=True)
class DownloadBundle:
    """Fetch (resuming from any partial), verify and unpack `offer` into bundle `bundle_id`.

    Answer with DownloadProgressed*, then DownloadFinished or DownloadFailed.
    """

    bundle_id: str
    offer: UpdateOffer


@dataclass(frozen=True)
class CommitState:
    """Persist `state` atomically before performing any later effect."""

    state: DeviceState


@dataclass(frozen=True)
class CommitStats:
    """Persist the pending stats queue atomically."""

    events: Sequence[StatEvent]


@dataclass(frozen=True)
class DeleteBundle:
    """Remove the folder and any partial download of a bundle the state no longer names."""

    bundle_id: str


@dataclass(frozen=True)
class ReloadApp:
    """Restart the web view on `bundle_id` as boot `boot_id` (already committed)."""

    boot_id: int
    bundle_id: str
    version: str


@dataclass(frozen=True)
class ReportStat:
    """A stats action was queued (for observers; the queue itself is in CommitStats)."""

    action: str
    version_name: str


@dataclass(frozen=True)
class EmitEvent:
    """A Capgo plugin event (`download`, `updateAvailable`, `updateFailed`, ...)."""

    name: str
    payload: Mapping[str, Any] = field(default_factory=dict)


Effect = (
    SendRequest
    | DownloadBundle
    | CommitState
    | CommitStats
    | DeleteBundle
    | ReloadApp
    | ReportStat
    | EmitEvent
)
