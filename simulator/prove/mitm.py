"""A real man in the middle: mitmproxy's `mitmdump` between the real agent and the genuine
server, all on 127.0.0.1.

mitmproxy pins older cryptography, h11 and Brotli than otasim needs, so it is not a dependency:
it lives in its own venv (`make mitm` puts one in `.venv-mitm/`) and runs as a subprocess,
found through `--mitmdump`, `OTASIM_MITMDUMP`, `.venv-mitm/bin/mitmdump` beside the source, or
PATH. It runs as a reverse proxy in front of the prove ground's server (scripted with genuine
answers only: the attacking is the proxy's), answering plain HTTP and TLS on one port with a
certificate from its own CA. The attacker's script is `mitm_addon.py`; each case sets its mode
and seed, then reads back what the proxy really changed and which requests reached it.

Attacks: rewrite bundle bytes (bit flips, truncation), strip or swap session keys, replay
answers it recorded (as they were, or relabelled newer), over plain HTTP and over TLS with
its CA trusted by the device; and the TLS refusals: an https -> http redirect, a bundle URL
rewritten to http, a certificate the device does not trust, TLS below 1.2.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from agent.drivers.backends import make_sync_port

from simulator.leftovers import stop
from simulator.prove.attacks import STRICT, Case, Figures, Kit, Victim, generated
from simulator.prove.hostile import HostileServer, Reply

MITMDUMP_ENV = "OTASIM_MITMDUMP"
MITMPROXY_PIN = "mitmproxy==11.0.2"  # what `make mitm` installs (Makefile)
ADDON = Path(__file__).with_name("mitm_addon.py")
CONTROL = "/__attacker__"  # mitm_addon.CONTROL
START_TIMEOUT_S = 60.0
HOST = "127.0.0.1"
# where `make mitm` puts it, beside the source tree
LOCAL_MITMDUMP = Path(__file__).resolve().parents[2] / ".venv-mitm" / "bin" / "mitmdump"


class MitmUnavailable(RuntimeError):
    """mitmdump is not installed, or did not start."""


def find_mitmdump(explicit: str | None = None) -> str:
    """The mitmdump to run: `explicit`, $OTASIM_MITMDUMP, the source tree's `.venv-mitm`, PATH.

    Raises:
        MitmUnavailable: none found (the message says how to install one).
    """
    env = os.environ.get(MITMDUMP_ENV)
    for candidate in (explicit, env, LOCAL_MITMDUMP, shutil.which("mitmdump")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise MitmUnavailable(
        "the man-in-the-middle proof needs mitmproxy's mitmdump, in a venv of its own (it pins "
        f"older cryptography/h11/Brotli): `make mitm`, or `python3 -m venv V && V/bin/pip "
        f"install '{MITMPROXY_PIN}'` then --mitmdump V/bin/mitmdump (or {MITMDUMP_ENV}); "
        "--no-mitm skips it"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Mitm:
    """A running mitmdump: its URLs, its CA and the attacker's controls."""

    def __init__(self, port: int, confdir: Path) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.tls_url = f"https://{HOST}:{port}"
        self.ca_file = confdir / "mitmproxy-ca-cert.pem"
        self._control = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    def attack(self, mode: str, **params: Any) -> None:
        """Attack the next requests with `mode` (mitm_addon's modes); forget the report."""
        self._control.post(CONTROL, json={"mode": mode, **params}).raise_for_status()

    def report(self) -> dict[str, Any]:
        """What the proxy changed since the last `attack`, and the requests it saw by scheme."""
        answer = self._control.get(CONTROL)
        answer.raise_for_status()
        report: dict[str, Any] = answer.json()
        return report

    def close(self) -> None:
        self._control.close()


@contextmanager
def mitm_proxy(
    mitmdump: str, upstream: str, *, tls_max: str | None = None, keep_host: bool = False
) -> Iterator[Mitm]:
    """mitmdump as a reverse proxy to `upstream` on a free loopback port, with the attacker's
    script; `tls_max` (e.g. "TLS1_1") caps the TLS it offers clients; `keep_host` passes the
    devices' Host header on (a server that builds its URLs from it points them at the proxy).
    Stopped and its folder (CA included) removed on exit."""
    with tempfile.TemporaryDirectory(prefix="otasim-mitm-") as tmp:
        confdir = Path(tmp)
        port = _free_port()
        argv = [mitmdump, "--mode", f"reverse:{upstream}", "--listen-host", HOST]
        argv += ["--listen-port", str(port), "-s", str(ADDON), "--set", f"confdir={confdir}"]
        argv += ["--set", "termlog_verbosity=warn", "--set", "flow_detail=0"]
        if keep_host:
            argv += ["--set", "keep_host_header=true"]
        if tls_max:
            argv += ["--set", "tls_version_client_min=TLS1"]
            argv += ["--set", f"tls_version_client_max={tls_max}"]
        log_path = confdir / "mitmdump.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        mitm = Mitm(port, confdir)
        try:
            _wait_ready(mitm, process, log_path)
            yield mitm
        finally:
            mitm.close()
            stop(process, 10)


def _wait_ready(mitm: Mitm, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-500:]
            raise MitmUnavailable(f"mitmdump exited ({process.returncode}): {tail}")
        try:
            mitm.report()
            if mitm.ca_file.is_file():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise MitmUnavailable(f"mitmdump did not answer within {START_TIMEOUT_S:.0f} s")


# -- probes: the proxy really offered what the device refused --------------------------------


def _handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket | None:
    try:
        sock = socket.create_connection((HOST, port), timeout=5)
        return context.wrap_socket(sock, server_hostname=HOST)
    except (OSError, ssl.SSLError):
        return None


def presents_own_certificate(mitm: Mitm) -> bool:
    """A client trusting the proxy's CA completes a TLS handshake, and one trusting only the
    system store does not: the proxy really served a certificate of its own."""
    tls = _handshake(mitm.port, ssl.create_default_context(cafile=str(mitm.ca_file)))
    if tls is None:
        return False
    tls.close()
    plain = _handshake(mitm.port, ssl.create_default_context())
    if plain is not None:
        plain.close()
    return plain is None


def offers_old_tls(mitm: Mitm) -> bool:
    """A client that allows TLS 1.0/1.1 (trusting the proxy's CA) gets TLS 1.1 at most."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(mitm.ca_file))
    with warnings.catch_warnings():  # the old versions are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    tls = _handshake(mitm.port, context)
    if tls is None:
        return False
    version = tls.version()
    tls.close()
    return version in ("TLSv1", "TLSv1.1")


# -- the victim behind the proxy -----------------------------------------------------------


class MitmVictim(Victim):
    """Devices that talk to the genuine server through the proxy: over plain HTTP, or over
    TLS trusting the proxy's CA (`trust`) or only the system store."""

    def __init__(
        self,
        scratch: Path,
        server: HostileServer,
        kit: Kit,
        proxy: Mitm,
        *,
        tls: bool = False,
        trust: bool = True,
        by_connection: bool = False,
    ) -> None:
        super().__init__(scratch, server, kit)
        self.proxy, self.tls = proxy, tls
        self.by_connection = by_connection  # the attack is the connection, not changed bytes
        self.port.close()
        self.port = make_sync_port(verify=str(proxy.ca_file) if tls and trust else True)
        self.last_report: dict[str, Any] = {}

    @property
    def front(self) -> str:
        return self.proxy.tls_url if self.tls else self.proxy.url

    def injected(self, case: Case) -> bool:
        self.last_report = self.proxy.report()
        changes = self.last_report["changes"]
        changed = any(c["genuine"] != c["served"] for c in changes)
        return case.changed and (self.by_connection or changed)


# -- the attacks ---------------------------------------------------------------------------

MitmCaseMaker = Callable[[random.Random, MitmVictim, int], tuple[Case, dict[str, Any]]]


@dataclass(frozen=True)
class MitmAttack:
    name: str
    mode: str  # mitm_addon's mode
    make: MitmCaseMaker
    tls: bool = False
    trust: bool = True  # the device trusts the proxy's CA (over TLS)
    tls_max: str | None = None  # the TLS the proxy offers at most
    forbidden: str | None = None  # "http": no plain request may follow; "any": no request
    probe: Callable[[Mitm], bool] | None = None  # proves the connection-level attack
    config: dict[str, Any] = field(default_factory=dict)  # the device's config overrides
    default_cases: int = 100
    note: str = ""


def offer(rng: random.Random, victim: MitmVictim, n: int) -> tuple[Case, dict[str, Any]]:
    """A genuine offer of a release to a fresh device; the proxy does the attacking."""
    kit = victim.kit
    release, other = rng.sample(kit.pool[2:], 2)
    replies = {
        "/updates": Reply.json(kit.answer(release, victim.front, f"5.0.{n}")),
        "/bundle": Reply(body=release.payload),
    }
    return Case(replies, True), {"session_key": other.session_key}


def delta_offer(rng: random.Random, victim: MitmVictim, n: int) -> tuple[Case, dict[str, Any]]:
    """A genuine delta (manifest) offer to a fresh device: every file comes through the proxy."""
    kit, front = victim.kit, victim.front
    release = rng.choice(kit.pool[2:])
    replies: dict[str, Reply] = {}
    manifest = []
    for k, (name, file_hash, data) in enumerate(release.delta):
        replies[f"/files/{k}"] = Reply(body=data)
        manifest.append(
            {"file_name": name, "file_hash": file_hash, "download_url": f"{front}/files/{k}"}
        )
    answer = json.loads(kit.answer(release, front, f"5.0.{n}", manifest=manifest))
    answer["url"] = f"{front}/none.zip"
    replies["/updates"] = Reply.json(json.dumps(answer).encode())
    return Case(replies, True), {}


def replay(rng: random.Random, victim: MitmVictim, n: int) -> tuple[Case, dict[str, Any]]:
    """The device ran release 3 (2.3.0) then release 0 (CURRENT) through the proxy, which
    recorded both answers; it now answers with release 3's, as it was or relabelled newer."""
    kit = victim.kit
    label = rng.choice([None, "3.0.1", f"{rng.randint(4, 9)}.{n}.0"])
    case = Case({"/bundle": Reply(body=kit.pool[3].payload)}, True, template="mitm-history")
    return case, {"version": kit.pool[3].version, "label": label}


def strict_replay(rng: random.Random, victim: MitmVictim, n: int) -> tuple[Case, dict[str, Any]]:
    """A strict device runs release 0 (CURRENT); the proxy recorded release 5's answer, with
    its signed document, on another strict device's way; it answers with it, as it was or
    relabelled newer (the relabelled Capgo v2 replay of a release never run here activates)."""
    kit = victim.kit
    label = rng.choice([None, "3.0.1", f"{rng.randint(4, 9)}.{n}.0"])
    case = Case({"/bundle": Reply(body=kit.pool[5].payload)}, True, template="current-strict")
    return case, {"version": kit.pool[5].version, "label": label}


def downgrade_to_http(
    rng: random.Random, victim: MitmVictim, n: int
) -> tuple[Case, dict[str, Any]]:
    case, params = offer(rng, victim, n)
    return case, params | {"target": f"{victim.proxy.url}/updates"}


def connection(rng: random.Random, victim: MitmVictim, n: int) -> tuple[Case, dict[str, Any]]:
    """A genuine offer through a TLS connection the device must refuse (the probe shows the
    proxy really offered it)."""
    case, params = offer(rng, victim, n)
    return Case(case.replies, True), params


MITM_ATTACKS: tuple[MitmAttack, ...] = (
    MitmAttack("mitm: bundle bit flips", "flip", offer),
    MitmAttack("mitm: bundle truncation", "truncate", offer),
    MitmAttack("mitm: session key stripped", "strip-key", offer),
    MitmAttack("mitm: session key swapped", "swap-key", offer),
    MitmAttack("mitm: delta file bit flips", "flip", delta_offer),
    MitmAttack("mitm: replay of a recorded answer", "replay", replay),
    MitmAttack(
        "mitm: strict device, recorded answer replayed",
        "replay",
        strict_replay,
        config=STRICT,
    ),
    MitmAttack("mitm TLS, its CA trusted: bundle bit flips", "flip", offer, tls=True),
    MitmAttack(
        "mitm TLS: redirect https -> http",
        "to-http",
        downgrade_to_http,
        tls=True,
        forbidden="http",
    ),
    MitmAttack(
        "mitm TLS: bundle URL rewritten to http", "http-url", offer, tls=True, forbidden="http"
    ),
    MitmAttack(
        "mitm TLS: certificate not trusted",
        "pass",
        connection,
        tls=True,
        trust=False,
        forbidden="any",
        probe=presents_own_certificate,
        default_cases=20,
    ),
    MitmAttack(
        "mitm TLS: TLS 1.1 at most",
        "pass",
        connection,
        tls=True,
        tls_max="TLS1_1",
        forbidden="any",
        probe=offers_old_tls,
        default_cases=20,
    ),
)


def run_mitm_attack(victim: MitmVictim, attack: MitmAttack, cases: int, seed: int) -> Figures:
    """`cases` cases of `attack` through the proxy (drawn by hypothesis from `seed`);
    `accepted` counts cases where the device sent a request over a connection it must refuse."""
    figures = Figures(attack.name, note=attack.note)
    started = time.monotonic()

    def one(rng: random.Random, n: int) -> None:
        case, params = attack.make(rng, victim, n)
        params["seed"] = rng.getrandbits(32)  # the proxy's bit flips and cuts
        victim.proxy.attack(attack.mode, **params)
        if attack.probe is not None:
            case = Case(case.replies, attack.probe(victim.proxy), template=case.template)
        victim.run(replace(case, config=attack.config | case.config), figures)
        seen = victim.last_report["seen"]
        accepted = {"http": seen["http"], "any": seen["http"] + seen["https"]}
        figures.accepted += accepted.get(attack.forbidden or "", 0) > 0

    figures.digest = generated(cases, seed, attack.name, one)
    figures.seconds = time.monotonic() - started
    return figures


@contextmanager
def mitm_ground(
    victim: Victim, mitmdump: str, attacks: tuple[MitmAttack, ...]
) -> Iterator[Callable[[MitmAttack], MitmVictim]]:
    """The proxies `attacks` need in front of `victim`'s server (its kit, genuine answers
    only), and a victim per attack; the replay template is prepared through the plain proxy,
    which records its answers."""
    with ExitStack() as stack:
        upstream = victim.server.url
        plain = stack.enter_context(mitm_proxy(mitmdump, upstream))
        old = None
        if any(a.tls_max for a in attacks):
            old = stack.enter_context(mitm_proxy(mitmdump, upstream, tls_max="TLS1_1"))

        def victim_for(attack: MitmAttack) -> MitmVictim:
            proxy = plain if attack.tls_max is None else old
            assert proxy is not None
            made = MitmVictim(
                victim.scratch,
                victim.server,
                victim.kit,
                proxy,
                tls=attack.tls,
                trust=attack.trust,
                by_connection=attack.probe is not None,
            )
            stack.callback(made.close)
            return made

        recorder = victim_for(MITM_ATTACKS[0])
        plain.attack("pass")
        pool = victim.kit.pool
        if any(a.make is replay for a in attacks):
            recorder.prepare("mitm-history", pool[3], pool[0])
        if any(a.make is strict_replay for a in attacks):
            recorder.prepare("mitm-strict", pool[5], pool[0], strict=True)
        yield victim_for
