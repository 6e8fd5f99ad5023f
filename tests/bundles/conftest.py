"""One RSA-2048 key pair for the bundle tests (generation is slow)."""

from __future__ import annotations

import pytest

from agent.security.keys import PublicKey, load_public_key
from simulator.release import create_keys, load_private_key, public_pem_of


@pytest.fixture(scope="session")
def private_pem() -> bytes:
    return create_keys()[0]


@pytest.fixture(scope="session")
def public_key(private_pem) -> PublicKey:
    return load_public_key(public_pem_of(load_private_key(private_pem)).decode())
