"""One load generator of the HTTP benchmark, run in its own pinned process by bench_http.py.

    python bench_http_gen.py CANDIDATE URL CONCURRENCY WARMUP_S DURATION_S

Prints one JSON line: requests completed in the measured window, errors, seconds.
gevent candidates monkey-patch first, so that no asyncio candidate ever shares a patched
process. Every candidate POSTs the same canned update-check body and reads the answer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

BODY = json.dumps(
    {
        "platform": "android",
        "device_id": "00000000-0000-4000-8000-000000000001",
        "app_id": "com.example.app",
        "version_build": "1.0.0",
        "version_name": "builtin",
        "plugin_version": "8.51.14",
        "is_emulator": False,
        "is_prod": True,
        "defaultChannel": "production",
    }
).encode()
HEADERS = {"Content-Type": "application/json", "User-Agent": "CapacitorUpdater/8.51.14"}
GEVENT_CANDIDATES = {
    "httpx-sync-gevent",
    "geventhttpclient",
    "port-geventhttpclient",
    "locust-fasthttp",
}


class Window:
    """Counts completions; the figure is the count between warm-up end and the deadline."""

    def __init__(self, warmup_s: float, duration_s: float) -> None:
        self.start = time.monotonic() + warmup_s
        self.end = self.start + duration_s
        self.done = self.errors = 0
        self.at_start = self.at_end = 0

    def running(self) -> bool:
        return time.monotonic() < self.end

    def result(self) -> dict[str, Any]:
        seconds = self.end - self.start
        requests = self.at_end - self.at_start
        return {"requests": requests, "errors": self.errors, "seconds": seconds}


# -- asyncio candidates: each returns (send, close) -------------------------------------

AsyncSend = Callable[[], Awaitable[int]]


async def _httpx_async(
    url: str, transport_kind: str
) -> tuple[AsyncSend, Callable[[], Awaitable[None]]]:
    import httpx

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    if transport_kind == "aiohttp":
        from httpx_aiohttp import HttpxAiohttpClient

        client: httpx.AsyncClient = HttpxAiohttpClient(limits=limits)
    else:
        client = httpx.AsyncClient(limits=limits)

    async def send() -> int:
        response = await client.post(url, content=BODY, headers=HEADERS)
        return response.status_code

    return send, client.aclose


async def _aiohttp_raw(url: str) -> tuple[AsyncSend, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    async def send() -> int:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()
            return response.status

    return send, session.close


async def _port_async(url: str, backend: str) -> tuple[AsyncSend, Callable[[], Awaitable[None]]]:
    from agent.drivers.http import HttpRequest, make_async_port

    port = make_async_port(backend, max_connections=100)  # type: ignore[arg-type]
    request = HttpRequest("POST", url, HEADERS, BODY)

    async def send() -> int:
        return (await port.send(request)).status

    return send, port.aclose


ASYNC_CANDIDATES = {
    "httpx-async": lambda url: _httpx_async(url, "httpcore"),
    "httpx-aiohttp": lambda url: _httpx_async(url, "aiohttp"),
    "aiohttp": _aiohttp_raw,
    "port-aiohttp": lambda url: _port_async(url, "aiohttp"),
    "port-httpx": lambda url: _port_async(url, "httpx"),
}


async def _run_async(name: str, url: str, concurrency: int, window: Window) -> None:
    import asyncio

    send, close = await ASYNC_CANDIDATES[name](url)

    async def worker() -> None:
        while window.running():
            try:
                if await send() != 200:
                    window.errors += 1
            except Exception:
                window.errors += 1
            window.done += 1

    async def sample() -> None:
        await asyncio.sleep(window.start - time.monotonic())
        window.at_start = window.done
        await asyncio.sleep(window.end - time.monotonic())
        window.at_end = window.done

    await asyncio.gather(sample(), *(worker() for _ in range(concurrency)))
    await close()


# -- gevent candidates -------------------------------------------------------------------


def _gevent_client(name: str, url: str, concurrency: int) -> Callable[[], int]:
    if name == "httpx-sync-gevent":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.Client(limits=limits)
        return lambda: client.post(url, content=BODY, headers=HEADERS).status_code
    if name == "geventhttpclient":
        from geventhttpclient import URL, HTTPClient

        parsed = URL(url)
        raw = HTTPClient.from_url(parsed, concurrency=concurrency)

        def send_raw() -> int:
            response = raw.post(parsed.request_uri, body=BODY, headers=HEADERS)
            response.read()
            response.release()
            return response.status_code

        return send_raw
    from agent.drivers.http import HttpRequest, make_sync_port

    port = make_sync_port("geventhttpclient", max_connections=concurrency)
    request = HttpRequest("POST", url, HEADERS, BODY)
    return lambda: port.send(request).status


def _run_gevent(name: str, url: str, concurrency: int, window: Window) -> None:
    import gevent

    send = _gevent_client(name, url, concurrency)

    def worker() -> None:
        while window.running():
            try:
                if send() != 200:
                    window.errors += 1
            except Exception:
                window.errors += 1
            window.done += 1

    workers = [gevent.spawn(worker) for _ in range(concurrency)]
    gevent.sleep(window.start - time.monotonic())
    window.at_start = window.done
    gevent.sleep(window.end - time.monotonic())
    window.at_end = window.done
    gevent.joinall(workers, timeout=30)


def _run_locust(url: str, concurrency: int, window: Window) -> None:
    """Locust's own FastHttpUser, library mode: the runner and stats included."""
    import gevent
    from locust import FastHttpUser, constant, task
    from locust.env import Environment

    base, path = url.rsplit("/", 1)

    class BarePost(FastHttpUser):
        host = base
        wait_time = constant(0)
        concurrency = 1

        @task
        def check(self) -> None:
            self.client.post(f"/{path}", data=BODY, headers=HEADERS)

    env = Environment(user_classes=[BarePost])
    runner = env.create_local_runner()
    runner.start(concurrency, spawn_rate=concurrency)
    gevent.sleep(window.start - time.monotonic())
    window.at_start = env.stats.total.num_requests
    gevent.sleep(window.end - time.monotonic())
    window.at_end = env.stats.total.num_requests
    window.errors = env.stats.total.num_failures
    runner.quit()


def main() -> None:
    name, url, concurrency_text, warmup_text, duration_text = sys.argv[1:6]
    concurrency = int(concurrency_text)
    if name in GEVENT_CANDIDATES:
        from gevent import monkey

        monkey.patch_all()
    window = Window(float(warmup_text), float(duration_text))
    if name == "locust-fasthttp":
        _run_locust(url, concurrency, window)
    elif name in GEVENT_CANDIDATES:
        _run_gevent(name, url, concurrency, window)
    else:
        import asyncio

        asyncio.run(_run_async(name, url, concurrency, window))
    print(json.dumps({"candidate": name, "concurrency": concurrency, **window.result()}))


if __name__ == "__main__":
    main()
