"""The persisted state of one device and the transitions allowed on it, as data.

A device holds bundles (web-asset folders) with a status, and three slots naming them:
`current` (what the web view serves), `next` (queued, applied at the next background or cold
start), `fallback` (the last bundle that confirmed a boot; `builtin` until one does). `builtin`
is the bundle shipped in the binary; it is always present and always bootable.

Every change to this state is made by a function here that returns a new `DeviceState`; the
agent commits the result atomically. `BUNDLE_TRANSITIONS` lists which status may follow which;
asking for any other change raises `RuntimeError` (a bug, never a server's fault).

Beside it, the device's *running* state, which is not persisted (a new process starts idle):
`Activity` and `ACTIVITY_TRANSITIONS`, in the manner of h11's connection states. It says what
the agent is doing between two events (idle, checking, downloading) and whether the check in
flight is the first one after a cold start (what `onLaunch` applies at once). `advance` is the
only way to change it; a move the table does not list raises `RuntimeError`. The download's
own steps (fetching a range, receiving, checking the digest) are `agent.core.download`'s
table, `DOWNLOAD_TRANSITIONS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal, get_args

from agent.core.retry import ArtefactFailures
from agent.core.rollback import remember
from agent.core.versions import raise_floor

BUILTIN = "builtin"
BundleStatus = Literal["downloading", "pending", "success", "error"]
STATE_FORMAT = 1

BUNDLE_TRANSITIONS: Mapping[BundleStatus, frozenset[BundleStatus]] = {
    "downloading": frozenset({"pending", "error"}),  # downloaded, or failed verification
    "pending": frozenset({"success", "error"}),  # its boot confirmed, or it failed to boot
    "success": frozenset(),
    "error": frozenset(),
}
"""Allowed status changes. Deleting is allowed from every status (the entry is removed)."""

BOOTABLE: frozenset[BundleStatus] = frozenset({"pending", "success"})


class Activity(Enum):
    """What the agent is doing between two events (not persisted)."""

    IDLE = "idle"  # nothing in flight
    LAUNCHED = "launched"  # cold start: the first check after it has not been answered yet
    CHECKING = "checking"  # an update check is in flight
    LAUNCH_CHECKING = "launch_checking"  # the first check after a cold start is in flight
    DOWNLOADING = "downloading"  # a bundle is being fetched, verified and unpacked


class Move(Enum):
    """What changes the activity."""

    STARTED = "started"  # the app cold-started
    CHECK_SENT = "check_sent"  # an update check went out
    ANSWERED = "answered"  # the check's result asks for no download
    DOWNLOAD_STARTED = "download_started"  # the check's offer is being downloaded
    DOWNLOAD_ENDED = "download_ended"  # installed, or failed


ACTIVITY_TRANSITIONS: Mapping[Activity, Mapping[Move, Activity]] = {
    Activity.IDLE: {Move.STARTED: Activity.LAUNCHED, Move.CHECK_SENT: Activity.CHECKING},
    Activity.LAUNCHED: {
        Move.STARTED: Activity.LAUNCHED,
        Move.CHECK_SENT: Activity.LAUNCH_CHECKING,
    },
    Activity.CHECKING: {Move.ANSWERED: Activity.IDLE, Move.DOWNLOAD_STARTED: Activity.DOWNLOADING},
    Activity.LAUNCH_CHECKING: {
        Move.ANSWERED: Activity.IDLE,
        Move.DOWNLOAD_STARTED: Activity.DOWNLOADING,
    },
    Activity.DOWNLOADING: {Move.DOWNLOAD_ENDED: Activity.IDLE},
}
"""activity -> move -> next activity. One check or one download at a time: a check is sent
only from IDLE or LAUNCHED; a cold start never lands in the middle of one (drivers run each
event to completion, and a killed process starts a new agent)."""


def advance(activity: Activity, move: Move) -> Activity:
    """The activity after `move`. Raises RuntimeError for a move the table does not list."""
    try:
        return ACTIVITY_TRANSITIONS[activity][move]
    except KeyError:
        raise RuntimeError(f"{move.value} is not allowed while {activity.value}") from None


@dataclass(frozen=True)
class BundleInfo:
    id: str
    version: str
    status: BundleStatus
    checksum: str | None = None
    downloaded_at: float | None = None
    content: str | None = None  # content identity (agent.core.rollback), from the checksum


@dataclass(frozen=True)
class Boot:
    """One start of the web view. Only a ready signal carrying this `id` confirms it."""

    id: int
    bundle_id: str
    started_at: float
    confirmed: bool = False


@dataclass(frozen=True)
class DeviceState:
    bundles: Mapping[str, BundleInfo] = field(default_factory=dict)
    current: str = BUILTIN
    next: str | None = None
    fallback: str = BUILTIN
    boot: Boot | None = None
    failed_versions: frozenset[str] = frozenset()  # versions that failed to boot here
    # "version:checksum" that failed verification -> its failures (bounded retry: agent.core.retry)
    rejected_artefacts: Mapping[str, ArtefactFailures] = field(default_factory=dict)
    native_build: str | None = None  # version_build/version_code/os seen at the last launch
    native_code: str | None = None
    os_version: str | None = None
    channel: str | None = None  # set by channel_self, sent as defaultChannel
    blocked_until: float | None = None  # client-side block after a 429 hint
    rate_limit_reported: bool = False
    install_check_pending: bool = True  # first check after install or store update (atInstall)
    highest_confirmed: str | None = None  # highest label confirmed here (agent.core.rollback)
    confirmed_content: Mapping[str, str] = field(default_factory=dict)  # content -> its label
    failed_content: Mapping[str, str] = field(default_factory=dict)  # failed to boot: -> label
    # labels that failed to boot with no content identity (no checksum): refused by label alone
    failed_unidentified: frozenset[str] = frozenset()
    # content identity -> its verification failures, whatever label it came under
    rejected_content: Mapping[str, ArtefactFailures] = field(default_factory=dict)
    release_counter: int = 0  # strict mode: highest signed release counter accepted here
    release_expires: int = 0  # strict mode: when the newest signed release document expires

    def bundle(self, bundle_id: str) -> BundleInfo | None:
        return self.bundles.get(bundle_id)

    def version_of(self, bundle_id: str, builtin_version: str) -> str:
        if bundle_id == BUILTIN:
            return builtin_version
        info = self.bundles.get(bundle_id)
        return info.version if info else builtin_version

    def bootable(self, bundle_id: str | None) -> bool:
        if bundle_id == BUILTIN:
            return True
        info = self.bundles.get(bundle_id) if bundle_id else None
        return info is not None and info.status in BOOTABLE


def set_status(state: DeviceState, bundle_id: str, status: BundleStatus) -> DeviceState:
    """Move one bundle to `status`. Raises RuntimeError for a change the table forbids."""
    info = state.bundles[bundle_id]
    if status != info.status and status not in BUNDLE_TRANSITIONS[info.status]:
        raise RuntimeError(f"bundle {bundle_id}: {info.status} -> {status} is not allowed")
    return replace(state, bundles={**state.bundles, bundle_id: replace(info, status=status)})


def add_bundle(state: DeviceState, info: BundleInfo) -> DeviceState:
    if info.id == BUILTIN or info.id in state.bundles:
        raise RuntimeError(f"bundle id {info.id} is already taken")
    return replace(state, bundles={**state.bundles, info.id: info})


def remove_bundle(state: DeviceState, bundle_id: str) -> DeviceState:
    """Forget a bundle. Raises RuntimeError if a slot still names it."""
    if bundle_id in (state.current, state.next, state.fallback):
        raise RuntimeError(f"bundle {bundle_id} is still in a slot")
    return replace(state, bundles={k: v for k, v in state.bundles.items() if k != bundle_id})


def activate(state: DeviceState, bundle_id: str, boot_id: int, now: float) -> DeviceState:
    """Make `bundle_id` current and record the boot that starts it (before the switch)."""
    if not state.bootable(bundle_id):
        raise RuntimeError(f"bundle {bundle_id} is not bootable")
    return replace(
        state,
        current=bundle_id,
        next=None if state.next == bundle_id else state.next,
        boot=Boot(boot_id, bundle_id, now),
    )


def confirm_boot(state: DeviceState) -> DeviceState:
    """The running boot signalled ready: its bundle succeeds, becomes the fallback, and its
    content and label are remembered (the label as the floor, if newer)."""
    if state.boot is None:
        raise RuntimeError("no boot to confirm")
    bundle_id = state.boot.bundle_id
    state = replace(state, boot=replace(state.boot, confirmed=True))
    if bundle_id != BUILTIN:
        state = set_status(state, bundle_id, "success")
        info = state.bundles[bundle_id]
        floor = raise_floor(state.highest_confirmed, info.version)
        confirmed = state.confirmed_content
        if info.content is not None:
            confirmed = remember(confirmed, info.content, info.version)
        state = replace(state, highest_confirmed=floor, confirmed_content=confirmed)
    return replace(state, fallback=bundle_id)


def fail_current(state: DeviceState) -> tuple[DeviceState, str]:
    """The current bundle failed to boot: mark it error, fall back. Returns (state, target)."""
    failed = state.bundles[state.current]
    state = set_status(state, failed.id, "error")
    target = state.fallback if state.bootable(state.fallback) else BUILTIN
    return replace(
        state,
        current=target,
        next=None if state.next == failed.id else state.next,
        failed_versions=state.failed_versions | {failed.version},
        failed_content={**state.failed_content, failed.content: failed.version}
        if failed.content
        else state.failed_content,
        failed_unidentified=state.failed_unidentified
        if failed.content
        else state.failed_unidentified | {failed.version},
    ), target


def reset_to_builtin(state: DeviceState) -> DeviceState:
    return replace(state, current=BUILTIN, next=None, fallback=BUILTIN)


def reconcile(state: DeviceState, present: Iterable[str]) -> DeviceState:
    """Repair the state against the bundle folders found on disk (after a kill or a wipe).

    A bootable bundle whose folder is missing is forgotten; slots naming a forgotten bundle
    move to the fallback, else builtin. The result always has a bootable `current`.
    """
    on_disk = set(present)
    kept = {k: v for k, v in state.bundles.items() if v.status not in BOOTABLE or k in on_disk}
    state = replace(state, bundles=kept)
    fallback = state.fallback if state.bootable(state.fallback) else BUILTIN
    current = state.current if state.bootable(state.current) else fallback
    next_ = state.next if state.bootable(state.next) else None
    return replace(state, current=current, next=next_, fallback=fallback)


def to_json(state: DeviceState) -> dict[str, Any]:
    """The state as JSON values. Field by field, not `dataclasses.asdict` (its deep copies
    made each commit of a fleet device cost about a millisecond): the scalars as they are,
    every container and nested record rebuilt here."""
    data = dict(vars(state))
    data["bundles"] = [dict(vars(b)) for b in state.bundles.values()]
    data["boot"] = dict(vars(state.boot)) if state.boot else None
    data["failed_versions"] = sorted(state.failed_versions)
    data["failed_unidentified"] = sorted(state.failed_unidentified)
    data["rejected_artefacts"] = {
        k: dict(vars(v)) for k, v in sorted(state.rejected_artefacts.items())
    }
    data["confirmed_content"] = dict(state.confirmed_content)
    data["failed_content"] = dict(state.failed_content)
    data["rejected_content"] = {k: dict(vars(v)) for k, v in sorted(state.rejected_content.items())}
    data["format"] = STATE_FORMAT
    return data


def from_json(data: Any) -> DeviceState:
    """Rebuild a state written by `to_json`. Raises ValueError on anything else."""
    try:
        if data.pop("format") != STATE_FORMAT:
            raise ValueError("unknown state format")
        bundles = {b["id"]: BundleInfo(**b) for b in data.pop("bundles")}
        if any(b.status not in get_args(BundleStatus) for b in bundles.values()):
            raise ValueError("unknown bundle status")
        boot = data.pop("boot")
        failed_versions = frozenset(data.pop("failed_versions"))
        failed_content = dict(data.pop("failed_content", {}))
        # a state written before this field: a failed label with no content recorded under it
        unidentified = data.pop("failed_unidentified", None)
        return DeviceState(
            bundles=bundles,
            boot=Boot(**boot) if boot else None,
            failed_versions=failed_versions,
            rejected_artefacts=_rejected(data.pop("rejected_artefacts")),
            failed_content=failed_content,
            failed_unidentified=frozenset(
                failed_versions - set(failed_content.values())
                if unidentified is None
                else unidentified
            ),
            rejected_content=_rejected(data.pop("rejected_content", {})),
            **data,
        )
    except (AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed device state: {exc}") from None


def _rejected(data: Any) -> dict[str, ArtefactFailures]:
    """Rejected artefacts as written; a list (states written before the bounded retry) counts
    one failure long ago for each, so each may be fetched again."""
    if isinstance(data, list):
        return {str(k): ArtefactFailures(1, 0.0, 0.0) for k in data}
    return {str(k): ArtefactFailures(**v) for k, v in data.items()}
