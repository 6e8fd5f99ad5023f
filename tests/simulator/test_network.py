"""The network wrappers really delay, throttle, cut and corrupt bytes (real loopback HTTP).

Delays are modelled in simulated time: each case runs as a device on a `VirtualTime`, and the
device's clock must show exactly what the profile says (bytes / bandwidth + latency), however
long the real exchange took on this machine.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TypeVar

import pytest
from sim_peer import Peer, blob, loopback_peer

from agent.drivers.backends import make_async_port
from agent.drivers.http import AsyncHttpPort, HttpRequest
from agent.errors import TransportError
from simulator.clock import DeviceClock, VirtualTime
from simulator.network import Mitm, NetworkProfile, ShapedPort, profile

T = TypeVar("T")
CLOCK: ContextVar[DeviceClock] = ContextVar("CLOCK")  # the device clock of the running case


def run(test: Callable[[Peer, AsyncHttpPort], Awaitable[T]], window_s: float = 1.0) -> T:
    """Run `test` as the one device of a virtual-time run (its clock in `CLOCK`)."""

    async def main() -> T:
        async with loopback_peer() as peer:
            inner = make_async_port("aiohttp", max_connections=4)
            vt = VirtualTime(window_s)
            CLOCK.set(vt.clock())
            try:
                _, result = await asyncio.gather(vt.run(), vt.participate(test(peer, inner)))
                return result
            finally:
                await inner.aclose()

    return asyncio.run(main())


def shaped(
    inner: AsyncHttpPort, seed: int = 1, mitm: Mitm | None = None, **kw: float
) -> ShapedPort:
    return ShapedPort(
        inner, NetworkProfile("test", **kw), rng=random.Random(seed), clock=CLOCK.get(), mitm=mitm
    )


def learn(mitm: Mitm) -> None:
    """A synchronisation point of the run: the man in the middle knows what it saw."""
    mitm.commit(mitm.take_learned())


async def fetch(port: ShapedPort, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with port.stream(HttpRequest("GET", url)) as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
        return response.status, body, dict(response.headers)


def test_unshaped_profile_passes_bytes_through() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> None:
        status, body, _ = await fetch(shaped(inner), f"{peer.url}/blob/100000")
        assert (status, body) == (200, blob(100_000))

    run(case)


@pytest.mark.parametrize("window_s", [0.01, 1.0, 3600.0])
def test_latency_delays_every_request_in_simulated_time(window_s: float) -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> float:
        port = shaped(inner, latency_ms=150)
        for _ in range(3):
            response = await port.send(HttpRequest("POST", f"{peer.url}/updates", body=b"{}"))
            assert response.status == 200
        return CLOCK.get().t

    assert run(case, window_s) == pytest.approx(0.45, abs=1e-9)  # float sums, not lag


@pytest.mark.parametrize("window_s", [0.01, 1.0, 3600.0])
def test_modelled_download_time_is_bytes_over_bandwidth_plus_latency(window_s: float) -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> float:
        port = shaped(inner, bandwidth_kbps=800, latency_ms=60)  # 100 000 bytes/s
        _, body, _ = await fetch(port, f"{peer.url}/blob/300000")
        assert body == blob(300_000)
        return CLOCK.get().t

    assert run(case, window_s) == pytest.approx(0.06 + 3.0, abs=1e-9)


def test_slow_retrieval_trickles() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> float:
        port = shaped(inner, slow=1.0, slow_bytes_per_s=40_000)
        _, body, _ = await fetch(port, f"{peer.url}/blob/30000")
        assert body == blob(30_000)
        assert port.faults["slow"] == 1
        return CLOCK.get().t

    assert run(case) == pytest.approx(0.75, abs=1e-9)


def test_a_real_timeout_costs_the_device_its_modelled_timeout() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> float:
        port = shaped(inner, latency_ms=50)
        with pytest.raises(TransportError, match="no answer"):
            await port.send(HttpRequest("GET", f"{peer.url}/hang", timeout_s=0.2))
        return CLOCK.get().t

    assert run(case) == pytest.approx(0.05 + 0.2, abs=1e-9)


def test_truncation_ends_the_body_early_without_error() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> None:
        port = shaped(inner, truncate=1.0)
        status, body, headers = await fetch(port, f"{peer.url}/blob/200000")
        assert status == 200 and headers["content-length"] == "200000"
        assert 0 < len(body) < 200_000
        assert body == blob(200_000)[: len(body)]

    run(case)


@pytest.mark.parametrize("bandwidth_kbps", [None, 800])  # 800: read ahead before parking
def test_reset_cuts_the_body_with_a_transport_error(bandwidth_kbps: float | None) -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> tuple[int, float]:
        port = shaped(inner, reset=1.0, bandwidth_kbps=bandwidth_kbps)  # type: ignore[arg-type]
        received = b""
        with pytest.raises(TransportError, match="reset"):
            async with port.stream(HttpRequest("GET", f"{peer.url}/blob/200000")) as response:
                async for chunk in response.aiter_bytes():
                    received += chunk
        assert 0 < len(received) < 200_000
        assert received == blob(200_000)[: len(received)]
        return len(received), CLOCK.get().t

    received, t = run(case, window_s=0.01)
    # the reset reaches the device after the bytes before it, at their simulated time
    assert t == (pytest.approx(received / 100_000, abs=1e-9) if bandwidth_kbps else 0.0)


def test_loss_fails_before_the_server_sees_anything() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> None:
        port = shaped(inner, loss=1.0)
        with pytest.raises(TransportError):
            await port.send(HttpRequest("POST", f"{peer.url}/updates", body=b"{}"))
        assert peer.hits == [] and port.faults["loss"] == 1

    run(case)


def test_5xx_burst_answers_503_for_burst_len_requests() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> list[int]:
        port = ShapedPort(
            inner,
            NetworkProfile("burst", error_5xx=0.5, burst_len=4),
            rng=random.Random(3),
            clock=CLOCK.get(),
        )
        statuses = []
        for _ in range(30):
            r = await port.send(HttpRequest("POST", f"{peer.url}/updates", body=b"{}"))
            statuses.append(r.status)
        assert len(peer.hits) == statuses.count(200)
        return statuses

    statuses = run(case)
    assert 503 in statuses and 200 in statuses
    runs = "".join("x" if s == 503 else "." for s in statuses).split(".")
    assert all(len(r) % 4 == 0 for r in runs[:-1])  # whole bursts (the last may be cut)


def test_offline_periods_follow_simulated_time_and_are_seeded() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> str:
        clock = CLOCK.get()
        port = ShapedPort(inner, profile("offline-often"), rng=random.Random(7), clock=clock)
        pattern = ""
        for hour in range(48):
            await clock.sleep_until(hour * 3600.0)
            try:
                await port.send(HttpRequest("POST", f"{peer.url}/updates", body=b"{}"))
                pattern += "."
            except TransportError:
                pattern += "x"
        assert len(peer.hits) == pattern.count(".")
        return pattern

    first, second = run(case), run(case)
    assert first == second
    assert "x" in first and "." in first


def test_mitm_flip_changes_a_few_bits_only() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> None:
        mitm = Mitm("flip")
        _, body, _ = await fetch(shaped(inner, mitm=mitm), f"{peer.url}/blob/50000")
        original = blob(50_000)
        assert len(body) == len(original)
        diffs = [i for i in range(len(body)) if body[i] != original[i]]
        assert 1 <= len(diffs) <= 3 and mitm.tampered["flip"] == 1

    run(case)


def test_mitm_swap_serves_another_versions_bundle() -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> None:
        mitm = Mitm("swap")
        port = shaped(inner, mitm=mitm)
        check = HttpRequest("POST", f"{peer.url}/updates", body=b"{}")
        peer.offer = {"version": "1.0.1", "url": f"{peer.url}/blob/3000?device_id=a"}
        await port.send(check)
        learn(mitm)
        _, v1, _ = await fetch(port, f"{peer.url}/blob/3000?device_id=a")
        peer.offer = {"version": "1.0.2", "url": f"{peer.url}/blob/5000?device_id=b"}
        await port.send(check)
        _, unchanged, _ = await fetch(port, f"{peer.url}/blob/5000?device_id=b")
        assert unchanged == blob(5000)  # what it saw is not known before the next sync point
        learn(mitm)
        _, v2, headers = await fetch(port, f"{peer.url}/blob/5000?device_id=b")
        assert v1 == blob(3000) and v2 == v1 and headers["content-length"] == "3000"
        assert mitm.tampered["swap"] == 1

    run(case)


@pytest.mark.parametrize("window_s", [0.01, 3600.0])  # 0.01: the body is read ahead
def test_mitm_records_a_bundle_when_its_paced_body_ends(window_s: float) -> None:
    async def case(peer: Peer, inner: AsyncHttpPort) -> float:
        mitm = Mitm("swap")
        port = shaped(inner, mitm=mitm, bandwidth_kbps=800)  # 100 000 bytes/s
        peer.offer = {"version": "1.0.1", "url": f"{peer.url}/blob/300000"}
        await port.send(HttpRequest("POST", f"{peer.url}/updates", body=b"{}"))
        learn(mitm)
        await fetch(port, f"{peer.url}/blob/300000")
        (stamp, bundle) = mitm.learned[("bundles", "1.0.1")]
        assert bundle == blob(300_000)
        return stamp[0]

    # the offer's few bytes, then 300 000 bytes at 100 000 bytes/s: never when it was read
    assert run(case, window_s) == pytest.approx(3.0, abs=1e-3)


def test_mitm_replay_answers_the_older_signed_offer() -> None:
    def check(url: str, running: str) -> HttpRequest:
        return HttpRequest(
            "POST", f"{url}/updates", body=json.dumps({"version_name": running}).encode()
        )

    async def case(peer: Peer, inner: AsyncHttpPort) -> None:
        mitm = Mitm("replay")
        port = shaped(inner, mitm=mitm)
        old = {"version": "1.0.1", "url": f"{peer.url}/blob/1", "checksum": "aa"}
        peer.offer = old
        assert json.loads((await port.send(check(peer.url, "builtin"))).body) == old
        learn(mitm)
        peer.offer = {"version": "1.0.2", "url": f"{peer.url}/blob/2", "checksum": "bb"}
        assert json.loads((await port.send(check(peer.url, "1.0.0"))).body) == old
        peer.offer = {"error": "no_new_version_available", "kind": "up_to_date"}
        assert json.loads((await port.send(check(peer.url, "1.0.2"))).body) == old  # downgrade
        assert json.loads((await port.send(check(peer.url, "1.0.1"))).body) == peer.offer
        assert mitm.tampered["replay"] == 2

    run(case)


@pytest.mark.parametrize(
    "bad",
    [{"loss": 1.5}, {"latency_ms": -1}, {"offline_fraction": 1.0}, {"bandwidth_kbps": 0}],
)
def test_profile_validation_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="network profile"):
        NetworkProfile("bad", **bad)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="wifi"):
        profile("5g")


@pytest.mark.parametrize("backend", ["streams", "aiohttp", "httpx"])
def test_a_body_paced_past_its_step_gives_the_connection_back_before_the_device_parks(
    backend: str,
) -> None:
    """Two devices share one connection in one step; the first one's body is paced past the
    step's end. Had it kept the connection while it waited on its clock, the second device's
    check would wait for it until its real-time timeout (the step cannot end while it waits)."""

    async def main() -> tuple[float, bytes, int]:
        async with loopback_peer() as peer:
            inner = make_async_port(backend, max_connections=1)  # type: ignore[arg-type]
            vt = VirtualTime(window_s=1.0)
            slow_clock, quick_clock = vt.clock(), vt.clock()
            slow = ShapedPort(
                inner, NetworkProfile("slow", bandwidth_kbps=80), rng=random.Random(1),
                clock=slow_clock,
            )  # fmt: skip
            quick = ShapedPort(
                inner, NetworkProfile("lan"), rng=random.Random(2), clock=quick_clock
            )
            answered = asyncio.Event()

            async def download() -> bytes:
                async with slow.stream(HttpRequest("GET", f"{peer.url}/blob/1000000")) as response:
                    answered.set()  # the connection is in use from here on
                    return b"".join([chunk async for chunk in response.aiter_bytes()])

            async def check() -> int:
                await answered.wait()
                request = HttpRequest("POST", f"{peer.url}/updates", body=b"{}", timeout_s=2.0)
                return (await quick.send(request)).status

            try:
                _, body, status = await asyncio.gather(
                    vt.run(), vt.participate(download()), vt.participate(check())
                )
            finally:
                await inner.aclose()
            return slow_clock.t, body, status

    t, body, status = asyncio.run(main())
    assert status == 200  # not a timeout
    assert body == blob(1_000_000)  # larger than what a backend buffers by itself
    assert t == pytest.approx(100.0, abs=1e-9)  # 1 000 000 bytes at 10 000 bytes/s, exactly
