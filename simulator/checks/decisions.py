"""Decisions: what the server offers to whom. Synthetic devices (--devices N) measure rollout
stickiness and proportion; single probes check builtin, downgrades, channels and filters."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from agent.core import versions
from agent.protocol.answers import UP_TO_DATE_CODES as UP_TO_DATE
from agent.protocol.base import DeviceInfo, NoUpdate, UpdateOffer

from simulator.checks.context import Answer, CheckContext
from simulator.checks.errors import Skip
from simulator.checks.model import Outcome, check, failed, passed, skipped, warned
from simulator.checks.protocol import MISSING_CHANNEL, channel_answer, unknown_channel_answer

ROUNDS = 3
WIDE_TOLERANCE, MANY_DEVICES = 0.25, 200
SIGMAS = 4.0  # rollout share tolerance: 4 standard deviations of a binomial draw, + 1 device


def _like(
    ctx: CheckContext, base: DeviceInfo, label: str | None = None, **identity: object
) -> DeviceInfo:
    """The baseline device shape with identity changes, under another synthetic id when
    `label` is given (else the same id: the same rollout draw as the baseline)."""
    if label is not None:
        identity["device_id"] = ctx.device_id(label)
    return replace(base, identity=replace(base.identity, **identity))


def _summary(answer: Answer) -> str:
    if answer.offer is not None:
        return answer.offer.version
    if isinstance(answer.result, NoUpdate):
        return answer.result.error
    return answer.describe()


def fleet_devices(ctx: CheckContext) -> list[DeviceInfo]:
    """--devices synthetic devices shaped like the baseline device."""
    base = ctx.baseline.device
    return [_like(ctx, base, f"fleet-{i}") for i in range(ctx.options.devices)]


def fleet(ctx: CheckContext) -> list[list[str]]:
    """For each of --devices synthetic devices, what it got on each of ROUNDS checks."""

    def ask_all() -> list[list[str]]:
        devices = fleet_devices(ctx)
        rounds = [[_summary(ctx.ask(d)) for d in devices] for _ in range(ROUNDS)]
        return [list(answers) for answers in zip(*rounds, strict=True)]

    answers: list[list[str]] = ctx.once("fleet", ask_all)
    return answers


@check(
    "decide.sticky",
    "Each device gets the same answer on every check (sticky rollout)",
    "error",
    "a rollout that is not sticky flips devices between versions: they download, install "
    "and roll back again and again",
)
def sticky(ctx: CheckContext) -> Outcome:
    ctx.require_offer()
    answers = fleet(ctx)
    flipped = [i for i, seen in enumerate(answers) if len(set(seen)) > 1]
    if flipped:
        example = " -> ".join(answers[flipped[0]])
        return failed(
            f"{len(flipped)} of {len(answers)} devices got different answers over {ROUNDS} "
            f"checks (e.g. {example})"
        )
    shown = ", ".join(f"{v}: {n}" for v, n in Counter(a[0] for a in answers).most_common())
    return passed(f"{len(answers)} devices × {ROUNDS} checks, each constant ({shown})")


def _newest(names: set[str]) -> str | None:
    """The highest version among `names` in otasim's one version order (None: no version)."""
    ordered = [(parsed, name) for name in names if (parsed := versions.parse(name)) is not None]
    return max(ordered)[1] if ordered else None


@check(
    "decide.rollout-share",
    "The share of devices offered the rollout version matches --expect-rollout",
    "error",
    "a rollout that reaches more devices than planned ships an untested release to them; "
    "one that reaches fewer delays adoption and hides failures",
)
def rollout_share(ctx: CheckContext) -> Outcome:
    expected = ctx.options.expect_rollout
    _, offer = ctx.require_offer()
    answers = fleet(ctx)
    first = [a[0] for a in answers]
    offered = {v for v in first if _looks_like_version(v)} | {offer.version}
    newest = _newest(offered) or offer.version
    share = sum(v == newest for v in first) / len(first)
    if expected is None:
        return skipped(
            f"give --expect-rollout PCT to compare: {share:.0%} of {len(first)} devices "
            f"got {newest}"
        )
    p, n = expected / 100, len(first)
    tolerance = SIGMAS * math.sqrt(p * (1 - p) / n) + 1 / n
    detail = f"{share:.1%} of {n} devices got {newest}, expected {expected:g} % ± {tolerance:.1%}"
    if tolerance > WIDE_TOLERANCE:
        detail += f" (too few devices for a close measure: give --devices {MANY_DEVICES})"
    return passed(detail) if abs(share - p) <= tolerance else failed(detail)


def _looks_like_version(text: str) -> bool:
    return versions.parse(text) is not None


def _minor_above(version: str) -> str:
    parsed = versions.parse(version)
    assert parsed is not None  # _on_builtin only passes versions
    return str(parsed.bump_minor())


def _on_builtin(
    ctx: CheckContext, native_of: Callable[[str], str]
) -> tuple[UpdateOffer, str, Answer]:
    """Ask as the baseline device (same id, same rollout draw) on builtin of the native
    version `native_of(offered version)`: (the offer, that native version, the answer).

    Raises:
        Skip: nothing offered, or the offered version is not semver.
    """
    base, offer = ctx.require_offer()
    if not _looks_like_version(offer.version):
        raise Skip(f"the offered version {offer.version!r} is not semver")
    native = native_of(offer.version)
    device = _like(ctx, base, version_build=native)
    return offer, native, ctx.ask(replace(device, version_name="builtin"))


@check(
    "decide.builtin",
    "A device on builtin is compared by its native version",
    "error",
    'a server that does not read version_name "builtin" as the native version re-offers '
    "the release a fresh install already contains: a needless download on every first start",
)
def builtin(ctx: CheckContext) -> Outcome:
    offer, _, answer = _on_builtin(ctx, lambda version: version)
    if answer.offer is not None and answer.offer.version == offer.version:
        return failed(
            f"offered {offer.version} to a device whose builtin bundle is {offer.version}"
        )
    if isinstance(answer.result, NoUpdate) and answer.result.error in UP_TO_DATE:
        return passed(f"builtin on native {offer.version}: {answer.result.error}")
    return warned(f"builtin on native {offer.version}: {answer.describe()}, not up to date")


@check(
    "decide.no-downgrade",
    "A device whose native version is newer is not offered an older bundle",
    "warning",
    "an older bundle on a newer native app mixes old web code with new native code: crashes "
    "on boot and rollbacks (Capgo's disable_auto_update_under_native, on by default)",
)
def no_downgrade(ctx: CheckContext) -> Outcome:
    _, newer, answer = _on_builtin(ctx, _minor_above)
    if answer.offer is not None:
        return failed(f"offered {answer.offer.version} to a device on native {newer}")
    return passed(f"native {newer}: {answer.describe()}")


@check(
    "decide.unknown-channel",
    "A device asking for a channel that does not exist gets no_channel",
    "warning",
    "a server that falls back to another channel moves testers of a deleted channel to "
    "production releases without anyone noticing",
)
def unknown_channel(ctx: CheckContext) -> Outcome:
    ctx.require_app()
    answer = unknown_channel_answer(ctx)
    if answer.offer is not None:
        return failed(f"defaultChannel {MISSING_CHANNEL!r} was offered {answer.offer.version}")
    if answer.exchange.status >= 500 or answer.problem:
        return failed(f"defaultChannel {MISSING_CHANNEL!r}: {answer.describe()}")
    return passed(f"defaultChannel {MISSING_CHANNEL!r}: {answer.describe()}")


@check(
    "decide.channel",
    "Devices set to --channel get that channel's answers",
    "error",
    "a channel devices cannot reach (private, wrong platform) leaves everyone set to it on "
    "no_channel or failed checks",
)
def channel(ctx: CheckContext) -> Outcome:
    name = ctx.options.channel
    if not name:
        return skipped("give --channel NAME to check a channel")
    answer = ctx.baseline.answer
    if answer.offer is not None:
        return passed(f"channel {name}: offer {answer.offer.version}")
    if isinstance(answer.result, NoUpdate) and answer.result.kind != "failed":
        return passed(f"channel {name}: {answer.result.error} ({answer.result.kind})")
    return failed(f"channel {name}: {answer.describe()}")


@check(
    "decide.override",
    "setChannel overrides the default channel on the server, unsetChannel removes it",
    "error",
    "plugin 6 keeps a device's channel on the server: if setChannel does not take, testers "
    "who picked a channel keep getting the default channel's releases",
)
def override(ctx: CheckContext) -> Outcome:
    profile, name = ctx.options.profile, ctx.options.channel
    if profile.channel_stored_locally:
        return skipped(
            f"{profile.name} keeps the channel on the device (sent as defaultChannel); "
            "server-side overrides are plugin 6's: give --plugin plugin-6"
        )
    if not name:
        return skipped("give --channel NAME (a channel devices may set themselves)")
    ctx.require_writes("setChannel (POST /channel_self)")
    ctx.require_app()
    device = ctx.device("override", channel="")
    default = _summary(ctx.ask(device))
    wanted = _summary(ctx.ask(replace(device, channel=name)))
    if default == wanted:
        return skipped(
            f"the default channel and {name} answer alike ({default}): no override to see"
        )
    answer = channel_answer(ctx, ctx.dialect.channel_set_request(device, name))
    if not answer.allowed:
        return failed(f"setChannel {name} refused: {answer.error}")
    after = _summary(ctx.ask(device))
    if after != wanted:
        return failed(f"after setChannel {name} the device gets {after}, not {name}'s {wanted}")
    detail = f"default {default}; after setChannel {name}: {after}"
    if profile.unset_channel_delete:
        ctx.send(replace(ctx.dialect.channel_list_request(device), method="DELETE"))
        back = _summary(ctx.ask(device))
        if back != default:
            return failed(f"{detail}; after unsetChannel (DELETE) still {back}, not {default}")
        detail += f"; after unsetChannel: {back}"
    return passed(f"{detail} (device {ctx.device_ids['override']})")


_VARIANTS = {  # label -> identity changes
    "ios": {"platform": "ios", "version_os": "17.4"},
    "emulator": {"is_emulator": True},
    "dev build": {"is_prod": False},
}
_OWN_CODES = {  # refusal -> (identity field, value the device must have for it to apply)
    "disabled_platform_ios": ("platform", "ios"),
    "disabled_platform_android": ("platform", "android"),
    "disabled_platform_electron": ("platform", "electron"),
    "disable_emulator": ("is_emulator", True),
    "disable_device": ("is_emulator", False),
    "disable_prod_build": ("is_prod", True),
    "disable_dev_build": ("is_prod", False),
}


@check(
    "decide.filters",
    "Platform, emulator and dev-build refusals hit only the devices they name",
    "error",
    "a filter applied to the wrong devices blocks real users (or lets emulators and dev "
    "builds into production statistics)",
)
def filters(ctx: CheckContext) -> Outcome:
    base, _ = ctx.require_offer()
    seen, wrong = [f"android: {_summary(ctx.baseline.answer)}"], []
    for label, changes in _VARIANTS.items():
        device = _like(ctx, base, **changes)
        answer = ctx.ask(device)
        seen.append(f"{label}: {_summary(answer)}")
        code = answer.result.error if isinstance(answer.result, NoUpdate) else None
        if answer.exchange.status >= 500:
            wrong.append(f"{label}: HTTP {answer.exchange.status}")
        elif code in _OWN_CODES:
            field, value = _OWN_CODES[code]
            if getattr(device.identity, field) != value:
                wrong.append(f"{label} device refused with {code}")
    if wrong:
        return failed("; ".join(wrong) + " (" + ", ".join(seen) + ")")
    return passed(", ".join(seen))
