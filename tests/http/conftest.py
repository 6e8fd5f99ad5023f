"""Fixtures for the HTTP port tests: real servers on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_http import Loopback, make_certs, serve


@pytest.fixture(scope="module")
def loopback() -> Iterator[Loopback]:
    with serve() as running:
        yield running


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Loopback, Path]]:
    ca_path, context = make_certs(tmp_path_factory.mktemp("tls"))
    with serve(context) as running:
        yield running, ca_path


@pytest.fixture
def refused_url() -> str:
    """A loopback URL whose port was just free: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/updates"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
