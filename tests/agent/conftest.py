"""Fixtures for the agent tests: a loopback Capgo peer, both drivers behind one interface, the
real reference server and a key pair."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from capgo_peer import CapgoPeer, serve_peer
from device_harness import Driven, Recorder

from agent.config import AgentConfig, DeviceIdentity
from simulator.release import create_keys
from simulator.server.embedded import RunningServer, run_server


@pytest.fixture(scope="module")
def peer_server() -> Iterator[CapgoPeer]:
    with serve_peer() as peer:
        yield peer


@pytest.fixture
def peer(peer_server: CapgoPeer) -> CapgoPeer:
    peer_server.reset()
    return peer_server


@pytest.fixture(params=["sync", "async"])
def make_device(
    request: pytest.FixtureRequest, peer: CapgoPeer, tmp_path: Path
) -> Iterator[Callable[..., Driven]]:
    made: list[Driven] = []

    def make(time_scale: float = 1.0, **overrides: Any) -> Driven:
        config = AgentConfig(
            update_url=f"{peer.url}/updates",
            stats_url=f"{peer.url}/stats",
            channel_url=f"{peer.url}/channel_self",
            **overrides,
        )
        identity = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "android", "1.0.0")
        driven = Driven(
            request.param,
            tmp_path / f"device{len(made)}",
            config,
            identity,
            Recorder(),
            time_scale,
        )
        made.append(driven)
        return driven

    yield make
    for driven in made:
        driven.close()


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """The real reference server over loopback, one per test module."""
    with run_server() as running:
        yield running


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    """A fresh (private PEM, public PEM) pair, one per test module."""
    return create_keys()
