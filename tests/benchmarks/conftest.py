"""Fixtures of the CPU-bound benchmarks (`make bench`): every file they make lives in a
temporary folder removed when the session ends."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "agent"))  # capgo_peer, as the agent tests

MiB = 1024 * 1024
BUNDLE_MB = int(os.environ.get("OTASIM_BENCH_BUNDLE_MB", "64"))


@dataclass(frozen=True)
class Bundle:
    """An encrypted, signed bundle as `otasim bundle encrypt` makes it."""

    folder: Path
    file: Path
    plain: Path
    checksum: str
    session_key: str
    public_key: Path
    plain_sha256: str
    key_hex: str
    iv_hex: str


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="otasim-bench-") as tmp:
        yield Path(tmp)


@pytest.fixture
def folder(scratch: Path) -> Iterator[Path]:
    """An empty folder for one benchmark, removed after it (pytest's tmp_path is kept)."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def bundle(scratch: Path) -> Bundle:
    """BUNDLE_MB MiB of incompressible files, zipped (kept: `plain`), encrypted and signed."""
    from agent.security.keys import load_public_key
    from agent.security.session import recover_session_key
    from simulator.release import create_keys, encrypt_bundle, zip_dist

    folder = scratch / "bundle"
    dist = folder / "dist"
    dist.mkdir(parents=True)
    (dist / "index.html").write_text("<html></html>")
    for i in range(BUNDLE_MB // 4):
        (dist / f"chunk-{i:03d}.bin").write_bytes(os.urandom(4 * MiB))
    private, public = create_keys()
    (folder / "public.pem").write_bytes(public)
    zip_dist(dist, folder / "b.zip")
    enc = encrypt_bundle(folder / "b.zip", private, folder / "b.zip_encrypted.zip")
    session = recover_session_key(enc.session_key, load_public_key(public.decode()))
    return Bundle(
        folder, enc.path, folder / "b.zip", enc.checksum, enc.session_key, folder / "public.pem",
        enc.plain_checksum, session.key.hex(), session.iv.hex(),
    )  # fmt: skip
