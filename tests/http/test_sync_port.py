"""The blocking HTTP port against a real loopback server.

In this process: the httpx backend. `test_gevent_backend.py` runs this same module in a
gevent-patched subprocess with OTASIM_HTTP_UNDER_GEVENT=1, where the backend is
geventhttpclient (Locust's client) and the server runs on greenlets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from loopback_http import BIG, BUNDLE, Loopback

from agent.drivers.backends import SyncBackend, make_sync_port
from agent.drivers.http import (
    ConnectFailed,
    ConnectionLost,
    HttpRequest,
    InvalidUrl,
    ResponseTooLarge,
    SyncHttpPort,
    TlsVerifyFailed,
    TransportTimeout,
)

UNDER_GEVENT = os.environ.get("OTASIM_HTTP_UNDER_GEVENT") == "1"
BACKEND: SyncBackend = "geventhttpclient" if UNDER_GEVENT else "httpx"


@pytest.fixture
def port() -> Iterator[SyncHttpPort]:
    opened = make_sync_port(BACKEND, max_connections=2)
    yield opened
    opened.close()


def _read(port: SyncHttpPort, request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
    with port.stream(request) as response:
        return response.status, dict(response.headers), b"".join(response.iter_bytes())


def test_send_delivers_method_headers_body(port: SyncHttpPort, loopback: Loopback) -> None:
    request = HttpRequest("POST", f"{loopback.url}/echo", {"X-Device": "d1"}, b'{"a":1}')
    response = port.send(request)
    seen = json.loads(response.body)
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert (seen["method"], seen["body"], seen["headers"]["x-device"]) == ("POST", '{"a":1}', "d1")


def test_error_statuses_are_answers_not_exceptions(port: SyncHttpPort, loopback: Loopback) -> None:
    for status in (429, 503, 404):
        response = port.send(HttpRequest("POST", f"{loopback.url}/status/{status}"))
        assert response.status == status
    assert response.headers["retry-after"] == "7"


def test_redirect_is_followed(port: SyncHttpPort, loopback: Loopback) -> None:
    response = port.send(HttpRequest("GET", f"{loopback.url}/redirect"))
    assert json.loads(response.body)["path"] == "/echo?redirected=1"


def test_stream_resumes_with_range(port: SyncHttpPort, loopback: Loopback) -> None:
    status, _, whole = _read(port, HttpRequest("GET", f"{loopback.url}/bundle"))
    assert (status, whole) == (200, BUNDLE)
    offset = 100_003
    request = HttpRequest("GET", f"{loopback.url}/bundle", {"Range": f"bytes={offset}-"})
    status, headers, tail = _read(port, request)
    assert status == 206
    assert headers["content-range"] == f"bytes {offset}-{len(BUNDLE) - 1}/{len(BUNDLE)}"
    assert whole[:offset] + tail == BUNDLE


def test_stream_asks_for_the_raw_entity(port: SyncHttpPort, loopback: Loopback) -> None:
    _, _, body = _read(port, HttpRequest("GET", f"{loopback.url}/echo"))
    assert json.loads(body)["headers"]["accept-encoding"] == "identity"


def test_send_times_out(port: SyncHttpPort, loopback: Loopback) -> None:
    with pytest.raises(TransportTimeout):
        port.send(HttpRequest("GET", f"{loopback.url}/slow?s=2", timeout_s=0.3))


def test_timeouts_give_their_connection_back(port: SyncHttpPort, loopback: Loopback) -> None:
    for _ in range(3):  # more than the pool's 2 connections
        with pytest.raises(TransportTimeout):
            port.send(HttpRequest("GET", f"{loopback.url}/slow?s=1", timeout_s=0.1))
    assert port.send(HttpRequest("GET", f"{loopback.url}/echo", timeout_s=5)).status == 200


def test_stream_times_out_when_the_body_stalls(port: SyncHttpPort, loopback: Loopback) -> None:
    with pytest.raises(TransportTimeout):
        _read(port, HttpRequest("GET", f"{loopback.url}/stall", timeout_s=0.3))


def test_truncated_body_is_a_lost_connection(port: SyncHttpPort, loopback: Loopback) -> None:
    with pytest.raises(ConnectionLost):
        port.send(HttpRequest("GET", f"{loopback.url}/truncated"))
    with pytest.raises(ConnectionLost):
        _read(port, HttpRequest("GET", f"{loopback.url}/truncated"))


def test_connection_refused(port: SyncHttpPort, refused_url: str) -> None:
    with pytest.raises(ConnectFailed):
        port.send(HttpRequest("POST", refused_url, body=b"{}"))


def test_body_cap(port: SyncHttpPort, loopback: Loopback) -> None:
    assert len(port.send(HttpRequest("GET", f"{loopback.url}/big")).body) == len(BIG)
    with pytest.raises(ResponseTooLarge):
        port.send(HttpRequest("GET", f"{loopback.url}/big", max_body_bytes=1000))


def test_not_http_url(port: SyncHttpPort) -> None:
    with pytest.raises(InvalidUrl):
        port.send(HttpRequest("GET", "ftp://127.0.0.1/bundle.zip"))


def test_pool_bounds_concurrent_connections(port: SyncHttpPort, loopback: Loopback) -> None:
    loopback.server.peak = 0
    request = HttpRequest("GET", f"{loopback.url}/hold?s=0.1")
    with ThreadPoolExecutor(8) as pool:  # greenlets under gevent
        answers = list(pool.map(lambda _: port.send(request), range(8)))
    assert [answer.body for answer in answers] == [b"held"] * 8
    assert loopback.server.peak == 2


def test_tls_verify_default_ca_file_and_off(tls: tuple[Loopback, Path]) -> None:
    server, ca_path = tls
    request = HttpRequest("GET", f"{server.url}/echo")
    strict = make_sync_port(BACKEND)
    with pytest.raises(TlsVerifyFailed):
        strict.send(request)
    strict.close()
    for verify in (str(ca_path), False):
        port = make_sync_port(BACKEND, verify=verify)
        assert port.send(request).status == 200
        port.close()
    wrong_host = HttpRequest("GET", request.url.replace("127.0.0.1", "localhost"))
    port = make_sync_port(BACKEND, verify=str(ca_path))
    with pytest.raises(TlsVerifyFailed):  # the certificate names 127.0.0.1 only
        port.send(wrong_host)
    port.close()


def test_the_backend_under_test(port: SyncHttpPort) -> None:
    expected = "agent.drivers.http_gevent" if UNDER_GEVENT else "agent.drivers.http_httpx"
    assert type(port).__module__ == expected
