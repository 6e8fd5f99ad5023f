"""What every server dialect speaks: typed requests out, typed answers in.

A dialect (Capgo, Capawesome, Appflow, ...: `agent.protocol.registry` lists them) is a set of
pure functions: it builds the bytes of a request from a `DeviceInfo` and parses a
status/headers/body into one of the typed results below. The core only sees these types, so a
new dialect plugs in without touching it. Parsers never raise anything but
`agent.errors.ProtocolError` on bad input.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from agent.config import AgentConfig, DeviceIdentity
from agent.errors import ProtocolError

CheckKind = Literal["up_to_date", "blocked", "failed"]
IntegrityScheme = Literal["capgo", "file"]
"""How an offer proves its bundle: Capgo's checksum forms (signed and encrypted with a key),
or "file": a SHA-256 hex checksum of the downloaded file and/or an RSA PKCS#1 v1.5 SHA-256
signature over it (`agent.security.file_integrity`)."""
MAX_RATE_LIMIT_S = 24 * 3600.0
RELEASE_FIELD = "otasim_release"
"""The answer field holding otasim's signed release document (`agent.security.release`)."""


@dataclass(frozen=True)
class ReleaseDocument:
    app_id: str
    version: str
    counter: int
    expires: int
    bundle: str  # SHA-256 hex of the plain zip ("" for a delta-only release)
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> SHA-256 hex

    def encode(self) -> bytes:
        """The canonical bytes that are signed (sorted keys, no spaces)."""
        body = {
            "app_id": self.app_id,
            "version": self.version,
            "counter": self.counter,
            "expires": self.expires,
            "bundle": self.bundle,
            "files": dict(self.files),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


"""The plugin honours a server's rate-limit hint for at most 24 h."""


@dataclass(frozen=True)
class OutgoingRequest:
    """An HTTP request to send; `name` is the stable label observers see ("/updates", ...)."""

    name: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """Everything a request describes about the device at this moment."""

    identity: DeviceIdentity
    config: AgentConfig
    version_name: str  # the bundle running now (version_build on builtin)
    channel: str | None  # locally stored channel, else config.default_channel
    key_id: str | None  # of config.public_key, sent only when a key is configured
    current_content: str | None = None  # the running bundle's content identity (Expo: its id)
    on_builtin: bool = False  # the bundle running now is the one shipped in the binary


UPDATE_CONFIRMED: Final = "update_confirmed"
"""The stats action of a new bundle's first confirmed boot (version: it, old: the bundle it
replaced). Queued only for a dialect that lists it in `reported_actions` (CodePush's
DeploymentSucceeded); Capgo has no such action and never sees it."""


@dataclass(frozen=True)
class StatEvent:
    """One stats action waiting in the persisted queue."""

    seq: int
    action: str
    version_name: str
    timestamp_ms: int
    old_version_name: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest file as the server sends it (`file_name` keeps a `.br` suffix)."""

    file_name: str
    file_hash: str
    download_url: str
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with it (Expo extensions)


@dataclass(frozen=True)
class UpdateOffer:
    """The server offers a bundle (HTTP 200 with `version` and `url` and/or `manifest`)."""

    version: str
    url: str
    checksum: str | None
    session_key: str
    manifest: tuple[ManifestEntry, ...] | None = None
    breaking: bool = False
    message: str | None = None
    link: str | None = None
    comment: str | None = None
    release: Any = None  # the raw RELEASE_FIELD (agent.security.release; strict mode only)
    package_hash: str | None = None  # CodePush: checked over the unzipped files, not the zip
    # the native build the update was made for (Expo's runtimeVersion): the core refuses it on
    # another build (`runtime_mismatch`); None: the dialect does not say
    native_build: str | None = None
    integrity: IntegrityScheme = "capgo"
    signature: str | None = None  # the "file" scheme's signature (base64)
    listing_url: str | None = None  # the file list is fetched from here first (Appflow)


@dataclass(frozen=True)
class NoUpdate:
    """Every non-offer outcome: `kind` up_to_date / blocked / failed, with its error code."""

    kind: CheckKind
    error: str
    message: str = ""
    version: str | None = None
    breaking: bool = False
    status: int = 200
    release: Any = None  # the raw RELEASE_FIELD, as in UpdateOffer


@dataclass(frozen=True)
class RevertToBuiltin:
    """`version: "builtin"` with no error: go back to the bundle shipped in the binary.

    `counter`: when the dialect verified a signed order for the revert (Expo's signed
    `rollBackToEmbedded` commitTime, in ms), the core refuses it below a release counter
    already accepted (a replayed revert) and accepts it as the newest otherwise."""

    counter: int | None = None


@dataclass(frozen=True)
class RateLimitHint:
    """HTTP 429. `retry_after_s` (capped at 24 h) or None when the server gave no hint."""

    error: str
    retry_after_s: float | None


CheckResult = UpdateOffer | NoUpdate | RevertToBuiltin | RateLimitHint


class StatsOutcome(enum.Enum):
    SENT = "sent"
    REQUEUE = "requeue"  # 429, 408, 5xx: put the batch back
    DROP = "drop"  # any other 4xx: the server will never take it


@dataclass(frozen=True)
class ChannelAnswer:
    """Answer of a channel_self set or get: `channel` and `status` for get, `allowed` for set."""

    allowed: bool
    channel: str | None = None
    status: str | None = None
    error: str | None = None
    message: str = ""
    private: bool = False  # refused because the channel is private (plugin: `channelPrivate`)


@dataclass(frozen=True)
class ChannelListing:
    id: int | str
    name: str
    public: bool
    allow_self_set: bool


class WithoutListing:
    """For dialects whose offers carry everything (no `listing_url`): the core never asks
    them for a file list."""

    def listing_request(self, info: DeviceInfo, offer: UpdateOffer) -> OutgoingRequest:
        raise ProtocolError(f"offer {offer.version}: this dialect has no file list to fetch")

    def parse_listing(
        self, offer: UpdateOffer, status: int, headers: Mapping[str, str], body: bytes
    ) -> CheckResult:
        raise ProtocolError(f"offer {offer.version}: this dialect has no file list to parse")


class WithoutReports:
    """For dialects with no open report API: devices queue no stats (no action is reported,
    and their stats URL is empty). Their channel calls: `agent.protocol.nochannel`."""

    stats_batch_size = 1
    stores_channel_locally = True
    reported_actions: frozenset[str] = frozenset()

    def stats_request(self, info: DeviceInfo, events: Sequence[StatEvent]) -> OutgoingRequest:
        raise ProtocolError("this dialect has no report API")

    def parse_stats(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> tuple[StatsOutcome, float | None]:
        return StatsOutcome.DROP, None


class Dialect(Protocol):
    """A server dialect: request builders and answer parsers, all pure."""

    stats_batch_size: int  # the most stats events one request carries
    stores_channel_locally: bool  # setChannel keeps the channel on the device (else: server)

    def check_request(self, info: DeviceInfo) -> OutgoingRequest: ...

    def parse_check(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> CheckResult: ...

    def listing_request(self, info: DeviceInfo, offer: UpdateOffer) -> OutgoingRequest:
        """The request for an offer's file list (only for offers with a `listing_url`; named
        "/updates": it is the second exchange of the check)."""
        ...

    def parse_listing(
        self, offer: UpdateOffer, status: int, headers: Mapping[str, str], body: bytes
    ) -> CheckResult:
        """`offer` with its `manifest` from the file list (or why there is no update)."""
        ...

    def stats_request(self, info: DeviceInfo, events: Sequence[StatEvent]) -> OutgoingRequest: ...

    def parse_stats(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> tuple[StatsOutcome, float | None]: ...

    def channel_set_request(self, info: DeviceInfo, channel: str) -> OutgoingRequest: ...

    def channel_get_request(self, info: DeviceInfo) -> OutgoingRequest: ...

    def channel_unset_request(self, info: DeviceInfo) -> OutgoingRequest | None: ...

    def channel_list_request(self, info: DeviceInfo) -> OutgoingRequest: ...

    def parse_channel(self, status: int, body: bytes) -> ChannelAnswer: ...

    def parse_channel_list(self, status: int, body: bytes) -> list[ChannelListing]: ...
