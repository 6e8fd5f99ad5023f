"""The blocking driver inside a gevent-patched process (as under Locust) completes updates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from capgo_peer import CapgoPeer, make_zip

SCRIPT = """
from gevent import monkey
monkey.patch_all(subprocess=True)
import json, sys, uuid
from pathlib import Path
import gevent
from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice

url, root = sys.argv[1], Path(sys.argv[2])
port = make_sync_port("geventhttpclient")
config = AgentConfig(update_url=url + "/updates", stats_url=url + "/stats",
                     channel_url=url + "/channel_self")

def life(n):
    identity = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "android", "1.0.0")
    device = SyncDevice.open(root / str(n), config, identity, port)
    device.launch()
    device.notify_app_ready()
    device.background()
    device.notify_app_ready()
    device.flush_stats()
    status = device.status()
    return [status.current.version, status.boot_confirmed, status.pending_stats]

jobs = [gevent.spawn(life, n) for n in range(4)]
gevent.joinall(jobs, raise_error=True)
port.close()
print(json.dumps([job.value for job in jobs]))
"""


def test_blocking_driver_under_gevent(peer: CapgoPeer, tmp_path: Path) -> None:
    peer.publish("1.0.1", make_zip("1.0.1", {"app.js": b"y" * 100_000}))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, peer.url, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == [["1.0.1", True, 0]] * 4
    assert len(peer.bundle_requests()) == 4 and peer.actions().count("set") == 4
