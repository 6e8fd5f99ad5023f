"""Protocol answers: shapes and `kind`s, error bodies, flags, stats, channel_self."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from agent.errors import ProtocolError
from agent.protocol.answers import BLOCKED_CODES as BLOCKED
from agent.protocol.answers import UP_TO_DATE_CODES as UP_TO_DATE
from agent.protocol.answers import kind_of
from agent.protocol.base import ChannelAnswer, NoUpdate, OutgoingRequest, StatEvent, StatsOutcome
from agent.protocol.capgo import KINDS, info_object

from simulator.checks.context import Answer, CheckContext, Exchange
from simulator.checks.errors import CheckFailed
from simulator.checks.fuzz import malformed_requests
from simulator.checks.model import Outcome, check, failed, passed, skipped, warned

FLAG_KEYS = frozenset({"major", "breaking", "public", "allow_self_set", "allowSet", "unset"})
MISSING_CHANNEL = "otasim-check-no-such-channel"
UNKNOWN_APP = "com.otasim.check.unknownapp"


def up_to_date_answer(ctx: CheckContext) -> Answer:
    """The answer to the baseline device once it runs the offered version."""

    def ask() -> Answer:
        device, offer = ctx.require_offer()
        return ctx.ask(replace(device, version_name=offer.version))

    answer: Answer = ctx.once("up-to-date", ask)
    return answer


def unknown_channel_answer(ctx: CheckContext) -> Answer:
    answer: Answer = ctx.once(
        "unknown-channel", lambda: ctx.ask(ctx.device("unknown-channel", channel=MISSING_CHANNEL))
    )
    return answer


@check(
    "protocol.answer",
    "The update answer reads as the plugin reads it",
    "error",
    "an /updates answer the plugin cannot parse ends every check in download_fail: "
    "no device ever updates",
)
def answer_shape(ctx: CheckContext) -> Outcome:
    answer = ctx.baseline.answer
    status = answer.exchange.status
    if answer.problem:
        return failed(f"the plugin cannot read the answer: {answer.problem}")
    if status >= 500:
        return failed(f"HTTP {status} to a valid update check")
    if status == 429:
        data = answer.data
        error = data.get("error") if isinstance(data, dict) else None
        return skipped(
            f"HTTP 429 {error or ''} to a valid update check: the server does not serve "
            f"{ctx.options.app_id} (unknown app, or rate limited)"
        )
    return passed(f"{answer.describe()} (device on {ctx.baseline.device.version_name})")


@check(
    "protocol.up-to-date",
    "A device on the current version is told it is up to date",
    "error",
    "a device re-offered the version it runs downloads it again on every app start",
)
def up_to_date(ctx: CheckContext) -> Outcome:
    answer = up_to_date_answer(ctx)
    result = answer.result
    if answer.offer is not None:
        return failed(f"offered {answer.offer.version} again to a device already running it")
    if answer.problem or answer.exchange.status != 200:
        return failed(f"expected HTTP 200 no_new_version_available, got {answer.describe()}")
    assert isinstance(result, NoUpdate)
    quiet = UP_TO_DATE if ctx.options.profile.reads_kind else {"no_new_version_available"}
    if result.error not in quiet:
        return failed(
            f"expected no_new_version_available, got {result.error!r} "
            f"({ctx.options.profile.name} devices report it as download_fail)"
        )
    return passed(f"HTTP 200 {result.error}")


@check(
    "protocol.kind",
    "Every refusal carries the `kind` plugin 8 sorts it by",
    "error",
    "plugin 8 reads an answer without a known `kind` as failed: every up-to-date check "
    "becomes download_fail and devices report failures that never happened",
    reads_log=True,
)
def kinds(ctx: CheckContext) -> Outcome:
    if not ctx.options.profile.reads_kind:
        return skipped(f"{ctx.options.profile.name} devices do not read `kind`")
    unknown_channel_answer(ctx)
    if ctx.baseline.answer.offer is not None:
        up_to_date_answer(ctx)
    problems, seen = [], 0
    for exchange in ctx.log:
        data = exchange.json() if exchange.name == "/updates" else None
        if exchange.status != 200 or not isinstance(data, dict) or "error" not in data:
            continue
        seen += 1
        code, kind = data.get("error"), data.get("kind")
        expected = kind_of(code) if isinstance(code, str) else None
        known = code in UP_TO_DATE or code in BLOCKED or code in KNOWN_FAILED
        if kind not in KINDS:
            problems.append(f"{code}: kind {kind!r} (plugin 8 reads: failed)")
        elif known and kind != expected:
            problems.append(f"{code}: kind {kind!r}, Capgo says {expected!r}")
    if not seen:
        return skipped("no refusal was answered to classify")
    if problems:
        return failed("; ".join(sorted(set(problems))))
    return passed(f"{seen} refusals, each with Capgo's kind")


KNOWN_FAILED = frozenset(
    [
        "unknown_version_build",
        "semver_error",
        "unsupported_plugin_version",
        "missing_info",
        "no_channel",
        "null_channel_data",
        "no_bundle",
        "misconfigured_channel",
        "revert_to_builtin_plugin_version_too_old",
        "no_bundle_url",
        "no_url_or_manifest",
    ]
)


def _flag_problems(value: Any, where: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in FLAG_KEYS and not isinstance(item, bool):
                found.append(f"{where}.{key} = {json.dumps(item)}")
            found += _flag_problems(item, where)
    elif isinstance(value, list):
        for item in value:
            found += _flag_problems(item, where)
    return found


@check(
    "protocol.flags",
    "Flags in answers are JSON booleans",
    "error",
    'the plugin reads a flag sent as 1 or "true" as false: public channels look private, '
    "allowSet refusals and major-update warnings are missed",
    reads_log=True,
)
def flags(ctx: CheckContext) -> Outcome:
    if ctx.options.profile.lists_channels:
        channel_list(ctx)
    problems, seen = [], 0
    for exchange in ctx.log:
        data = exchange.json()
        if exchange.name not in ("/updates", "/channel_self") or data is None:
            continue
        seen += _count_flags(data)
        problems += _flag_problems(data, exchange.name)
    if problems:
        return failed("not booleans: " + ", ".join(sorted(set(problems))))
    if not seen:
        return skipped("no answer carried a flag (major, public, allow_self_set, allowSet)")
    return passed(f"{seen} flags, all booleans")


def _count_flags(value: Any) -> int:
    if isinstance(value, dict):
        return sum(k in FLAG_KEYS for k in value) + sum(_count_flags(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_flags(v) for v in value)
    return 0


def _dev(ctx: CheckContext) -> Any:
    return ctx.device("protocol")


def channel_list(ctx: CheckContext) -> Exchange:
    """GET /channel_self (listChannels) as the protocol device, once per run."""
    listing: Exchange = ctx.once(
        "channel-list", lambda: ctx.send(ctx.dialect.channel_list_request(_dev(ctx)))
    )
    return listing


def _bad_bodies(ctx: CheckContext) -> list[tuple[str, bytes]]:
    body = info_object(_dev(ctx))
    cases: list[tuple[str, Any]] = [
        ("missing device_id", {k: v for k, v in body.items() if k != "device_id"}),
        ("missing app_id", {k: v for k, v in body.items() if k != "app_id"}),
        ("device_id not a UUID", body | {"device_id": "not-a-device-id"}),
        ("version_build not semver", body | {"version_build": "not a version"}),
        ("is_prod a string", body | {"is_prod": "yes"}),
    ]
    return [("body not JSON", b"{not json")] + [(n, json.dumps(b).encode()) for n, b in cases]


@check(
    "protocol.bad-input",
    "Invalid update checks get a 4xx with an error code",
    "error",
    "a 5xx on bad input makes devices retry and monitoring cry outage; an offer to an invalid "
    "request means the server does not validate what devices send",
)
def bad_input(ctx: CheckContext) -> Outcome:
    bad, soft = [], []
    for name, body in _bad_bodies(ctx):
        exchange = ctx.post_json("/updates", ctx.options.updates_url, body)
        data = exchange.json()
        error = data.get("error") if isinstance(data, dict) else None
        if exchange.status >= 500 or (exchange.status == 200 and not error):
            bad.append(f"{name}: HTTP {exchange.status}{' offer' if data else ''}")
        elif not 400 <= exchange.status < 500 or not error:
            soft.append(f"{name}: HTTP {exchange.status} {error or 'without error code'}")
    if bad:
        return failed("; ".join(bad))
    if soft:
        return warned("Capgo answers 400 with an error code; " + "; ".join(soft))
    return passed(f"{len(_bad_bodies(ctx))} invalid requests, each a 4xx with an error code")


@check(
    "protocol.unknown-app",
    "An unknown app id is refused, not served",
    "warning",
    "a server that answers any app id lets anyone probe for apps and hides a misconfigured "
    "appId in the binary",
)
def unknown_app(ctx: CheckContext) -> Outcome:
    answer = ctx.ask(ctx.device("unknown-app", app_id=UNKNOWN_APP))  # one probe only
    status = answer.exchange.status
    if answer.offer is not None:
        return failed(f"offered {answer.offer.version} to unknown app {UNKNOWN_APP}")
    if status >= 500:
        return failed(f"HTTP {status} for unknown app {UNKNOWN_APP}")
    return passed(f"{answer.describe()} for {UNKNOWN_APP} (one probe: Capgo counts misses)")


@check(
    "protocol.fuzz",
    "No 5xx or dropped connection on malformed requests",
    "error",
    "a request shape that crashes the server is one buggy plugin release away from an "
    "outage for every device",
)
def fuzz(ctx: CheckContext) -> Outcome:
    targets = [("/updates", "POST", ctx.options.updates_url)]
    targets.append(("/channel_self", "PUT", ctx.options.channel_url))
    if ctx.options.allow_writes:
        targets.append(("/stats", "POST", ctx.options.stats_url))
    crashes: list[str] = []
    sent = 0
    for name, method, url, body in malformed_requests(
        info_object(_dev(ctx)), targets, ctx.options.fuzz_examples
    ):
        sent += 1
        try:
            exchange = ctx.post_json(name, url, body, method)
        except Exception as exc:  # a dropped connection is as bad as a 5xx
            crashes.append(f"{method} {name} {body[:120]!r}: no answer ({type(exc).__name__})")
            continue
        if exchange.status >= 500:
            crashes.append(f"{method} {name} {body[:120]!r}: HTTP {exchange.status}")
    where = ", ".join(f"{m} {n}" for n, m, _ in targets)
    if crashes:
        return failed(f"{len(crashes)} of {sent}: " + " | ".join(crashes[:3]))
    return passed(f"{sent} generated malformed bodies to {where}: no 5xx")


def _stats_events(ctx: CheckContext, label: str) -> list[Any]:
    """Two harmless events about `builtin`, as the dialect encodes them for this device."""
    device = ctx.device(label)
    events = [
        StatEvent(i, action, "builtin", int(time.time() * 1000))
        for i, action in enumerate(("app_moved_to_foreground", "app_moved_to_background"))
    ]
    body = ctx.dialect.stats_request(device, events).body
    decoded = json.loads(body or b"[]")
    return decoded if isinstance(decoded, list) else [decoded]


def _stats_refusal(ctx: CheckContext, exchange: Exchange, what: str, batched: bool) -> Outcome:
    """A refused stats POST: a failure for the profile that sends that shape, else a warning."""
    outcome, _ = ctx.dialect.parse_stats(exchange.status, exchange.headers, exchange.body, 0)
    if outcome is StatsOutcome.DROP:
        detail = f"HTTP {exchange.status} to {what}: devices drop it, those stats are lost"
    else:
        detail = (
            f"HTTP {exchange.status} to {what}: devices re-queue it for ever until their "
            "200-event queue overflows and stats are lost"
        )
    profile = ctx.options.profile
    if profile.stats_batched != batched:
        return warned(f"{detail} (not the shape {profile.name} sends)")
    return failed(detail)


@check(
    "protocol.stats-batch",
    "/stats takes a batched array and answers per event",
    "error",
    "plugin 8 sends stats as arrays: a server that reads one object loses every event, "
    "rollouts never auto-pause and failure rates read zero",
)
def stats_batch(ctx: CheckContext) -> Outcome:
    ctx.require_writes("POST /stats")
    batch = json.dumps(_stats_events(ctx, "stats-batch")).encode()
    exchange = ctx.post_json("/stats", ctx.options.stats_url, batch)
    if not 200 <= exchange.status < 300:
        return _stats_refusal(ctx, exchange, "a batch of 2 events", batched=True)
    data = exchange.json()
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list):
        return warned(
            "accepted without per-event results (Capgo answers results[]): cannot tell whether "
            "the events were stored; a server that reads one object drops arrays like this"
        )
    errors = [r for r in results if not isinstance(r, dict) or r.get("status") != "ok"]
    if len(results) != 2 or errors:
        return failed(f"{len(results)} results for 2 events, not ok: {json.dumps(errors)[:200]}")
    return passed(f"HTTP {exchange.status}, 2 results ok (device {ctx.device_ids['stats-batch']})")


@check(
    "protocol.stats-single",
    "/stats takes one event object",
    "error",
    "plugins 6 and 7 send one event per request: a server that takes only arrays loses their stats",
)
def stats_single(ctx: CheckContext) -> Outcome:
    ctx.require_writes("POST /stats")
    event = _stats_events(ctx, "stats-single")[0]
    exchange = ctx.post_json("/stats", ctx.options.stats_url, json.dumps(event).encode())
    if not 200 <= exchange.status < 300:
        return _stats_refusal(ctx, exchange, "one event", batched=False)
    data = exchange.json()
    if isinstance(data, dict) and data.get("error"):
        return failed(f"refused one valid event: {data.get('error')}")
    return passed(f"HTTP {exchange.status} {json.dumps(data)[:60]}")


@check(
    "protocol.channel-get",
    "getChannel (PUT) and listChannels (GET) answer as the plugin reads them",
    "error",
    "a getChannel answer the plugin cannot read breaks the channel picker; the plugin saves "
    "the channel it returns and asks for it in every later check",
)
def channel_get(ctx: CheckContext) -> Outcome:
    ctx.require_app()
    answer = channel_answer(ctx, ctx.dialect.channel_get_request(_dev(ctx)))
    notes = [f"PUT: {answer.channel or answer.error} ({answer.status or 'no status'})"]
    if ctx.options.profile.lists_channels:
        listing = channel_list(ctx)
        try:
            channels = ctx.dialect.parse_channel_list(listing.status, listing.body)
        except ProtocolError as exc:
            return failed(f"GET /channel_self: {exc}")
        notes.append(f"GET: {len(channels)} channels")
    return passed("; ".join(notes))


@check(
    "protocol.channel-set",
    "setChannel (POST) refuses a missing channel; unsetChannel (DELETE) answers",
    "warning",
    "a server that accepts any channel name makes devices store it and then get no_channel "
    "on every later check",
)
def channel_set(ctx: CheckContext) -> Outcome:
    ctx.require_writes("POST /channel_self")
    device = ctx.device("channel-set")
    answer = channel_answer(ctx, ctx.dialect.channel_set_request(device, MISSING_CHANNEL))
    if answer.allowed:
        return failed(f"POST /channel_self accepted {MISSING_CHANNEL!r}, which does not exist")
    notes = [f"POST {MISSING_CHANNEL}: {answer.error}"]
    if ctx.options.channel:
        chosen = channel_answer(ctx, ctx.dialect.channel_set_request(device, ctx.options.channel))
        notes.append(f"POST {ctx.options.channel}: {'allowed' if chosen.allowed else chosen.error}")
    if ctx.options.profile.unset_channel_delete:
        delete = ctx.send(replace(ctx.dialect.channel_list_request(device), method="DELETE"))
        if delete.status >= 500:
            return failed(f"DELETE /channel_self: HTTP {delete.status}")
        notes.append(f"DELETE: HTTP {delete.status}")
    return passed("; ".join(notes) + f" (device {ctx.device_ids['channel-set']})")


def channel_answer(ctx: CheckContext, request: OutgoingRequest) -> ChannelAnswer:
    """Send a channel_self POST/PUT and read the answer as the plugin does.

    Raises:
        CheckFailed: a 5xx, or an answer the plugin cannot read.
    """
    exchange = ctx.send(request)
    where = f"{request.method} /channel_self"
    if exchange.status >= 500:
        raise CheckFailed(f"{where}: HTTP {exchange.status}")
    try:
        return ctx.dialect.parse_channel(exchange.status, exchange.body)
    except ProtocolError as exc:
        raise CheckFailed(f"{where}: {exc}") from None
