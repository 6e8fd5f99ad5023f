"""A disk that fills during a download (issue 16, item 6), on a real small file system.

Each case runs the real `otasim device` in a private mount namespace (`unshare -rm`) whose
device folder is a fresh 110 MiB tmpfs, against the loopback Capgo peer serving a 60 MiB
bundle: written twice (`.part` and `.zip`), it cannot fit. Whether the server announces the
length (refused before writing) or not (the disk really fills: ENOSPC), the command exits 4
with `insufficient_disk_space`, the partial download is deleted and the device still works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from capgo_peer import CapgoPeer, make_zip

DISK_MIB = 110
UNSHARE = shutil.which("unshare")


def _namespaces_available() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "-rm", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _namespaces_available(), reason="needs user and mount namespaces (unshare -rm)"
)

SCRIPT = """
mount -t tmpfs -o size={mib}m otasim-small-disk "$1" || exit 90
D="$1/dev"
$PY -m simulator.cli device init "$D" --server {url} --app-id com.example.app \
    --platform android --version-build 1.0.0 > /dev/null || exit 91
$PY -m simulator.cli device launch "$D"
echo "EXIT $?"
echo "LEFT $(ls -A "$D/downloads" "$D/staging" | grep -v : | tr '\\n' ' ')"
echo "FREE $(df -k --output=avail "$1" | tail -1)"
echo "STATUS"
$PY -m simulator.cli device status "$D" --json
"""


@pytest.fixture(scope="module")
def big_zip() -> bytes:
    return make_zip("1.0.1", {"big.bin": os.urandom(60 << 20)})


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
def test_a_full_disk_stops_the_download_cleanly(
    peer: CapgoPeer, tmp_path: Path, big_zip: bytes, announced: bool
) -> None:
    peer.publish("1.0.1", big_zip)
    peer.chunked = not announced
    mount = tmp_path / "disk"
    mount.mkdir()
    assert UNSHARE is not None
    done = subprocess.run(
        [UNSHARE, "-rm", "sh", "-c", SCRIPT.format(mib=DISK_MIB, url=peer.url), "sh", mount],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PY": sys.executable},
    )
    out = done.stdout
    assert "EXIT 4" in out, (done.returncode, out[-2000:], done.stderr[-2000:])
    assert "stat  insufficient_disk_space 1.0.1" in out and "Traceback" not in done.stderr
    assert "LEFT \n" in out or out.split("LEFT ", 1)[1].split("\n", 1)[0].strip() == ""
    free_kib = int(out.split("FREE ", 1)[1].split("\n", 1)[0])
    assert free_kib > (DISK_MIB - 5) * 1024  # the partial download was deleted
    status = json.loads(out.split("STATUS\n", 1)[1])
    assert status["current"]["id"] == "builtin" and status["bundles"] == []
    if announced:  # refused from the announced length, before a byte was written
        assert len(peer.bundle_requests()) == 1
