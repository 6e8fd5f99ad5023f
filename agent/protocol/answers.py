"""What an /updates answer *means*, whatever a given plugin makes of it.

A device classifies an answer as its plugin does (`CapgoDialect.parse_check` with a
`PluginProfile`): plugin 8 trusts `kind` and takes a missing one as `failed`; plugins 6 and 7
do not read `kind` at all. otasim's verdicts must not inherit those quirks: `meaning()` sorts an
answer by Capgo's own code table (reference §3.2), the `kind` the server sent when it sent a
valid one, and the HTTP status, so that an up-to-date answer is never a failure verdict, and
`finding()` names what the server did that made a device report something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Meaning = Literal["up_to_date", "blocked", "failed"]

UP_TO_DATE_CODES = frozenset({"no_new_version_available", "already_on_builtin"})
BLOCKED_CODES = frozenset(
    {
        "cannot_update_via_private_channel",
        "disabled_platform_ios",
        "disabled_platform_android",
        "disabled_platform_electron",
        "disable_auto_update_to_major",
        "disable_auto_update_to_minor",
        "disable_auto_update_to_patch",
        "disable_auto_update_to_metadata",
        "disable_auto_update_under_native",
        "disable_prod_build",
        "disable_dev_build",
        "disable_device",
        "disable_emulator",
        "key_id_mismatch",
        "provider_infrastructure_request_blocked",
    }
)
KINDS: frozenset[str] = frozenset({"up_to_date", "blocked", "failed"})


def kind_of(code: str) -> Meaning:
    """Capgo's `kind` for an /updates error code: up_to_date, blocked or failed."""
    if code in UP_TO_DATE_CODES:
        return "up_to_date"
    return "blocked" if code in BLOCKED_CODES else "failed"


def meaning(error: str | None, kind: object, status: int) -> Meaning:
    """What a non-offer answer means: a valid `kind` the server sent wins, else the code table.

    Anything but HTTP 200 (and a transport failure, status 0) is `failed`: the server did not
    answer the check.
    """
    if status != 200:
        return "failed"
    if isinstance(kind, str) and kind in KINDS:
        return kind  # type: ignore[return-value]
    return kind_of(error or "")


@dataclass(frozen=True)
class Finding:
    """Something the server did that made a device report what the answer did not mean."""

    code: str  # stable key: "no_kind", "kind_not_read"
    error: str  # the answer's error code
    text: str  # for a person: what the server did and what the devices report because of it


def finding(
    profile_name: str, reads_kind: bool, device_kind: str, error: str, kind: object, status: int
) -> Finding | None:
    """The finding about the server when a device's classification differs from the meaning.

    None when the device and the meaning agree, or when the answer really is a failure.
    """
    means = meaning(error, kind, status)
    if device_kind != "failed" or means == "failed":
        return None
    if reads_kind:
        return Finding(
            "no_kind",
            error,
            f"your server answers {error!r} without a valid `kind`: {profile_name} devices "
            f"report `download_fail` on every such check (it means {means.replace('_', '-')})",
        )
    return Finding(
        "kind_not_read",
        error,
        f"{profile_name} devices do not read `kind`: your server's {error!r} answers "
        f"({means.replace('_', '-')}) are reported as `download_fail` by that plugin",
    )
