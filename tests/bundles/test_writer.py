import os
import threading
from pathlib import Path

import pytest

from agent.bundles.writer import BackgroundWriter


def test_writes_every_chunk_in_order(tmp_path):
    chunks = [os.urandom(n) for n in (1, 0, 70_000, 5, 300_000)]
    with BackgroundWriter(tmp_path / "out", depth=2) as out:
        for chunk in chunks:
            out.write(chunk)
    assert (tmp_path / "out").read_bytes() == b"".join(chunks)


def test_disk_full_surfaces_as_oserror():
    with pytest.raises(OSError), BackgroundWriter(Path("/dev/full")) as out:
        for _ in range(50):
            out.write(b"x" * 65536)


def test_an_error_in_the_producer_wins_and_stops_the_thread(tmp_path):
    before = threading.active_count()
    with pytest.raises(KeyError), BackgroundWriter(tmp_path / "out") as out:
        out.write(b"abc")
        raise KeyError("producer failed")
    assert threading.active_count() == before
