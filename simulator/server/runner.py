"""Run the server with uvicorn on a socket we bind ourselves (so port 0 yields a known port)."""

from __future__ import annotations

import socket
from pathlib import Path

import uvicorn

from simulator.server.app import create_app
from simulator.server.guard import (
    ACCEPT_BURST,
    ConnectionLimits,
    connection_budget,
    guarded_protocol,
    limit_logs,
)
from simulator.server.state import ServerConfig


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; `port=0` picks a free one.

    Raises:
        OSError: the address is in use or not available.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: uvicorn writes headers and body separately, and
    # Nagle + delayed ACK would hold the body ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def make_server(
    config: ServerConfig, tls_cert: Path | None = None, tls_key: Path | None = None
) -> uvicorn.Server:
    """A uvicorn server for one worker: httptools parser (x1.46 checks/s over h11, measured
    by tests/benchmarks/bench_server.py), quiet and rate-limited logs, no access log,
    lifespan on; slow request heads and bodies time out and connections are capped
    (`simulator.server.guard`)."""
    limit = config.max_connections or connection_budget()
    limits = ConnectionLimits(config.head_timeout_s, config.body_timeout_s, limit)
    uv_config = uvicorn.Config(
        create_app(config),
        http=guarded_protocol(limits),
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        timeout_keep_alive=config.keep_alive_s,
        limit_concurrency=limit,
        backlog=ACCEPT_BURST,
    )
    limit_logs()  # after uvicorn.Config, which configures its loggers
    return uvicorn.Server(uv_config)
