"""Transport and hardening: TLS, rate-limit hints, latency under a short burst of devices,
request size limits, no secrets or internals in answers."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from agent.drivers.backends import make_async_port
from agent.drivers.http import HttpRequest
from agent.errors import TransportError
from agent.protocol.base import OutgoingRequest
from agent.protocol.capgo import retry_hint

from simulator.checks.context import CheckContext, Exchange
from simulator.checks.decisions import fleet_devices
from simulator.checks.model import Outcome, check, failed, passed, skipped, warned

CERT_EXPIRY_WARN_DAYS = 14
OVERSIZED_BODY_BYTES = 4 * 1024 * 1024 + 1024  # device bodies are < 200 KiB
SECRETS = {
    "a private key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----"),
    "a Python traceback": re.compile(r"Traceback \(most recent call last\)"),
    "a JavaScript stack trace": re.compile(r"\n\s+at [\w.$<>]+ \([^)\n]*:\d+:\d+\)"),
    "an SQL error": re.compile(r"(?i)sqlite3?\.|psycopg|syntax error at or near|SQLSTATE"),
    "a secret-looking field": re.compile(
        r"(?i)\"(?:service_role|secret|secret_key|api_key|apikey|password|private_key)\"\s*:"
    ),
    "a JWT": re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]+"),
}
URL_FIELDS = frozenset({"url", "download_url", "link"})  # signed URLs carry tokens by design


@dataclass(frozen=True)
class Burst:
    devices: int
    statuses: dict[int, int]  # 0: no answer
    latencies_ms: list[float]
    wall_ms: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def burst(ctx: CheckContext) -> Burst:
    """--devices synthetic devices check for an update at the same instant (one round)."""

    def run() -> Burst:
        requests = [ctx.dialect.check_request(d) for d in fleet_devices(ctx)]
        return asyncio.run(_burst(ctx, requests))

    result: Burst = ctx.once("burst", run)
    return result


async def _burst(ctx: CheckContext, requests: list[OutgoingRequest]) -> Burst:
    port = make_async_port(verify=ctx.options.ca_file or True, max_connections=len(requests))
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def one(request: OutgoingRequest) -> None:
        started = time.perf_counter()
        http = HttpRequest(request.method, request.url, dict(request.headers), request.body,
                           timeout_s=ctx.options.timeout_s)  # fmt: skip
        try:
            response = await port.send(http)
        except TransportError:
            statuses[0] = statuses.get(0, 0) + 1
            return
        exchange = Exchange.answered(request, response, started)
        latencies.append(exchange.elapsed_ms)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        ctx.log.append(exchange)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await port.aclose()
    return Burst(len(requests), statuses, latencies, (time.perf_counter() - started) * 1000)


@check(
    "transport.rate-limit",
    "Every 429 carries a retry hint the plugin understands",
    "warning",
    "a 429 without Retry-After (or retryAfterSeconds, rateLimitResetAt) gives devices no "
    "pause: they hammer the server again at the next foreground",
    reads_log=True,
)
def rate_limit(ctx: CheckContext) -> Outcome:
    ctx.require_offer()
    burst(ctx)
    limited = [e for e in ctx.log if e.status == 429 and not e.app_not_served]
    if not limited:
        return skipped(
            f"no 429 in {len(ctx.log)} requests (incl. a burst of {ctx.options.devices} "
            "devices): the hint could not be checked"
        )
    hintless = [e for e in limited if retry_hint(e.headers, e.json(), time.time()) is None]
    if hintless:
        return failed(f"{len(hintless)} of {len(limited)} answers 429 carry no usable retry hint")
    return passed(f"{len(limited)} answers 429, each with a retry hint")


@check(
    "transport.latency",
    "A burst of --devices concurrent update checks is answered in time",
    "warning",
    "checks slower than the plugin's 20 s responseTimeout fail on devices; slow ones delay "
    "every app start that waits for an update",
)
def latency(ctx: CheckContext) -> Outcome:
    ctx.require_offer()
    result = burst(ctx)
    p50, p90, p99 = (result.percentile(q) for q in (0.5, 0.9, 0.99))
    shown = f"p50 {p50:.0f} ms, p90 {p90:.0f} ms, p99 {p99:.0f} ms over {result.devices} devices"
    lost = result.statuses.get(0, 0)
    errors = sum(n for status, n in result.statuses.items() if status >= 500)
    if lost or errors:
        return failed(f"{lost} unanswered, {errors} 5xx; {shown}")
    if p99 > ctx.options.max_p99_ms:
        return failed(f"{shown}: p99 above --max-p99-ms {ctx.options.max_p99_ms:g}")
    median = statistics.median(result.latencies_ms) if result.latencies_ms else 0.0
    return passed(f"{shown} (median {median:.0f} ms)")


@check(
    "transport.size-limit",
    "An oversized request body is refused",
    "warning",
    "a server that reads megabytes per request can be exhausted by anyone; device bodies "
    "are under 200 KiB",
)
def size_limit(ctx: CheckContext) -> Outcome:
    body = json.dumps({"app_id": ctx.options.app_id, "padding": "x" * OVERSIZED_BODY_BYTES})
    try:
        exchange = ctx.post_json("/updates", ctx.options.updates_url, body.encode())
    except TransportError as exc:
        return passed(f"connection closed on a {len(body):,}-byte body ({type(exc).__name__})")
    if exchange.status >= 500:
        return failed(f"HTTP {exchange.status} to a {len(body):,}-byte body")
    if 200 <= exchange.status < 300:
        return failed(f"HTTP {exchange.status}: a {len(body):,}-byte body was read in full")
    return passed(f"HTTP {exchange.status} to a {len(body):,}-byte body")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in URL_FIELDS for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@check(
    "transport.no-secrets",
    "No secrets, stack traces or database errors in any answer",
    "error",
    "keys and internals in device answers are readable by anyone who installs the app",
    reads_log=True,
)
def no_secrets(ctx: CheckContext) -> Outcome:
    found = set()
    for exchange in ctx.log:
        if exchange.name == "bundle":
            continue
        data = exchange.json()
        texts = _strings(data) if data is not None else [exchange.body.decode("latin-1")]
        texts += [f"{k}: {v}" for k, v in exchange.headers.items()]
        for what, pattern in SECRETS.items():
            if any(pattern.search(text) for text in texts):
                found.add(f"{what} in {exchange.method} {exchange.name} (HTTP {exchange.status})")
    if found:
        return failed("; ".join(sorted(found)))
    return passed(f"{len(ctx.log)} answers scanned")


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout_s: float) -> ssl.SSLSocket:
    raw = socket.create_connection((host, port), timeout=timeout_s)
    try:
        return context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def _old_tls_accepted(host: str, port: int, timeout_s: float) -> bool | None:
    """True when the server completes a TLS 1.0/1.1 handshake; None when this machine's
    OpenSSL cannot offer those versions."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # offering the deprecated versions is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError):
        return None
    try:
        with _handshake(host, port, context, timeout_s):
            return True
    except ssl.SSLError as exc:
        return None if "NO_PROTOCOLS_AVAILABLE" in str(exc).upper() else False
    except OSError:
        return False


@check(
    "transport.tls",
    "TLS 1.2 or later with a valid certificate; TLS 1.0/1.1 refused",
    "error",
    "devices refuse an invalid certificate (every check fails); old TLS lets a network in "
    "the middle weaken the connection",
)
def tls(ctx: CheckContext) -> Outcome:
    if not ctx.https:
        return skipped("the API is plain http")
    parts = urlsplit(ctx.options.updates_url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context(cafile=ctx.options.ca_file)
    try:
        with _handshake(host, port, context, ctx.options.timeout_s) as conn:
            version, cert = conn.version() or "", conn.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        return failed(f"the certificate does not verify: {exc.verify_message}")
    except (ssl.SSLError, OSError) as exc:
        return failed(f"TLS handshake failed: {exc}")
    if version not in ("TLSv1.2", "TLSv1.3"):
        return failed(f"negotiated {version}")
    days = (ssl.cert_time_to_seconds(str(cert.get("notAfter"))) - time.time()) / 86400
    old = _old_tls_accepted(host, port, ctx.options.timeout_s)
    if old:
        return failed(f"{version} by default, but a TLS 1.0/1.1 handshake is accepted too")
    note = "" if old is False else " (TLS 1.0/1.1 not tested: this machine's OpenSSL lacks them)"
    if days < CERT_EXPIRY_WARN_DAYS:
        return warned(f"{version}; the certificate expires in {days:.0f} days{note}")
    return passed(f"{version}, certificate valid for {days:.0f} more days{note}")
