"""Inputs of the core, in the past tense: what happened to the device or came back from I/O.

Every event is a frozen dataclass. `Agent.handle(event, now)` takes them one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.errors import AgentError, TransportError


@dataclass(frozen=True)
class AppStarted:
    """Cold start of the app (the process was not running)."""


@dataclass(frozen=True)
class MovedToForeground:
    pass


@dataclass(frozen=True)
class MovedToBackground:
    pass


@dataclass(frozen=True)
class AppReady:
    """The web app called `notifyAppReady()` during boot `boot_id` (None: the running boot)."""

    boot_id: int | None = None


@dataclass(frozen=True)
class TimerFired:
    """The driver's clock reached `Agent.next_deadline()`."""


@dataclass(frozen=True)
class CheckRequested:
    """Something asked for an update check now (periodic timers ask through TimerFired)."""


@dataclass(frozen=True)
class ResponseReceived:
    """An HTTP answer to a `SendRequest` (after the driver's transport retries)."""

    name: str
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    url: str = ""  # the URL that answered, after redirects ("" when not known)


@dataclass(frozen=True)
class TransportFailed:
    """A `SendRequest` could not be delivered, retries exhausted."""

    name: str
    error: TransportError


@dataclass(frozen=True)
class DownloadProgressed:
    bundle_id: str
    percent: int


@dataclass(frozen=True)
class DownloadFinished:
    """The bundle was downloaded, verified, unpacked and moved into its folder."""

    bundle_id: str


@dataclass(frozen=True)
class DownloadFailed:
    """The download stopped: VerificationError (final), TransportError (resumable), LocalError."""

    bundle_id: str
    error: AgentError


@dataclass(frozen=True)
class ChannelStored:
    """The server allowed `channel_self` set (None: unset); keep it and send it from now on."""

    channel: str | None


Event = (
    AppStarted
    | MovedToForeground
    | MovedToBackground
    | AppReady
    | TimerFired
    | CheckRequested
    | ResponseReceived
    | TransportFailed
    | DownloadProgressed
    | DownloadFinished
    | DownloadFailed
    | ChannelStored
)
