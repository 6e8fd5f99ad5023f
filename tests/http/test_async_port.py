"""The asyncio HTTP port, every backend, against a real loopback server."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest
from loopback_http import BAD_URLS, BIG, BOMB_BYTES, BUNDLE, Loopback, bomb

from agent.drivers.backends import make_async_port
from agent.drivers.http import (
    AsyncHttpPort,
    ConnectFailed,
    ConnectionLost,
    DeadlinePassed,
    HttpRequest,
    InsecureRedirect,
    InvalidUrl,
    ResponseTooLarge,
    TlsVerifyFailed,
    TransportTimeout,
)

pytestmark = pytest.mark.anyio
BACKENDS = ["streams", "aiohttp", "httpx"]


@pytest.fixture(params=BACKENDS)
async def port(request: pytest.FixtureRequest) -> AsyncIterator[AsyncHttpPort]:
    opened = make_async_port(request.param, max_connections=2)
    yield opened
    await opened.aclose()


async def _read(port: AsyncHttpPort, request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
    async with port.stream(request) as response:
        chunks = [chunk async for chunk in response.aiter_bytes()]
        return response.status, dict(response.headers), b"".join(chunks)


async def test_send_delivers_method_headers_body(port: AsyncHttpPort, loopback: Loopback) -> None:
    request = HttpRequest("POST", f"{loopback.url}/echo", {"X-Device": "d1"}, b'{"a":1}')
    response = await port.send(request)
    seen = json.loads(response.body)
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert (seen["method"], seen["body"], seen["headers"]["x-device"]) == ("POST", '{"a":1}', "d1")


async def test_error_statuses_are_answers_not_exceptions(
    port: AsyncHttpPort, loopback: Loopback
) -> None:
    for status in (429, 503, 404):
        response = await port.send(HttpRequest("POST", f"{loopback.url}/status/{status}"))
        assert response.status == status
    assert response.headers["retry-after"] == "7"


async def test_send_decodes_gzip(port: AsyncHttpPort, loopback: Loopback) -> None:
    response = await port.send(HttpRequest("GET", f"{loopback.url}/gzip"))
    assert response.body == b'{"kind":"up_to_date"}'


async def test_redirect_is_followed(port: AsyncHttpPort, loopback: Loopback) -> None:
    response = await port.send(HttpRequest("GET", f"{loopback.url}/redirect"))
    assert json.loads(response.body)["path"] == "/echo?redirected=1"


async def test_stream_resumes_with_range(port: AsyncHttpPort, loopback: Loopback) -> None:
    status, headers, whole = await _read(port, HttpRequest("GET", f"{loopback.url}/bundle"))
    assert (status, whole) == (200, BUNDLE)
    offset = 100_003
    request = HttpRequest("GET", f"{loopback.url}/bundle", {"Range": f"bytes={offset}-"})
    status, headers, tail = await _read(port, request)
    assert status == 206
    assert headers["content-range"] == f"bytes {offset}-{len(BUNDLE) - 1}/{len(BUNDLE)}"
    assert whole[:offset] + tail == BUNDLE


async def test_stream_asks_for_the_raw_entity(port: AsyncHttpPort, loopback: Loopback) -> None:
    _, _, body = await _read(port, HttpRequest("GET", f"{loopback.url}/echo"))
    assert json.loads(body)["headers"]["accept-encoding"] == "identity"


async def test_send_times_out(port: AsyncHttpPort, loopback: Loopback) -> None:
    with pytest.raises(TransportTimeout):
        await port.send(HttpRequest("GET", f"{loopback.url}/slow?s=2", timeout_s=0.3))


async def test_timeouts_give_their_connection_back(port: AsyncHttpPort, loopback: Loopback) -> None:
    for _ in range(3):  # more than the pool's 2 connections
        with pytest.raises(TransportTimeout):
            await port.send(HttpRequest("GET", f"{loopback.url}/slow?s=1", timeout_s=0.1))
    assert (await port.send(HttpRequest("GET", f"{loopback.url}/echo", timeout_s=5))).status == 200


async def test_stream_times_out_when_the_body_stalls(
    port: AsyncHttpPort, loopback: Loopback
) -> None:
    with pytest.raises(TransportTimeout):
        await _read(port, HttpRequest("GET", f"{loopback.url}/stall", timeout_s=0.3))


async def test_truncated_body_is_a_lost_connection(port: AsyncHttpPort, loopback: Loopback) -> None:
    with pytest.raises(ConnectionLost):
        await port.send(HttpRequest("GET", f"{loopback.url}/truncated"))
    with pytest.raises(ConnectionLost):
        await _read(port, HttpRequest("GET", f"{loopback.url}/truncated"))


async def test_connection_refused(port: AsyncHttpPort, refused_url: str) -> None:
    with pytest.raises(ConnectFailed):
        await port.send(HttpRequest("POST", refused_url, body=b"{}"))


async def test_body_cap(port: AsyncHttpPort, loopback: Loopback) -> None:
    assert len((await port.send(HttpRequest("GET", f"{loopback.url}/big"))).body) == len(BIG)
    with pytest.raises(ResponseTooLarge):
        await port.send(HttpRequest("GET", f"{loopback.url}/big", max_body_bytes=1000))


@pytest.mark.parametrize("url", BAD_URLS)
async def test_unusable_urls_are_invalid_never_a_library_error(
    port: AsyncHttpPort, url: str
) -> None:
    with pytest.raises(InvalidUrl):
        await port.send(HttpRequest("GET", url))
    with pytest.raises(InvalidUrl):
        async with port.stream(HttpRequest("GET", url)):
            pass


@pytest.mark.parametrize("where", ["body", "head"])
async def test_the_deadline_bounds_a_trickling_exchange(
    port: AsyncHttpPort, loopback: Loopback, where: str
) -> None:
    """One byte every 0.3 s never trips the 5 s inactivity timeout; the deadline stops it."""
    request = HttpRequest(
        "GET", f"{loopback.url}/trickle/{where}", timeout_s=5.0, deadline=time.monotonic() + 1.0
    )
    with pytest.raises(DeadlinePassed):
        await port.send(request)
    request = replace(request, deadline=time.monotonic() + 1.0)
    with pytest.raises(DeadlinePassed):
        await _read(port, request)


@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_a_compressed_bomb_stops_at_the_cap_while_decompressing(
    port: AsyncHttpPort, loopback: Loopback, encoding: str
) -> None:
    bomb(encoding)  # built before measuring
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLarge):
            await port.send(HttpRequest("GET", f"{loopback.url}/bomb/{encoding}"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < BOMB_BYTES // 2  # the 4 MiB cap, not the 64 MiB the bomb expands to


@pytest.mark.parametrize("backend", BACKENDS)
async def test_https_to_http_redirect_is_refused(
    backend: str, tls: tuple[Loopback, Path], loopback: Loopback
) -> None:
    server, ca_path = tls
    port = make_async_port(backend, verify=str(ca_path))  # type: ignore[arg-type]
    downgrade = f"{server.url}/redirect_to?url={quote(loopback.url + '/echo')}"
    try:
        with pytest.raises(InsecureRedirect, match="refused a redirect from https"):
            await port.send(HttpRequest("POST", downgrade, body=b"device info"))
        same_scheme = f"{server.url}/redirect_to?url={quote(server.url + '/echo')}"
        assert (await port.send(HttpRequest("GET", same_scheme))).status == 200
    finally:
        await port.aclose()


async def test_not_http_url(port: AsyncHttpPort) -> None:
    with pytest.raises(InvalidUrl):
        await port.send(HttpRequest("GET", "ftp://127.0.0.1/bundle.zip"))


async def test_a_kept_alive_connection_serves_the_next_requests(
    port: AsyncHttpPort, loopback: Loopback
) -> None:
    before = loopback.server.connections
    for n in range(5):
        request = HttpRequest("POST", f"{loopback.url}/echo", body=b"%d" % n)
        assert json.loads((await port.send(request)).body)["body"] == str(n)
    assert loopback.server.connections - before == 1


async def test_pool_bounds_concurrent_connections(port: AsyncHttpPort, loopback: Loopback) -> None:
    loopback.server.peak = 0
    request = HttpRequest("GET", f"{loopback.url}/hold?s=0.1")
    answers = await asyncio.gather(*(port.send(request) for _ in range(8)))
    assert [answer.body for answer in answers] == [b"held"] * 8
    assert loopback.server.peak == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_tls_verify_default_ca_file_and_off(backend: str, tls: tuple[Loopback, Path]) -> None:
    server, ca_path = tls
    request = HttpRequest("GET", f"{server.url}/echo")
    strict = make_async_port(backend)  # type: ignore[arg-type]
    with pytest.raises(TlsVerifyFailed):
        await strict.send(request)
    await strict.aclose()
    for verify in (str(ca_path), False):
        port = make_async_port(backend, verify=verify)  # type: ignore[arg-type]
        assert (await port.send(request)).status == 200
        await port.aclose()
    wrong_host = HttpRequest("GET", request.url.replace("127.0.0.1", "localhost"))
    port = make_async_port(backend, verify=str(ca_path))  # type: ignore[arg-type]
    with pytest.raises(TlsVerifyFailed):  # the certificate names 127.0.0.1 only
        await port.send(wrong_host)
    await port.aclose()
