"""The attack matrix: real attackers against the real agent over loopback HTTP.

Genuine releases are built and signed once (`Kit`). Each attack then generates cases from a
seeded random source: a case scripts the hostile server (`hostile.HostileServer`) with the
bytes the attacker serves, and says which path carries the attacker's change and whether the
bytes really differ from the genuine ones. A fresh device (or a copy of a prepared one) runs
`launch` and `background` against it, with the app's real public key. Then:

- *injected*: the attacker's bytes differed from the genuine ones and the server served them;
- *activations*: a bundle installed (pending or booted) whose files are not one of the trees
  the case allows (none for most attacks: any install of tampered bytes counts);
- *unbootable*: the folder, reopened, has no bootable current bundle with its index.html;
- *unhandled*: `launch`/`background` raised (a hostile server must never make them raise).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import random
import shutil
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

import brotli
from agent.bundles.manifest import expected_file_hash
from agent.config import AgentConfig, DeviceIdentity
from agent.core.lifecycle import BUILTIN
from agent.drivers.api import AgentObserver
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from agent.protocol.base import RELEASE_FIELD, ReleaseDocument
from agent.security.keys import PublicKey, load_public_key
from agent.security.release import sign_release
from agent.store import DeviceStore
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from simulator.prove.hostile import HostileServer, Reply, hostile_server
from simulator.prove.powercut import NoWaitClock, read_tree
from simulator.release import (
    build_manifest,
    create_keys,
    encrypt_bundle,
    load_private_key,
    zip_dist,
)

Tree = dict[str, bytes]
MiB = 1024 * 1024
APP_ID = "com.otasim.prove"
BUILTIN_VERSION = "1.0.0"
POOL_SIZE = 33  # genuine releases: 33 * 32 ordered pairs for the session-key swaps
CURRENT = "3.0.0"  # what prepared devices run, confirmed
BOMB_ANSWER_BYTES = 64 * MiB
ATTACKER_KEYS = 11  # x 31 releases x 3 forged field sets: 1023 distinct wrong-key cases


@dataclass(frozen=True)
class Release:
    """A genuine release: its files, encrypted zip and what the server hands devices."""

    version: str
    files: Tree
    zip_path: Path
    payload: bytes
    checksum: str
    session_key: str
    delta: tuple[tuple[str, str, bytes], ...]  # (file_name, file_hash, served bytes)
    plain_sha256: str = ""


def _dist(n: int) -> Tree:
    files = {"index.html": f"<html>release {n}</html>".encode()}
    for k in range(8):
        files[f"js/chunk-{k}.js"] = f"/* release {n} chunk {k} */".encode() * (40 + k)
    return files


@dataclass
class Kit:
    """The genuine material every attack starts from (built once, signed with the app key)."""

    work: Path
    private_pem: bytes
    public_pem: bytes
    pool: list[Release]
    attacker_keys: list[bytes]
    # prepared devices: folder, the release they run, its signed document (strict ones)
    templates: dict[str, tuple[Path, Release, dict[str, str] | None]] = field(default_factory=dict)

    @property
    def trees(self) -> tuple[Tree, ...]:
        return tuple(r.files for r in self.pool)

    def answer(self, release: Release, url: str, version: str, **fields: Any) -> bytes:
        """A genuine Capgo answer offering `release` as `version`, with `fields` replaced."""
        body = {
            "version": version,
            "url": f"{url}/bundle",
            "checksum": release.checksum,
            "session_key": release.session_key,
        }
        return json.dumps(body | fields).encode()

    @functools.cached_property
    def _signer(self) -> tuple[rsa.RSAPrivateKey, PublicKey]:
        return load_private_key(self.private_pem), load_public_key(self.public_pem.decode())

    def document(
        self, release: Release, version: str, counter: int, expires: float | None = None
    ) -> dict[str, str]:
        """The signed release document (strict mode) of `release` as `version`."""
        private, public = self._signer
        files = {
            name: expected_file_hash(file_hash, public) for name, file_hash, _ in release.delta
        }
        expiry = int(time.time() + 7 * 86400 if expires is None else expires)
        document = ReleaseDocument(APP_ID, version, counter, expiry, release.plain_sha256, files)
        return sign_release(document, private)

    def encrypt(self, release: Release, private_pem: bytes, out: Path) -> tuple[bytes, str, str]:
        sealed = encrypt_bundle(release.zip_path, private_pem, out)
        return sealed.path.read_bytes(), sealed.checksum, sealed.session_key


def build_kit(work: Path) -> Kit:
    private_pem, public_pem = create_keys()
    pool = []
    for n in range(POOL_SIZE):
        dist = work / f"dist-{n}"
        for name, data in _dist(n).items():
            (dist / name).parent.mkdir(parents=True, exist_ok=True)
            (dist / name).write_bytes(data)
        zip_path = work / f"release-{n}.zip"
        zip_dist(dist, zip_path)
        sealed = encrypt_bundle(zip_path, private_pem, work / f"release-{n}.enc")
        manifest = build_manifest(dist, work / f"delta-{n}", private_pem, sealed.session_key)
        delta = tuple((f.file_name, f.file_hash, f.path.read_bytes()) for f in manifest.files)
        pool.append(
            Release(
                f"2.{n}.0",
                _dist(n),
                zip_path,
                sealed.path.read_bytes(),
                sealed.checksum,
                sealed.session_key,
                delta,
                sealed.plain_checksum,
            )
        )
    attackers = [create_keys()[0] for _ in range(ATTACKER_KEYS)]
    return Kit(work, private_pem, public_pem, pool, attackers)


# -- cases and their outcome ---------------------------------------------------------------


@dataclass
class Case:
    replies: dict[str, Reply]
    changed: bool  # the attacker's bytes differ from what the genuine server would serve
    where: str = "/updates"  # the path whose reply carries the change
    allowed: tuple[Tree, ...] = ()  # trees an install may hold without counting as activation
    template: str | None = None  # start from this prepared device folder
    config: dict[str, Any] = field(default_factory=dict)
    then_genuine: Release | None = None  # afterwards, a genuine release must still install


@dataclass
class Figures:
    attack: str
    cases: int = 0
    injected: int = 0
    activations: int = 0
    unbootable: int = 0
    unhandled: int = 0
    unusable: int = 0  # then_genuine did not install afterwards
    accepted: int = 0  # cases where the device used a connection it must refuse (MITM)
    detected: int = 0  # the device said its newest signed release document expired (freeze)
    refusals: Counter[str] = field(default_factory=Counter)  # stat actions and failed checks
    samples: list[str] = field(default_factory=list)  # the first few problems, for the report
    seconds: float = 0.0
    note: str = ""
    digest: str = ""  # of every choice the cases made (16 hex): the same seed, the same cases

    def held(self) -> bool:
        """Every target met, and the attack really happened."""
        missed = self.activations + self.unbootable + self.unhandled + self.unusable
        missed += self.accepted
        return missed == 0 and self.injected > 0

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "refusals"}
        out["refusals"] = dict(self.refusals.most_common())
        out["seconds"] = round(self.seconds, 2)
        return out


class _Watch(AgentObserver):
    def __init__(self) -> None:
        self.refusals: list[str] = []
        self.stale = False

    def on_stat(self, action: str, version_name: str) -> None:
        if action.endswith("_fail") or action in ("checksum_required",):
            self.refusals.append(action)

    def on_event(self, name: str, payload: Any) -> None:
        self.stale = self.stale or name == "releaseStale"
        if name == "updateCheckResult" and payload.get("kind") == "failed":
            self.refusals.append(f"check:{payload.get('error', '')}")


class Victim:
    """Devices run against the hostile server, one folder per case."""

    def __init__(self, scratch: Path, server: HostileServer, kit: Kit) -> None:
        self.scratch, self.server, self.kit = scratch, server, kit
        self.port = make_sync_port()
        self.identity = DeviceIdentity(str(uuid.UUID(int=16)), APP_ID, "android", BUILTIN_VERSION)

    @property
    def front(self) -> str:
        """The base URL devices talk to (and the genuine answers point at)."""
        return self.server.url

    def injected(self, case: Case) -> bool:
        """The attacker's change really reached the device (the server served it)."""
        return case.changed and self.server.served[case.where] > 0

    def config(self, **overrides: Any) -> AgentConfig:
        url = self.front
        base: dict[str, Any] = {
            "update_url": f"{url}/updates",
            "stats_url": f"{url}/stats",
            "channel_url": f"{url}/channel_self",
            "public_key": self.kit.public_pem.decode(),
            "transport_attempts": 1,
            "response_timeout_s": 2.0,
            "exchange_timeout_s": 5.0,
            "download_timeout_s": 10.0,
            "max_bundle_bytes": 4 * MiB,
        }
        return AgentConfig(**(base | overrides))

    def open(self, folder: Path, watch: AgentObserver | None = None, **config: Any) -> SyncDevice:
        return SyncDevice.open(
            folder,
            self.config(**config),
            self.identity,
            self.port,
            clock=NoWaitClock(),
            observer=watch,
            durable=False,
        )

    def prepare(
        self, name: str, *history: Release, strict: bool = False, expires: float | None = None
    ) -> None:
        """A device folder that ran `history` in turn, each confirmed, the last as CURRENT
        (the ones before as 2.<n>.0, their pool labels). `strict`: a strict-mode device, each
        answer with its signed document (counters from 100, expiring at `expires`)."""
        folder = self.scratch / f"template-{name}"
        for n, release in enumerate(history, 1):
            label = CURRENT if n == len(history) else release.version
            fields = {}
            document = None
            if strict:
                document = self.kit.document(release, label, 100 + n, expires)
                fields[RELEASE_FIELD] = document
            answer = self.kit.answer(release, self.front, label, **fields)
            self.server.script(
                {"/updates": Reply.json(answer), "/bundle": Reply(body=release.payload)}
            )
            device = self.open(folder, strict_release=strict)
            device.launch()
            device.background()
            device.notify_app_ready(device.status().boot_id)
            assert device.status().current.version == label, "the template did not install"
        self.kit.templates[name] = (folder, history[-1], document)

    def run(self, case: Case, figures: Figures) -> None:
        folder = self.scratch / "victim"
        shutil.rmtree(folder, ignore_errors=True)
        allowed = case.allowed
        if case.template is not None:
            template, release, _ = self.kit.templates[case.template]
            shutil.copytree(template, folder)
            allowed += (release.files,)
        self.server.script(case.replies)
        watch = _Watch()
        problem = None
        try:
            device = self.open(folder, watch, **case.config)
            device.launch()
            device.background()
        except Exception as exc:
            problem = f"unhandled {type(exc).__name__}: {str(exc)[:160]}"
            figures.unhandled += 1
        figures.cases += 1
        figures.injected += self.injected(case)
        figures.refusals.update(watch.refusals)
        figures.detected += watch.stale
        activated = self._activated(folder, allowed)
        if activated:
            figures.activations += 1
            problem = problem or f"activated {activated}"
        if not self._bootable(folder):
            figures.unbootable += 1
            problem = problem or "unbootable"
        if case.then_genuine is not None and not self._usable(folder, case.then_genuine):
            figures.unusable += 1
            problem = problem or "the device no longer installs a genuine release"
        if problem and len(figures.samples) < 5:
            figures.samples.append(problem)

    def _installed(self, folder: Path) -> list[tuple[str, Tree]]:
        try:
            store, state, _ = DeviceStore.open(folder, durable=False)
        except Exception:
            return []
        return [
            (info.version, read_tree(store.bundle_dir(info.id)))
            for info in state.bundles.values()
            if info.status in ("pending", "success")
        ]

    def _activated(self, folder: Path, allowed: tuple[Tree, ...]) -> str | None:
        for version, tree in self._installed(folder):
            if tree not in allowed:
                return version
        return None

    def _bootable(self, folder: Path) -> bool:
        try:
            store, state, _ = DeviceStore.open(folder, durable=False)
        except Exception:
            return False
        if not state.bootable(state.current):
            return False
        return (
            state.current == BUILTIN or (store.bundle_dir(state.current) / "index.html").is_file()
        )

    def _usable(self, folder: Path, release: Release) -> bool:
        label = "9.9.9"
        self.server.script(
            {
                "/updates": Reply.json(self.kit.answer(release, self.front, label)),
                "/bundle": Reply(body=release.payload),
            }
        )
        try:
            device = self.open(folder)
            device.launch()
            device.background()
            return device.status().current.version == label
        except Exception:
            return False

    def close(self) -> None:
        self.port.close()


# -- the attacker's byte mutations ---------------------------------------------------------


def flip_bits(rng: random.Random, data: bytes) -> bytes:
    """1 to 8 distinct bits flipped (so the bytes always change)."""
    out = bytearray(data)
    for spot in rng.sample(range(len(out) * 8), min(rng.randint(1, 8), len(out) * 8)):
        out[spot // 8] ^= 1 << (spot % 8)
    return bytes(out)


def filler(rng: random.Random, size: int) -> bytes:
    """`size` random bytes from one 64-bit draw of `rng` (a hypothesis-driven source would
    otherwise draw every byte, past its choice budget)."""
    return random.Random(rng.getrandbits(64)).randbytes(size)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def extend(rng: random.Random, data: bytes) -> bytes:
    return data + filler(rng, rng.randint(1, 4096))


MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "bit flips": flip_bits,
    "truncation": truncate,
    "extension": extend,
}


def mutate(rng: random.Random, data: bytes) -> bytes:
    return rng.choice(list(MUTATIONS.values()))(rng, data)


def _b64_mutate(rng: random.Random, text: str) -> str:
    return base64.b64encode(mutate(rng, base64.b64decode(text))).decode()


# -- the attacks ---------------------------------------------------------------------------

CaseMaker = Callable[[random.Random, Kit, str, int], Case]


@dataclass(frozen=True)
class Attack:
    name: str
    make: CaseMaker
    default_cases: int = 1000
    note: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    known_gap: bool = False  # Capgo v2 cannot defeat it (the note says why)


def _release(rng: random.Random, kit: Kit) -> Release:
    return rng.choice(kit.pool[2:])


def _offer_case(
    kit: Kit, url: str, release: Release, version: str, payload: bytes, **fields: Any
) -> dict[str, Reply]:
    return {
        "/updates": Reply.json(kit.answer(release, url, version, **fields)),
        "/bundle": Reply(body=payload),
    }


def zip_mutation(how: str) -> CaseMaker:
    def make(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
        release = _release(rng, kit)
        payload = MUTATIONS[how](rng, release.payload)
        replies = _offer_case(kit, url, release, f"5.0.{n}", payload)
        return Case(replies, payload != release.payload, where="/bundle")

    return make


def session_part_mutation(part: int) -> CaseMaker:
    """Tamper with the IV (part 0) or the RSA block (part 1) of the session key."""

    def make(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
        release = _release(rng, kit)
        parts = release.session_key.split(":")
        parts[part] = _b64_mutate(rng, parts[part])
        session_key = ":".join(parts)
        replies = _offer_case(
            kit, url, release, f"5.0.{n}", release.payload, session_key=session_key
        )
        return Case(replies, session_key != release.session_key)

    return make


def checksum_mutation(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    release = _release(rng, kit)
    raw = bytes.fromhex(release.checksum)
    checksum = mutate(rng, raw).hex()
    if checksum and rng.random() < 0.2:  # or a character that is not hex at all (if any left)
        spot = rng.randrange(len(checksum))
        checksum = checksum[:spot] + rng.choice("gz:/ ") + checksum[spot + 1 :]
    replies = _offer_case(kit, url, release, f"5.0.{n}", release.payload, checksum=checksum)
    return Case(replies, checksum != release.checksum)


def wrong_key(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """A release encrypted and signed with the attacker's key: self-consistent in every field,
    or with the genuine signed checksum, or with the genuine session key."""
    release = _release(rng, kit)
    payload, checksum, session_key = kit.encrypt(
        release, rng.choice(kit.attacker_keys), kit.work / "attacker.enc"
    )
    fields = rng.choice(
        [
            {"checksum": checksum, "session_key": session_key},
            {"session_key": session_key},  # the genuine checksum
            {"checksum": checksum},  # the genuine session key
        ]
    )
    replies = _offer_case(kit, url, release, f"5.0.{n}", payload, **fields)
    return Case(replies, payload != release.payload)


def session_key_swap(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """Genuine fields of two releases combined: bundle of one, session key (and checksum) of
    another."""
    first, second = rng.sample(kit.pool[2:], 2)
    fields = rng.choice(
        [
            {"session_key": second.session_key},
            {"session_key": second.session_key, "checksum": second.checksum},
            {"checksum": second.checksum},
        ]
    )
    return Case(_offer_case(kit, url, first, f"5.0.{n}", first.payload, **fields), True)


def _older_label(rng: random.Random) -> str:
    return f"{rng.randint(0, 2)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}"


def replay_seen(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """The device ran release 3 (as 2.3.0), then CURRENT, both confirmed; the attacker replays
    release 3's genuine signed answer, as it was or under another label."""
    release = kit.pool[3]
    label = rng.choice([release.version, _older_label(rng), f"{rng.randint(3, 9)}.{n}.0"])
    replies = _offer_case(kit, url, release, label, release.payload)
    return Case(replies, True, template="history")


def replay_unseen(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """The device runs CURRENT, confirmed; the attacker replays the genuine signed answer of
    an older release this device never ran."""
    release = _release(rng, kit)
    replies = _offer_case(kit, url, release, _older_label(rng), release.payload)
    return Case(replies, True, template="current")


def freeze(strict: bool) -> CaseMaker:
    """A newer release exists; the attacker keeps answering as if CURRENT were the latest
    (strict: to a device whose newest signed document has expired, replaying that one)."""

    def make(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
        template = "stale-strict" if strict else "current"
        stale = kit.templates[template][2] if strict else None
        no_update: dict[str, Any] = {
            "error": "no_new_version_available",
            "message": "No new version available",
            "kind": "up_to_date",
        }
        if stale is not None and rng.random() < 0.5:
            no_update[RELEASE_FIELD] = stale
        frozen = rng.choice(
            [
                json.dumps(no_update).encode(),
                kit.answer(kit.pool[0], url, CURRENT, **({RELEASE_FIELD: stale} if stale else {})),
            ]
        )
        return Case({"/updates": Reply.json(frozen)}, True, template=template)

    return make


def mix_and_match(strict: bool) -> CaseMaker:
    """A delta manifest made of the files of two genuine releases: the device runs release B
    (so B's files can be reused locally), the offer carries release A's session key (strict:
    and A's genuine signed document, newer than any the device holds)."""

    def make(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
        template = "delta-strict" if strict else "delta"
        other = kit.templates[template][1]
        release = _release(rng, kit)
        while True:
            mask = [rng.random() < 0.5 for _ in release.delta]
            if any(mask) and not all(mask):
                break
        replies: dict[str, Reply] = {}
        manifest = []
        pairs = zip(mask, release.delta, other.delta, strict=True)
        for k, (take_other, mine, theirs) in enumerate(pairs):
            name, file_hash, data = theirs if take_other else mine
            replies[f"/files/{k}"] = Reply(body=data)
            entry = {"file_name": name, "file_hash": file_hash, "download_url": f"{url}/files/{k}"}
            manifest.append(entry)
        label = f"5.0.{n}"
        fields: dict[str, Any] = {"manifest": manifest}
        if strict:
            fields[RELEASE_FIELD] = kit.document(release, label, 1000 + n)
        answer = json.loads(kit.answer(release, url, label, **fields))
        answer["url"] = f"{url}/none.zip"
        replies["/updates"] = Reply.json(json.dumps(answer).encode())
        return Case(replies, True, allowed=(release.files,), template=template)

    return make


def strict_replay(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """A strict device runs CURRENT (document counter 101); the attacker replays an older
    release's genuine answer with its genuine signed document (lower counter), as it was or
    relabelled."""
    release = _release(rng, kit)
    document = kit.document(release, release.version, rng.randint(1, 100))
    label = rng.choice([release.version, _older_label(rng), f"5.0.{n}"])
    fields = {RELEASE_FIELD: document} if rng.random() < 0.9 else {}  # or stripped
    replies = _offer_case(kit, url, release, label, release.payload, **fields)
    return Case(replies, True, template="current-strict")


def _endless(out: BinaryIO) -> None:
    chunk = b"\0" * 65536
    for _ in range(1024):  # 64 MiB at most: the server stops by itself
        out.write(chunk)


def endless_body(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    release = _release(rng, kit)
    headers = rng.choice([[], [("Content-Length", str(rng.randint(1, 4 * MiB)))]])
    replies = _offer_case(kit, url, release, f"5.0.{n}", b"")
    replies["/bundle"] = Reply(headers=headers, stream=_endless)
    return Case(replies, True, where="/bundle")


def _trickle(gap_s: float) -> Callable[[BinaryIO], None]:
    def send(out: BinaryIO) -> None:
        for _ in range(60):  # a minute at most: the server stops by itself
            out.write(b"\0")
            out.flush()
            time.sleep(gap_s)

    return send


def slow_retrieval(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """One byte per second (or every half second) of a body announced at its full length."""
    release = _release(rng, kit)
    replies = _offer_case(kit, url, release, f"5.0.{n}", b"")
    headers = [("Content-Length", str(len(release.payload)))]
    replies["/bundle"] = Reply(headers=headers, stream=_trickle(rng.choice([1.0, 0.5])))
    return Case(replies, True, where="/bundle", then_genuine=kit.pool[2])


@functools.cache
def _bomb_zip(kind: str, size_mib: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.html", "<html>bomb</html>")
        if kind == "ratio":
            archive.writestr("js/zeros.js", bytes(size_mib * MiB))
        elif kind == "total":  # entries each under the ratio floor, together over the size cap
            for k in range(size_mib):
                archive.writestr(f"js/{k}.js", bytes(MiB - 1))
        else:  # "count": more entries than the cap
            for k in range(20_001):
                archive.writestr(f"f/{k}", b"")
    data = bytearray(out.getvalue())
    if kind == "ratio" and size_mib % 2:  # and lie about the size in both headers
        local = data.find(b"PK\x03\x04", data.find(b"js/zeros.js") - 40)
        central = data.rfind(b"PK\x01\x02")
        data[local + 22 : local + 26] = (1000).to_bytes(4, "little")
        data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    return bytes(data)


def zip_bomb(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """A bomb served by a server the device trusts (no app key: only the checksum binds it)."""
    kind = rng.choice(["ratio", "ratio", "total", "count"])
    size = {"ratio": rng.randint(2, 24), "total": 520, "count": 0}[kind]
    payload = _bomb_zip(kind, size)
    answer = {"version": f"5.0.{n}", "url": f"{url}/bundle", "checksum": _sha256(payload)}
    replies = {"/updates": Reply.json(json.dumps(answer).encode()), "/bundle": Reply(body=payload)}
    return Case(
        replies, True, where="/bundle", config={"public_key": None, "max_bundle_bytes": 64 * MiB}
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def _encoding_bomb(encoding: str) -> bytes:
    zeros = bytes(BOMB_ANSWER_BYTES)
    if encoding == "br":
        return bytes(brotli.compress(zeros, quality=1))
    return gzip.compress(zeros, compresslevel=1)


def fuzz_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**70), rng.randint(-1000, 1000)])
    if kind == 3:
        return rng.uniform(-1e308, 1e308)
    if kind == 4:
        alphabet = "aZ0.:/-_ \u00e9\u2603\U0001f600\ud800\x00\x7f"
        size = rng.choice([0, 1, 8, 300, 70_000])
        expand = random.Random(rng.getrandbits(64))
        return "".join(expand.choice(alphabet) for _ in range(size))
    if kind == 5:
        return rng.choice(["1.0.1", "http://127.0.0.1:1/x", "http://[::1", "ftp://h/x", ""])
    if kind == 6:
        return [fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(_FIELDS): fuzz_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


_FIELDS = ["version", "url", "checksum", "session_key", "manifest", "error", "message", "kind"]
_FIELDS += ["file_name", "file_hash", "download_url", "breaking", "major", "link", "comment"]


def hostile_answer(rng: random.Random, kit: Kit, url: str, n: int) -> Case:
    """Fuzzed /updates answers: JSON of every type and size, broken bytes and HTTP."""
    release = kit.pool[2]
    genuine = kit.answer(release, url, "5.0.1")  # not the case number: its bytes are mutated,
    # and hypothesis needs a draw's bounds to follow from the draws before it alone
    kind = rng.randrange(9)
    reply: Reply
    if kind == 0:  # fuzzed JSON, over a genuine offer or from scratch
        base = json.loads(genuine) if rng.random() < 0.5 else {}
        for _ in range(rng.randint(1, 4)):
            base[rng.choice(_FIELDS)] = fuzz_value(rng)
        reply = Reply.json(json.dumps(base).encode())
    elif kind == 1:  # bytes of a genuine answer mutated (invalid UTF-8, broken JSON)
        reply = Reply.json(mutate(rng, genuine))
    elif kind == 2:  # deep nesting
        depth = rng.choice([100, 1000, 100_000])
        reply = Reply.json(b"[" * depth + b"]" * depth)
    elif kind == 3:  # the genuine answer under a wrong content type
        content_type = rng.choice(["text/html", "application/octet-stream", "image/png", ""])
        reply = Reply(200, [("Content-Type", content_type)], genuine)
    elif kind == 4:  # redirects: loops, other schemes, other hosts (all loopback)
        port = url.rsplit(":", 1)[1]
        target = rng.choice(
            [
                "/updates",
                f"{url}/updates",
                f"ftp://127.0.0.1:{port}/updates",
                "file:///etc/passwd",
                f"https://127.0.0.1:{port}/updates",
                f"http://127.0.0.2:{port}/updates",
                "http://[::1",
                "javascript:alert(1)",
                f"{url}/" + "a" * 70_000,
            ]
        )
        reply = Reply(rng.choice([301, 302, 303, 307, 308]), [("Location", target)])
    elif kind == 5:  # huge headers
        size = rng.choice([70_000, 1 * MiB])
        reply = Reply(raw=b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * size + b"\r\n\r\n" + genuine)
    elif kind == 6:  # a lying Content-Length
        claimed = rng.choice([len(genuine) + rng.randint(1, 10_000), max(0, len(genuine) - 5)])
        reply = Reply(
            raw=b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {claimed}\r\nConnection: close\r\n\r\n".encode()
            + genuine
        )
    elif kind == 7:  # Content-Encoding bombs
        encoding = rng.choice(["gzip", "br"])
        headers = [("Content-Type", "application/json"), ("Content-Encoding", encoding)]
        reply = Reply(200, headers, _encoding_bomb(encoding))
    else:  # garbage of random size
        reply = Reply.json(filler(rng, rng.choice([0, 1, 100, 1 * MiB])))
    replies = {"/updates": reply, "/bundle": Reply(body=release.payload)}
    return Case(replies, True, allowed=kit.trees)


STRICT = {"strict_release": True}
ATTACKS: tuple[Attack, ...] = (
    Attack("zip bit flips", zip_mutation("bit flips")),
    Attack("zip truncation", zip_mutation("truncation")),
    Attack("zip extension", zip_mutation("extension")),
    Attack("IV tampering", session_part_mutation(0)),
    Attack("RSA block tampering", session_part_mutation(1)),
    Attack("checksum tampering", checksum_mutation),
    Attack("wrong signing key", wrong_key),
    Attack("session key of another release", session_key_swap),
    Attack("replay of an answer the device ran", replay_seen),
    Attack(
        "replay of an older release never run here",
        replay_unseen,
        note="activates: Capgo v2 does not sign the version label (strict mode needed)",
        known_gap=True,
    ),
    Attack(
        "freeze",
        freeze(strict=False),
        note="nothing activates, but Capgo v2 cannot tell a frozen device (no signed freshness)",
        known_gap=True,
    ),
    Attack(
        "mix-and-match of delta files",
        mix_and_match(strict=False),
        note="activates: files of the running release are reused under another release's "
        "manifest; Capgo v2 signs each file, not the set (strict mode needed)",
        known_gap=True,
    ),
    Attack("endless body", endless_body, default_cases=100),
    Attack(
        "slow retrieval (1 byte/s)",
        slow_retrieval,
        default_cases=3,
        note="stops once below min_download_bytes_per_s over stall_window_s (30 s by default, "
        "3 s here; the download deadline stays 600 s); a genuine release installs afterwards",
        config={"download_timeout_s": 600.0, "stall_window_s": 3.0},
    ),
    Attack("zip bombs", zip_bomb, default_cases=200),
    Attack("hostile /updates answers", hostile_answer),
    Attack("strict: replay of an older release", strict_replay, config=STRICT),
    Attack("strict: mix-and-match of delta files", mix_and_match(strict=True), config=STRICT),
    Attack(
        "strict: freeze",
        freeze(strict=True),
        config=STRICT,
        note="detected: the device reports releaseStale once its newest document expired",
    ),
)


@contextmanager
def proving_ground(scratch: Path) -> Iterator[Victim]:
    """The kit, a hostile loopback server and the victim, with the prepared devices."""
    kit = build_kit(scratch / "kit")
    with hostile_server() as server:
        victim = Victim(scratch, server, kit)
        try:
            victim.prepare("current", kit.pool[0])
            victim.prepare("history", kit.pool[3], kit.pool[0])
            victim.prepare("delta", kit.pool[1])
            victim.prepare("current-strict", kit.pool[0], strict=True)
            victim.prepare("delta-strict", kit.pool[1], strict=True)
            expires = time.time() + 1.5
            victim.prepare("stale-strict", kit.pool[0], strict=True, expires=expires)
            time.sleep(max(0.0, expires + 0.1 - time.time()))  # its document has expired
            yield victim
        finally:
            victim.close()


class _Recorded:
    """A random source that feeds every draw into `digest`: numbers as they are, a choice or
    sample as its positions, bytes as their SHA-256 (the kit's keys and ciphertexts are new
    each run, so the digest names the attacker's choices, not the bytes they landed on)."""

    def __init__(self, rng: random.Random, digest: Any) -> None:
        self._rng, self._digest = rng, digest

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._rng, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if name == "choice":
                drawn: Any = list(args[0]).index(result)
            elif name == "sample":
                population = list(args[0]) if not isinstance(args[0], range) else args[0]
                drawn = [population.index(x) for x in result]
            elif isinstance(result, bytes):
                drawn = _sha256(result)
            else:
                drawn = result
            self._digest.update(f"{name}={drawn!r};".encode())
            return result

        return call


def generated(cases: int, seed: int, name: str, body: Callable[[random.Random, int], None]) -> str:
    """Call `body(rng, n)` for up to `cases` cases drawn by hypothesis: `rng` is a
    `st.randoms()` source, each of its calls a hypothesis choice, so no two cases make the same
    choices (an attack with fewer distinct cases stops once it has tried them all). The same
    `seed` and `name` draw the same cases, on any machine. Returns the digest (16 hex) of
    every choice made."""
    count = 0
    digest = hashlib.sha256()
    seed_of = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")

    @hypothesis_seed(seed_of)
    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(st.randoms(use_true_random=False))
    def draw(rng: random.Random) -> None:
        nonlocal count
        case_digest = hashlib.sha256()
        body(cast(random.Random, _Recorded(rng, case_digest)), count)
        digest.update(case_digest.digest())  # cases cut short by hypothesis leave no trace
        count += 1

    draw()
    return digest.hexdigest()[:16]


def run_attack(victim: Victim, attack: Attack, cases: int, seed: int) -> Figures:
    figures = Figures(attack.name, note=attack.note)
    started = time.monotonic()

    def one(rng: random.Random, n: int) -> None:
        case = attack.make(rng, victim.kit, victim.front, n)
        victim.run(replace(case, config=attack.config | case.config), figures)

    figures.digest = generated(cases, seed, attack.name, one)
    figures.seconds = time.monotonic() - started
    return figures
