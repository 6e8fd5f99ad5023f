"""Keys shared by the security tests: one RSA-2048 pair per session (generation is slow)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from agent.security.keys import PublicKey, load_public_key
from simulator.release import create_keys, load_private_key


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes
    public: PublicKey

    @property
    def private(self) -> RSAPrivateKey:
        return load_private_key(self.private_pem)


def make_key_pair() -> KeyPair:
    private_pem, public_pem = create_keys()
    return KeyPair(private_pem, public_pem, load_public_key(public_pem.decode()))


@pytest.fixture(scope="session")
def keys() -> KeyPair:
    return make_key_pair()


@pytest.fixture(scope="session")
def other_keys() -> KeyPair:
    return make_key_pair()
