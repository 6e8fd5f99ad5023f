"""What a man in the middle can do to each dialect, measured: `otasim prove --dialects`.

For every dialect of the registry (`agent.protocol.registry.DIALECTS`), signed (the app
embeds the publisher's key in the dialect's own form) and unsigned (and, for Capgo, in
otasim's strict mode: a signed release document), over plain HTTP and over
TLS, a real mitmproxy sits between real devices and the real reference server (all on
127.0.0.1), and each cell is what happened:

- tamper: the proxy sends every request to the attacker's own reference server, where the
  attacker published its own release with the same `otasim publish` steps (signed with its
  own key when the row is signed). `accepted`: a device activated the attacker's files.
- replay: the proxy kept the genuine answer that offered 1.0.1 (to another device) and, once
  1.0.2 is out, answers it to a device that never ran 1.0.1. `accepted`: it activated 1.0.1,
  stale content the server no longer offers.
- downgrade: the same kept answer to a device running 1.0.2. `accepted`: it went back to 1.0.1.
- confidentiality: the proxy searches every body it passes on (raw, or the files of a zip) for
  a secret in the release's files while a device installs it. `read`: found; `kept`: the
  device installed the release through the proxy (or, over TLS, refused the proxy) and the
  secret was in none of the bodies the proxy passed on.

Over TLS the device trusts the system store only (the attacker has no certificate it trusts):
the same attacks are aimed at it. A refusal shows the reason the device gave. A cell whose
attack did not happen (nothing replayed, nothing passed on) is `unknown`, never a pass.
"""

from __future__ import annotations

import re
import secrets
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.api import AgentObserver
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from agent.protocol.registry import DEFAULT_DIALECT, DIALECTS, dialect_spec

from simulator.prove.mitm import Mitm, mitm_proxy
from simulator.prove.powercut import NoWaitClock
from simulator.publish import DIALECT_TRUST, publish
from simulator.release import create_keys
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer, run_server

ATTACKS = ("tamper", "replay", "downgrade", "confidentiality")
TRANSPORTS = ("http", "tls-trusted", "tls")
TRANSPORT_NAMES = {
    "http": "plain HTTP",
    "tls-trusted": "TLS, attacker's CA trusted",
    "tls": "TLS",
}
BUILTIN = "1.0.0"
OLD, NEW, EVIL = "1.0.1", "1.0.2", "1.0.3"


@dataclass
class Row:
    """One dialect, signed ("yes", "strict": with the signed release document) or not ("no"),
    over one transport: a cell per attack."""

    dialect: str
    signed: str
    transport: str
    cells: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect,
            "signed": self.signed,
            "transport": self.transport,
            "cells": dict(self.cells),
        }


class _Events(AgentObserver):
    """The reasons a device gave for what it refused."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def on_event(self, name: str, payload: Any) -> None:
        data = dict(payload)
        reason = str(data.get("error") or data.get("reason") or "").split(":")[0]
        if "TLS certificate refused" in str(data.get("message", "")):
            self.reasons.append("TLS certificate refused")
        elif re.fullmatch(r"[a-z_]+", reason) and reason != "no_update_available":
            self.reasons.append(reason)


def _dist(tmp: Path, version: str, marker: str) -> Path:
    folder = tmp / f"dist-{version}-{uuid.uuid4().hex[:6]}"
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text(f"<html>{version} {marker}</html>")
    (folder / "assets" / "app.js").write_text(f"console.log('{version} {marker}');" * 20)
    return folder


class _Ground:
    """The genuine and the attacker's servers, one proxy in front, the devices' folders."""

    def __init__(self, scratch: Path, genuine: RunningServer, evil: RunningServer, mitm: Mitm):
        self.scratch, self.genuine, self.evil, self.mitm = scratch, genuine, evil, mitm
        self.evil_port = int(evil.url.rsplit(":", 1)[1])

    def publish(
        self,
        server: RunningServer,
        dialect: str,
        app: str,
        version: str,
        src: Path,
        key: bytes | None,
        strict: bool,
    ) -> None:
        """Publish through the proxy: URLs fixed at publish time point at it, as at a server
        whose public address is where the attacker sits. `strict`: with the signed release
        document, its counter the version's patch number (1.0.2 -> 2)."""
        verify = ssl.create_default_context(cafile=str(self.mitm.ca_file))
        with AdminClient(self.mitm.tls_url, server.admin_key, verify=verify) as admin:
            publish(
                admin, app_id=app, version=version, channel="production", source=src,
                private_pem=key, dialects=[dialect], strict=strict,
                counter=int(version.rsplit(".", 1)[1]),
            )  # fmt: skip

    def device(
        self, dialect: str, app: str, name: str, trust: dict[str, str | None], transport: str
    ) -> _Phone:
        """A device of `app` behind the proxy: it trusts the proxy's CA unless over "tls"
        (the system store only), and talks TLS unless over "http"."""
        front = self.mitm.url if transport == "http" else self.mitm.tls_url
        verify = True if transport == "tls" else str(self.mitm.ca_file)
        updates, stats, channel = dialect_spec(dialect).urls(front)
        config = AgentConfig(
            update_url=updates, stats_url=stats, channel_url=channel, dialect=dialect,
            transport_attempts=1, response_timeout_s=5.0, exchange_timeout_s=10.0,
            download_timeout_s=20.0, **trust,
        )  # fmt: skip
        identity = DeviceIdentity(str(uuid.uuid4()), app, "android", BUILTIN)
        return _Phone(self.scratch / name, config, identity, verify)


class _Phone(NamedTuple):
    folder: Path
    config: AgentConfig
    identity: DeviceIdentity
    verify: bool | str  # the CA file it trusts, or True: the system store


def _run(phone: _Phone) -> _Events:
    """One app start: check, apply what came at background, confirm the new boot."""
    events = _Events()
    port = make_sync_port(verify=phone.verify)
    try:
        device = SyncDevice.open(
            phone.folder, phone.config, phone.identity, port, clock=NoWaitClock(),
            observer=events, durable=False,
        )  # fmt: skip
        device.launch()
        device.notify_app_ready(device.status().boot_id)
        device.background()
        device.notify_app_ready(device.status().boot_id)
        device.close()
    finally:
        port.close()
    return events


def _running(phone: _Phone) -> str:
    """The text of the index.html the device now runs ("" for the builtin)."""
    port = make_sync_port()
    try:
        device = SyncDevice.open(
            phone.folder, phone.config, phone.identity, port, clock=NoWaitClock()
        )
        current = device.status().current
        device.close()
    finally:
        port.close()
    page = current.path / "index.html" if current.path else None
    return page.read_text() if page is not None and page.is_file() else ""


def _verdict(activated: bool, attacked: bool, events: _Events) -> str:
    if activated:
        return "accepted"
    if not attacked:
        return "unknown"
    reasons = sorted(set(events.reasons))
    return "refused" + (f" ({', '.join(reasons)})" if reasons else "")


def _trust(dialect: str, public_pem: bytes, private_pem: bytes) -> dict[str, str | None]:
    """What a signed app embeds: a dialect's own form of the publisher's key (`DIALECT_TRUST`),
    else Capgo's public key (as `otasim run` does)."""
    if dialect in DIALECT_TRUST:
        return {"code_signing_pem": DIALECT_TRUST[dialect](private_pem)}
    return {"public_key": public_pem.decode()}


def _measure(ground: _Ground, dialect: str, signing: str, transports: Sequence[str]) -> list[Row]:
    signed, strict = signing != "no", signing == "strict"
    mitm = ground.mitm
    private, public = create_keys()
    attacker_key, _ = create_keys()
    key = private if signed else None
    trust: dict[str, Any] = _trust(dialect, public, private) if signed else {}
    trust |= {"strict_release": True} if strict else {}
    secret = f"SECRET-{secrets.token_hex(8)}"
    tmp = ground.scratch / f"{dialect}-{signing}"
    app = f"com.otasim.compare.{dialect}.{signing}{uuid.uuid4().hex[:6]}"
    for server in (ground.genuine, ground.evil):
        with AdminClient(server.url, server.admin_key) as admin:
            admin.create_app(app)
    mitm.attack("pass")
    ground.publish(ground.genuine, dialect, app, OLD, _dist(tmp, OLD, secret), key, strict)
    evil_src = _dist(tmp, EVIL, "owned")
    mitm.attack("reroute", port=ground.evil_port)
    evil_key = attacker_key if signed else None
    ground.publish(ground.evil, dialect, app, EVIL, evil_src, evil_key, strict)
    # other devices take 1.0.1 through the proxy, which keeps their answer (its URLs name the
    # scheme each device used; over "tls" the attacker has only what it kept over plain HTTP)
    kept = {t: f"{tmp.name}-{OLD}-{t}" for t in ("http", "tls-trusted")}
    recorded = set()
    for transport, name in kept.items():
        mitm.attack("record", name=name)
        recorder = ground.device(dialect, app, f"{tmp.name}-recorder-{transport}", trust, transport)
        _run(recorder)
        if name in mitm.report()["recorded_answers"] and f"{OLD} " in _running(recorder):
            recorded.add(name)  # the answer kept is the one that offered 1.0.1
    mitm.attack("pass")
    ground.publish(ground.genuine, dialect, app, NEW, _dist(tmp, NEW, secret), key, strict)
    rows = []
    for transport in transports:
        tls = transport == "tls"  # the device does not trust the attacker's CA
        row = Row(dialect, signing, transport)
        # confidentiality: a device installs 1.0.2 through the proxy
        reader = ground.device(dialect, app, f"{tmp.name}-{transport}-reader", trust, transport)
        mitm.attack("pass", secret=secret)
        events = _run(reader)
        read = mitm.report()["read"]
        if read["plaintext"]:
            row.cells["confidentiality"] = "read"
        elif (not tls and f"{NEW} " in _running(reader)) or (
            tls and "TLS certificate refused" in events.reasons
        ):
            row.cells["confidentiality"] = "kept"
        else:
            row.cells["confidentiality"] = "unknown"
        # tamper: the attacker's own server answers everything
        victim = ground.device(dialect, app, f"{tmp.name}-{transport}-tamper", trust, transport)
        mitm.attack("reroute", port=ground.evil_port)
        events = _run(victim)
        attacked = bool(mitm.report()["changes"]) or "TLS certificate refused" in events.reasons
        owned = "owned" in _running(victim)
        row.cells["tamper"] = _verdict(owned, attacked, events)
        # replay (a device on the builtin) and downgrade (a device running 1.0.2)
        for attack, prepared in (("replay", False), ("downgrade", True)):
            name = f"{tmp.name}-{transport}-{attack}"
            phone = ground.device(dialect, app, name, trust, transport)
            if prepared:  # installed 1.0.2 through the proxy over plain HTTP
                plain = ground.device(dialect, app, phone.folder.name, trust, "http")
                plain = plain._replace(identity=phone.identity)
                mitm.attack("pass")
                _run(plain)
                if f"{NEW} " not in _running(plain):
                    row.cells[attack] = "unknown"
                    continue
            answer = kept.get(transport, kept["http"])
            mitm.attack("replay-as", name=answer)
            events = _run(phone) if answer in recorded else _Events()
            report_changes = answer in recorded and bool(mitm.report()["changes"])
            attacked = report_changes or "TLS certificate refused" in events.reasons
            activated = answer in recorded and f"{OLD} " in _running(phone)
            row.cells[attack] = _verdict(activated, attacked, events)
        rows.append(row)
    mitm.attack("pass")
    return rows


@contextmanager
def _ground(mitmdump: str) -> Iterator[_Ground]:
    with ExitStack() as stack:
        genuine = stack.enter_context(run_server())
        evil = stack.enter_context(run_server())
        mitm = stack.enter_context(mitm_proxy(mitmdump, genuine.url, keep_host=True))
        scratch = Path(stack.enter_context(_scratch()))
        yield _Ground(scratch, genuine, evil, mitm)


@contextmanager
def _scratch() -> Iterator[str]:
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    folder = tempfile.mkdtemp(prefix="otasim-dialects-", dir=shm)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def compare_dialects(
    mitmdump: str,
    dialects: Sequence[str] = tuple(DIALECTS),
    signings: Sequence[str] = ("yes", "no", "strict"),
    transports: Sequence[str] = TRANSPORTS,
) -> list[Row]:
    """Measure every cell for `dialects` (default: every dialect of the registry)."""
    for dialect in dialects:
        dialect_spec(dialect)  # an unknown name fails before anything runs
    rows: list[Row] = []
    with _ground(mitmdump) as ground:
        for dialect in dialects:
            for signing in signings:
                if signing != "no" and not DIALECTS[dialect].uses_key:
                    continue  # a dialect that verifies no signature (Appflow): unsigned rows
                if signing != "strict" or dialect == DEFAULT_DIALECT:  # strict: Capgo's only
                    rows += _measure(ground, dialect, signing, transports)
    return rows


def table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (the README's is a copy of this output)."""
    head = ["dialect", "signed", "transport", *ATTACKS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        transport = TRANSPORT_NAMES[row.transport]
        cells = [row.cells.get(a, "unknown") for a in ATTACKS]
        line = [row.dialect, row.signed, transport, *cells]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)
