"""Client CPU per request (issue 9): what one fleet request costs the fleet process, per stack.

    .venv/bin/python tests/benchmarks/bench_http_cpu.py [--requests 10000] [--rounds 3]

A canned HTTP/1.1 server (an asyncio protocol answering every POST with the same small JSON,
in its own process) answers every candidate; each candidate POSTs an update-check body with
50 requests in flight, after a warm-up pass, and the figure is the *client process's* CPU
seconds per request (`time.process_time`), which other load on a shared machine moves much
less than throughput. Rounds are interleaved; prints the median per candidate and its ratio
to the raw asyncio-streams client (the ceiling: fixed request bytes, a keep-alive pool, the
answer read by its content-length, no HTTP library at all).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from bench_http_gen import BODY  # the same canned update check

HEADERS = {"content-type": "application/json"}
IN_FLIGHT = 50

SERVER = r"""
import asyncio
ANSWER = b'{"error":"no_new_version_available","message":"No new version available"}'
REPLY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(ANSWER), ANSWER)

class Canned(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:end].split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(REPLY)

async def main():
    server = await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(600)  # stops by itself if the benchmark dies

asyncio.run(main())
"""

Send = Callable[[], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


async def aiohttp_session(url: str, port: int, *, keep_alive: bool = True) -> tuple[Send, Close]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, force_close=not keep_alive)
    )

    async def send() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()

    return send, session.close


async def aiohttp_fresh_connections(url: str, port: int) -> tuple[Send, Close]:
    return await aiohttp_session(url, port, keep_alive=False)


async def agent_port(url: str, port: int, backend: str = "aiohttp") -> tuple[Send, Close]:
    from agent.drivers.backends import make_async_port
    from agent.drivers.http import HttpRequest

    http = make_async_port(backend)  # type: ignore[arg-type]
    request = HttpRequest("POST", url, HEADERS, BODY, timeout_s=10)

    async def send() -> None:
        await http.send(request)

    return send, http.aclose


async def agent_port_streams(url: str, port: int) -> tuple[Send, Close]:
    return await agent_port(url, port, "streams")


async def httpx_async(url: str, port: int) -> tuple[Send, Close]:
    import httpx

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=100))

    async def send() -> None:
        (await client.post(url, content=BODY, headers=HEADERS)).read()

    return send, client.aclose


def _raw_request() -> bytes:
    head = "POST /updates HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    return f"{head}content-length: {len(BODY)}\r\n\r\n".encode() + BODY


async def raw_streams(url: str, port: int) -> tuple[Send, Close]:
    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    request = _raw_request()

    async def send() -> None:
        reader, writer = pool.pop() if pool else await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        pool.append((reader, writer))

    async def close() -> None:
        for _, writer in pool:
            writer.close()

    return send, close


async def raw_streams_httptools(url: str, port: int) -> tuple[Send, Close]:
    import httptools

    pool: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    request = _raw_request()

    class Answer:
        def __init__(self) -> None:
            self.done = False
            self.headers: list[tuple[bytes, bytes]] = []
            self.body: list[bytes] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, chunk: bytes) -> None:
            self.body.append(chunk)

        def on_message_complete(self) -> None:
            self.done = True

    async def send() -> None:
        reader, writer = pool.pop() if pool else await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        answer = Answer()
        parser = httptools.HttpResponseParser(answer)
        while not answer.done:
            parser.feed_data(await reader.read(65536))
        pool.append((reader, writer))

    async def close() -> None:
        for _, writer in pool:
            writer.close()

    return send, close


CANDIDATES = {
    "raw asyncio streams (ceiling)": raw_streams,
    "raw asyncio streams + httptools parser": raw_streams_httptools,
    "aiohttp ClientSession, keep-alive pool": aiohttp_session,
    "aiohttp ClientSession, a connection per request": aiohttp_fresh_connections,
    "agent HTTP port, aiohttp backend": agent_port,
    "agent HTTP port, streams backend (the fleet's)": agent_port_streams,
    "httpx.AsyncClient, keep-alive pool": httpx_async,
}


async def measure(make: Callable[..., Awaitable[tuple[Send, Close]]], port: int, n: int) -> float:
    """Microseconds of this process's CPU per request, `IN_FLIGHT` at a time."""
    send, close = await make(f"http://127.0.0.1:{port}/updates", port)

    async def batch() -> None:
        async def worker() -> None:
            for _ in range(n // IN_FLIGHT):
                await send()

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    try:
        await batch()  # warm-up: connections open, code paths hot
        started = time.process_time()
        await batch()
        return (time.process_time() - started) / n * 1e6
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        figures: dict[str, list[float]] = {name: [] for name in CANDIDATES}
        for _ in range(args.rounds):
            for name, make in CANDIDATES.items():
                figures[name].append(asyncio.run(measure(make, port, args.requests)))
    finally:
        server.terminate()
        server.wait()
    ceiling = statistics.median(figures["raw asyncio streams (ceiling)"])
    print("| client | median CPU µs per request | ratio to the raw client |")
    print("|---|---:|---:|")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / ceiling:.1f} |")


if __name__ == "__main__":
    main()
