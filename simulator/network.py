"""Network shaping and faults for simulated devices, applied at the agent's HTTP port.

`ShapedPort` implements `AsyncHttpPort` around any inner port (the fleet shares one real
aiohttp/httpx port; every device gets its own thin `ShapedPort` with its own random stream).
It really delays, throttles, cuts and corrupts bytes on their way to the agent:

- latency (+ jitter) before each response, and a downlink bandwidth cap on bodies, as waits on
  the device's simulated clock (`simulator.clock.DeviceClock`): a body of n bytes at b bytes/s
  costs exactly n / b simulated seconds, however fast or slow the machine moves the bytes;
- loss (the request fails before any byte), connection resets mid-body, silently truncated
  bodies, slow retrieval (a body that trickles), bursts of synthesized 5xx answers;
- offline periods, scheduled in simulated time from the device clock;
- a real-time safety net: when the real server does not answer within the request's timeout
  (a hung external server), the device's clock moves on by that timeout, as on a phone;
- an optional man in the middle (`Mitm`): flips bytes of bundle bodies, swaps a bundle for
  another version's bytes, or replays an older signed release in place of the current offer.

Randomness comes from the device's stream passed in (`simulator.streams`), so a seeded fleet
faults identically.
What a man in the middle learns from one device's traffic reaches the others only at the run's
synchronisation points (`Mitm.take_learned` / `Mitm.commit`), in an order that does not depend
on which device's bytes arrived first, nor on how the fleet is split into processes.
"""

from __future__ import annotations

import collections
import contextlib
import json
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Literal, Protocol

from agent.drivers.http import (
    AsyncHttpPort,
    AsyncStreamedResponse,
    ConnectFailed,
    ConnectionLost,
    HttpRequest,
    HttpResponse,
    TransportTimeout,
)
from agent.errors import TransportError

from simulator.streams import DeviceRandom

PIECE_BYTES = 16 * 1024  # bodies are re-chunked to this size so throttling is smooth


@dataclass(frozen=True)
class NetworkProfile:
    """How one device's network behaves. Probabilities are per request; times in the unit named.

    Raises:
        ValueError: a probability outside [0, 1] or a negative duration/rate.
    """

    name: str
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_kbps: float | None = None  # downlink cap, kilobits per second; None = uncapped
    loss: float = 0.0  # request fails before any byte (connection reset)
    reset: float = 0.0  # streamed body cut by a connection reset part-way
    truncate: float = 0.0  # streamed body ends early without any error
    slow: float = 0.0  # streamed body trickles at slow_bytes_per_s
    slow_bytes_per_s: int = 4096
    error_5xx: float = 0.0  # chance a request starts a burst of 503 answers
    burst_len: int = 3  # requests answered 503 per burst
    offline_fraction: float = 0.0  # share of simulated time with no network
    offline_mean_s: float = 1800.0  # mean offline period, simulated seconds

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"network profile {self.name!r}: {f.name} must be >= 0")
        for name in ("loss", "reset", "truncate", "slow", "error_5xx"):
            if getattr(self, name) > 1:
                raise ValueError(f"network profile {self.name!r}: {name} must be within [0, 1]")
        if not 0 <= self.offline_fraction < 1:
            raise ValueError(f"network profile {self.name!r}: offline_fraction must be in [0, 1)")
        if self.bandwidth_kbps == 0 or self.slow_bytes_per_s == 0 or self.offline_mean_s == 0:
            raise ValueError(f"network profile {self.name!r}: rates and periods must be > 0")


PROFILES: dict[str, NetworkProfile] = {
    p.name: p
    for p in (
        NetworkProfile("lan"),
        NetworkProfile("wifi", latency_ms=20, jitter_ms=5, bandwidth_kbps=50_000, loss=0.001),
        NetworkProfile("4g", latency_ms=60, jitter_ms=20, bandwidth_kbps=20_000, loss=0.005),
        NetworkProfile(
            "3g", latency_ms=200, jitter_ms=80, bandwidth_kbps=1_500, loss=0.02, reset=0.01
        ),
        NetworkProfile(
            "flaky",
            latency_ms=150,
            jitter_ms=150,
            bandwidth_kbps=5_000,
            loss=0.08,
            reset=0.08,
            truncate=0.05,
            slow=0.03,
            error_5xx=0.03,
            offline_fraction=0.1,
            offline_mean_s=1800,
        ),
        NetworkProfile(
            "offline-often",
            latency_ms=60,
            jitter_ms=20,
            bandwidth_kbps=20_000,
            offline_fraction=0.5,
            offline_mean_s=3 * 3600,
        ),
    )
}


def profile(name: str) -> NetworkProfile:
    """The bundled profile called `name`.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown network profile {name!r} (known: {', '.join(PROFILES)})"
        ) from None


class OfflineSchedule:
    """Alternating online/offline periods (exponential lengths) in simulated time."""

    __slots__ = ("_mean_off", "_mean_on", "_offline", "_rng", "_until")

    def __init__(self, fraction: float, mean_off_s: float, rng: DeviceRandom, start: float):
        self._rng = rng
        self._mean_off = mean_off_s
        self._mean_on = mean_off_s * (1 - fraction) / fraction
        self._offline = rng.random() < fraction
        mean = self._mean_off if self._offline else self._mean_on
        self._until = start + rng.expovariate(1 / mean)

    def offline(self, now: float) -> bool:
        while now >= self._until:
            self._offline = not self._offline
            mean = self._mean_off if self._offline else self._mean_on
            self._until += self._rng.expovariate(1 / mean)
        return self._offline


MitmMode = Literal["flip", "swap", "replay"]
Stamp = tuple[float, int]  # (simulated time, device index): who learned it first
Learned = dict[tuple[str, str], tuple[Stamp, object]]  # (what, key) -> (stamp, value)


def merge_learned(parts: Iterable[Mapping[tuple[str, str], tuple[Stamp, object]]]) -> Learned:
    """The earliest record of each piece of knowledge over several shards."""
    merged: Learned = {}
    for part in parts:
        for key, (stamp, value) in part.items():
            if key not in merged or stamp < merged[key][0]:
                merged[key] = (stamp, value)
    return merged


@dataclass
class Mitm:
    """A man in the middle shared by the devices behind it (it remembers what it saw).

    - `flip`: flips bits in streamed bodies (bundles, delta files);
    - `swap`: serves the bytes of another version's bundle it saw earlier for a bundle URL;
    - `replay`: answers /updates with the first (older) signed offer it saw instead of a newer one.
    `rate` is the chance each eligible response is tampered. `tampered` counts what it did.
    What it sees goes to `learned` first and is known (`offers`, `url_versions`, `bundles`)
    from the next synchronisation point on (`commit`).
    """

    mode: MitmMode
    rate: float = 1.0
    max_recorded_bytes: int = 64 * 1024 * 1024
    offers: dict[str, dict[str, object]] = field(default_factory=dict)  # version -> offer
    url_versions: dict[str, str] = field(default_factory=dict)  # bundle url (no query) -> version
    bundles: dict[str, bytes] = field(default_factory=dict)  # version -> bundle bytes seen
    learned: Learned = field(default_factory=dict)  # seen since the last synchronisation point
    tampered: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.mode not in ("flip", "swap", "replay"):
            raise ValueError(f"unknown MITM mode {self.mode!r} (known: flip, swap, replay)")
        if not 0 <= self.rate <= 1:
            raise ValueError("MITM rate must be within [0, 1]")

    def learn(self, what: str, key: str, value: object, stamp: Stamp) -> None:
        """Note something seen in traffic; the earliest sighting wins."""
        known = self.learned.get((what, key))
        if known is None or stamp < known[0]:
            self.learned[(what, key)] = (stamp, value)

    def take_learned(self) -> Learned:
        learned, self.learned = self.learned, {}
        return learned

    def commit(self, learned: Learned) -> None:
        """Know what was learned (every shard's, merged), in order of first sighting."""
        for (what, key), (_, value) in sorted(learned.items(), key=lambda kv: (kv[1][0], kv[0])):
            known: dict[str, object] = getattr(self, what)
            known.setdefault(key, value)

    def rewrite_offer(self, request: bytes, body: bytes, rng: DeviceRandom, stamp: Stamp) -> bytes:
        """Record an /updates offer; in replay mode, maybe answer the oldest known offer
        instead (of an offer or of "up to date") to a device not running that version."""
        answer = _json_object(body)
        if isinstance(answer.get("url"), str):
            version = str(answer.get("version"))
            self.learn("offers", version, answer, stamp)
            self.learn("url_versions", _strip_query(str(answer["url"])), version, stamp)
        if self.mode != "replay" or not self.offers or rng.random() >= self.rate:
            return body
        old = next(iter(self.offers.values()))
        running = _json_object(request).get("version_name")
        if old.get("version") in (running, answer.get("version")):
            return body
        self.tampered["replay"] += 1
        return json.dumps(old).encode()

    def decoy_for(self, url: str) -> bytes | None:
        """In swap mode: another version's recorded bundle bytes for this bundle URL."""
        version = self.url_versions.get(_strip_query(url))
        if self.mode != "swap" or version is None:
            return None
        return next((b for v, b in self.bundles.items() if v != version), None)

    def remember(self, version: str, bundle: bytes, stamp: Stamp) -> None:
        """Note the first complete bundle body seen for `version` (swap mode's decoys)."""
        if len(bundle) <= self.max_recorded_bytes:
            self.learn("bundles", version, bundle, stamp)

    def wants_recording(self, url: str) -> str | None:
        version = self.url_versions.get(_strip_query(url))
        if self.mode == "swap" and version is not None and version not in self.bundles:
            return version
        return None


class SimClock(Protocol):
    """A device's simulated clock as the network sees it (`simulator.clock.DeviceClock`)."""

    t: float  # simulated seconds since the run's t = 0

    async def sleep(self, seconds: float) -> None: ...

    def parks(self, seconds: float) -> bool: ...


def _json_object(raw: bytes) -> dict[str, object]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]


@dataclass
class _Response:
    status: int
    headers: Mapping[str, str]
    body: AsyncIterator[bytes]

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self.body


async def _one(body: bytes) -> AsyncIterator[bytes]:
    yield body


SERVICE_UNAVAILABLE = HttpResponse(
    503,
    {"content-type": "application/json", "retry-after": "1"},
    b'{"error":"service_unavailable","message":"simulated 5xx burst"}',
)


class ShapedPort:
    """An `AsyncHttpPort` that shapes and faults the traffic of one device.

    `inner` is usually shared by the whole fleet and owned by it: `aclose()` leaves it open.
    `clock` is the device's simulated clock: every modelled delay is a wait on it, and it
    schedules offline periods. `index` orders what this device shows a man in the middle.
    Faults injected are counted in `faults` (a Counter the fleet may share between devices).

    Raises (from `send`/`stream`):
        ConnectFailed: simulated offline period. ConnectionLost: simulated loss or reset.
        TransportError: whatever the inner port raises.
    """

    __slots__ = (
        "_burst_left",
        "_clock",
        "_index",
        "_inner",
        "_mitm",
        "_offline",
        "_rng",
        "faults",
        "profile",
    )

    def __init__(
        self,
        inner: AsyncHttpPort,
        profile: NetworkProfile,
        *,
        rng: DeviceRandom,
        clock: SimClock,
        index: int = 0,
        mitm: Mitm | None = None,
        faults: Counter[str] | None = None,
    ) -> None:
        self._inner = inner
        self.profile = profile
        self._rng = rng
        self._clock = clock
        self._index = index
        self._mitm = mitm
        self.faults: Counter[str] = Counter() if faults is None else faults
        self._burst_left = 0
        self._offline = (
            OfflineSchedule(profile.offline_fraction, profile.offline_mean_s, rng, clock.t)
            if profile.offline_fraction > 0
            else None
        )

    async def send(self, request: HttpRequest) -> HttpResponse:
        synthetic = await self._before(request)
        if synthetic is not None:
            return synthetic
        try:
            response = await self._inner.send(request)
        except TransportTimeout:
            await self._clock.sleep(request.timeout_s)  # the phone waited that long too
            raise
        rate = self._rate()
        if rate:
            await self._clock.sleep(len(response.body) / rate)
        if self._mitm is not None and response.status == 200 and _is_update_check(request):
            body = self._mitm.rewrite_offer(
                request.body or b"", response.body, self._rng, self._stamp()
            )
            if body is not response.body:
                headers = {**response.headers, "content-length": str(len(body))}
                response = HttpResponse(response.status, headers, body, response.url)
        return response

    @asynccontextmanager
    async def stream(self, request: HttpRequest) -> AsyncIterator[AsyncStreamedResponse]:
        try:
            async with self._stream(request) as response:
                yield response
        except TransportTimeout:
            await self._clock.sleep(request.timeout_s)  # the phone waited that long too
            raise

    @asynccontextmanager
    async def _stream(self, request: HttpRequest) -> AsyncIterator[AsyncStreamedResponse]:
        synthetic = await self._before(request)
        if synthetic is not None:
            yield _Response(synthetic.status, synthetic.headers, _one(synthetic.body))
            return
        mitm = self._mitm
        decoy = None
        if mitm is not None and self._rng.random() < mitm.rate:
            decoy = mitm.decoy_for(request.url)
        async with contextlib.AsyncExitStack() as held:  # the inner response: closed at the end,
            inner = await held.enter_async_context(self._inner.stream(request))  # or before a park
            if decoy is not None and inner.status in (200, 206) and mitm is not None:
                mitm.tampered["swap"] += 1
                headers = {k: v for k, v in inner.headers.items() if k != "content-range"}
                headers["content-length"] = str(len(decoy))
                yield _Response(200, headers, self._shape_body(_one(decoy), len(decoy), held))
                return
            length = int(inner.headers.get("content-length") or 0) or None
            record = mitm.wants_recording(request.url) if mitm and inner.status == 200 else None
            body = self._shape_body(inner.aiter_bytes(), length, held, record)
            yield _Response(inner.status, inner.headers, body)

    async def aclose(self) -> None:
        """Nothing to release: the inner port belongs to whoever created it."""

    def _rate(self) -> float | None:
        kbps = self.profile.bandwidth_kbps
        return kbps * 125 if kbps else None  # kilobits/s -> bytes/s

    async def _before(self, request: HttpRequest) -> HttpResponse | None:
        """Offline, loss, latency and 5xx bursts, decided before the inner port is used."""
        p, rng = self.profile, self._rng
        if self._offline is not None and self._offline.offline(self._clock.t):
            self.faults["offline"] += 1
            raise ConnectFailed(f"{request.url}: network unreachable (simulated offline)")
        if p.latency_ms or p.jitter_ms:
            await self._clock.sleep(max(0.0, rng.gauss(p.latency_ms, p.jitter_ms)) / 1000)
        if p.loss and rng.random() < p.loss:
            self.faults["loss"] += 1
            raise ConnectionLost(f"{request.url}: connection reset (simulated loss)")
        if not self._burst_left and p.error_5xx and rng.random() < p.error_5xx:
            self._burst_left = p.burst_len
        if self._burst_left:
            self._burst_left -= 1
            self.faults["5xx"] += 1
            return SERVICE_UNAVAILABLE
        return None

    def _body_faults(self, length: int | None) -> tuple[float | None, int | None, str | None]:
        """(rate in bytes/s, cut position, cut kind) for one streamed body."""
        p, rng = self.profile, self._rng
        rate = self._rate()
        if p.slow and rng.random() < p.slow:
            self.faults["slow"] += 1
            rate = float(p.slow_bytes_per_s)
        roll = rng.random()
        kind = "reset" if roll < p.reset else "truncate" if roll < p.reset + p.truncate else None
        if kind is None:
            return rate, None, None
        self.faults[kind] += 1
        return rate, int((length or PIECE_BYTES * 4) * rng.uniform(0.05, 0.95)), kind

    def _flips(self, length: int | None) -> set[int]:
        mitm = self._mitm
        if mitm is None or mitm.mode != "flip" or self._rng.random() >= mitm.rate:
            return set()
        mitm.tampered["flip"] += 1
        return {self._rng.randrange(length or 4096) for _ in range(3)}

    async def _shape_body(
        self,
        source: AsyncIterator[bytes],
        length: int | None,
        held: contextlib.AsyncExitStack,
        record: str | None = None,
    ) -> AsyncIterator[bytes]:
        """The body, paced on the device's clock. Before a piece's pacing would park the
        device until a later step, the rest of the body is read at once and `held` (the inner
        response) is closed: a device never waits on the simulated clock holding one of the
        fleet's connections, which the devices still working in the step may need (a pool
        wait would then last until a real-time timeout). What was read ahead, and an error
        met while reading it, reach the agent at their simulated times as before."""
        rate, cut, kind = self._body_faults(length)
        pieces = self._pieces(source, cut, kind, self._flips(length))
        recorded = bytearray() if record is not None else None
        ahead: collections.deque[bytes] | None = None  # the rest of the body, once read ahead
        failure: TransportError | None = None
        try:
            while True:
                if ahead is None:
                    piece = await anext(pieces, None)
                else:
                    piece = ahead.popleft() if ahead else None
                if piece is None:
                    break
                if rate:
                    delay = len(piece) / rate
                    if ahead is None and self._clock.parks(delay):
                        ahead, failure = await _read_rest(pieces)
                        await held.aclose()
                    await self._clock.sleep(delay)
                if recorded is not None:
                    recorded += piece
                yield piece
        finally:
            await pieces.aclose()
        if failure is not None:
            raise failure
        if record is not None and recorded is not None and cut is None and self._mitm is not None:
            self._mitm.remember(record, bytes(recorded), self._stamp())  # when the body ended

    async def _pieces(
        self, source: AsyncIterator[bytes], cut: int | None, kind: str | None, flips: set[int]
    ) -> AsyncGenerator[bytes, None]:
        """The body re-chunked to `PIECE_BYTES`, with its flips and its cut (a reset raises)."""
        sent = 0
        async for chunk in source:
            for start in range(0, len(chunk), PIECE_BYTES):
                piece = chunk[start : start + PIECE_BYTES]
                if cut is not None and sent + len(piece) >= cut:
                    piece = piece[: cut - sent]
                if flips:
                    piece = _flip(piece, sent, flips)
                sent += len(piece)
                if piece:
                    yield piece
                if cut is not None and sent >= cut:
                    if kind == "reset":
                        raise ConnectionLost("connection reset mid-body (simulated)")
                    return

    def _stamp(self) -> Stamp:
        return (self._clock.t, self._index)


async def _read_rest(
    pieces: AsyncIterator[bytes],
) -> tuple[collections.deque[bytes], TransportError | None]:
    """What is left of a body, and the transport error that ended it early, if one did."""
    rest: collections.deque[bytes] = collections.deque()
    try:
        async for piece in pieces:
            rest.append(piece)
    except TransportError as exc:
        return rest, exc
    return rest, None


def _flip(piece: bytes, offset: int, positions: set[int]) -> bytes:
    hits = [p - offset for p in positions if offset <= p < offset + len(piece)]
    if not hits:
        return piece
    out = bytearray(piece)
    for i in hits:
        out[i] ^= 0x01 << (i % 8)
    return bytes(out)


def _is_update_check(request: HttpRequest) -> bool:
    return request.method == "POST" and _strip_query(request.url).endswith("/updates")
