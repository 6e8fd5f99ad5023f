"""One load generator of the HTTP benchmarks, run in its own pinned process.

    python bench_http_gen.py CANDIDATE URL CONCURRENCY WARMUP_S DURATION_S

Prints one JSON line: update checks completed in the measured window, errors, seconds.
gevent candidates monkey-patch first, so no asyncio candidate ever shares a patched process.
Raw clients POST the same canned update-check body; `agent-*` candidates are devices running
the agent (`check_for_update`, stats off) over the port of the same backend.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
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
    "httpx-sync-gevent", "geventhttpclient", "port-geventhttpclient", "agent-sync-gevent",
}  # fmt: skip


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
        return {"requests": self.at_end - self.at_start, "errors": self.errors, "seconds": seconds}


def device_setup(url: str, index: int, window: Window) -> tuple[Any, Any, Any, Path]:
    """(config, identity, observer counting errors, folder) for benchmark device `index`."""
    from agent.config import AgentConfig, DeviceIdentity
    from agent.drivers.api import AgentObserver

    class CountErrors(AgentObserver):
        def on_request(self, *args: Any) -> None:
            status, error = args[3], args[6]
            if error is not None or status != 200:
                window.errors += 1

    config = AgentConfig(update_url=url, stats_url="", channel_url=url)
    identity = DeviceIdentity(
        device_id=str(uuid.uuid4()), app_id="com.example.app", platform="android",
        version_build="1.0.0",
    )  # fmt: skip
    return config, identity, CountErrors(), _devices_root() / f"{index:05d}"


@functools.cache
def _devices_root() -> Path:
    """One folder for every benchmark device of this process, removed when the process exits."""
    root = tempfile.mkdtemp(prefix="otasim-bench-devices-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return Path(root)


# -- asyncio candidates: each returns (one send per worker, close) ------------------------

AsyncSend = Callable[[], Awaitable[int]]
AsyncClose = Callable[[], Awaitable[None]]


async def _httpx_async(url: str, n: int, transport: str) -> tuple[list[AsyncSend], AsyncClose]:
    import httpx

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    if transport == "aiohttp":
        from httpx_aiohttp import HttpxAiohttpClient

        client: httpx.AsyncClient = HttpxAiohttpClient(limits=limits)
    else:
        client = httpx.AsyncClient(limits=limits)

    async def send() -> int:
        return (await client.post(url, content=BODY, headers=HEADERS)).status_code

    return [send] * n, client.aclose


async def _aiohttp_raw(url: str, n: int) -> tuple[list[AsyncSend], AsyncClose]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))

    async def send() -> int:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()
            return response.status

    return [send] * n, session.close


async def _port_async(url: str, n: int, backend: str) -> tuple[list[AsyncSend], AsyncClose]:
    from agent.drivers.backends import make_async_port
    from agent.drivers.http import HttpRequest

    port = make_async_port(backend, max_connections=100)  # type: ignore[arg-type]
    request = HttpRequest("POST", url, HEADERS, BODY)

    async def send() -> int:
        return (await port.send(request)).status

    return [send] * n, port.aclose


async def _agent_async(url: str, n: int, window: Window) -> tuple[list[AsyncSend], AsyncClose]:
    from agent.drivers.aio import AsyncDevice
    from agent.drivers.backends import make_async_port

    port = make_async_port("aiohttp", max_connections=100)
    devices = []
    for index in range(n):
        config, identity, observer, folder = device_setup(url, index, window)
        device = await AsyncDevice.open(folder, config, identity, port, observer=observer)
        await device.launch()
        devices.append(device)

    def sender(device: AsyncDevice) -> AsyncSend:
        async def send() -> int:
            await device.check_for_update()
            return 200

        return send

    return [sender(d) for d in devices], port.aclose


def _async_candidate(name: str, url: str, n: int, window: Window) -> Any:
    return {
        "httpx-async": lambda: _httpx_async(url, n, "httpcore"),
        "httpx-aiohttp": lambda: _httpx_async(url, n, "aiohttp"),
        "aiohttp": lambda: _aiohttp_raw(url, n),
        "port-aiohttp": lambda: _port_async(url, n, "aiohttp"),
        "port-httpx": lambda: _port_async(url, n, "httpx"),
        "agent-aio": lambda: _agent_async(url, n, window),
    }[name]()


async def _run_async(name: str, url: str, n: int, window: Window) -> None:
    import asyncio

    sends, close = await _async_candidate(name, url, n, window)

    async def worker(send: AsyncSend) -> None:
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

    await asyncio.gather(sample(), *(worker(send) for send in sends))
    await close()


# -- gevent candidates -------------------------------------------------------------------


def _gevent_sends(name: str, url: str, n: int, window: Window) -> list[Callable[[], int]]:
    if name == "httpx-sync-gevent":
        import httpx

        client = httpx.Client(limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
        return [lambda: client.post(url, content=BODY, headers=HEADERS).status_code] * n
    if name == "geventhttpclient":
        from geventhttpclient import URL, HTTPClient

        parsed = URL(url)
        raw = HTTPClient.from_url(parsed, concurrency=n)

        def send_raw() -> int:
            response = raw.post(parsed.request_uri, body=BODY, headers=HEADERS)
            response.read()
            response.release()
            return response.status_code

        return [send_raw] * n
    from agent.drivers.backends import make_sync_port
    from agent.drivers.http import HttpRequest

    port = make_sync_port("geventhttpclient", max_connections=n)
    if name == "port-geventhttpclient":
        request = HttpRequest("POST", url, HEADERS, BODY)
        return [lambda: port.send(request).status] * n
    from agent.drivers.sync import SyncDevice

    def sender(index: int) -> Callable[[], int]:
        config, identity, observer, folder = device_setup(url, index, window)
        device = SyncDevice.open(folder, config, identity, port, observer=observer)
        device.launch()
        return lambda: device.check_for_update() or 200

    return [sender(index) for index in range(n)]


def _run_gevent(name: str, url: str, n: int, window: Window) -> None:
    import gevent

    def worker(send: Callable[[], int]) -> None:
        while window.running():
            try:
                if send() != 200:
                    window.errors += 1
            except Exception:
                window.errors += 1
            window.done += 1

    workers = [gevent.spawn(worker, send) for send in _gevent_sends(name, url, n, window)]
    gevent.sleep(window.start - time.monotonic())
    window.at_start = window.done
    gevent.sleep(window.end - time.monotonic())
    window.at_end = window.done
    gevent.joinall(workers, timeout=30)


def main() -> None:
    name, url, concurrency_text, warmup_text, duration_text = sys.argv[1:6]
    concurrency = int(concurrency_text)
    if name in GEVENT_CANDIDATES:
        from gevent import monkey

        monkey.patch_all()
    window = Window(float(warmup_text), float(duration_text))
    if name in GEVENT_CANDIDATES:
        _run_gevent(name, url, concurrency, window)
    else:
        import asyncio

        asyncio.run(_run_async(name, url, concurrency, window))
    print(json.dumps({"candidate": name, "concurrency": concurrency, **window.result()}))


if __name__ == "__main__":
    main()
