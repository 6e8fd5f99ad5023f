"""Helpers of the Locust tests: the target server, running Locust, reading its results.

Locust monkey-patches whatever process imports it, so every run here is a subprocess
(`python -m locust`); the test process only serves, publishes and inspects.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from simulator.server.embedded import RunningServer

APP_ID = "com.example.otasim"
TAMPERED_APP_ID = "com.example.tampered"  # serves a zip that does not match its checksum
BROKEN_APP_ID = "com.example.broken"  # serves a bundle without index.html: never boots
VERSION = "1.0.1"
LOCUSTFILE = Path(__file__).parents[2] / "loadtests" / "locustfile.py"
LOCUST_CONF = LOCUSTFILE.with_name("locust.conf")  # its app-id is APP_ID


@dataclass
class Target:
    server: RunningServer
    public_key: Path

    def locust_args(self, devices: Path) -> list[str]:
        return [
            "--host", self.server.url, "--public-key", str(self.public_key),
            "--device-root", str(devices),
        ]  # fmt: skip


def locust(args: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m locust -f loadtests/locustfile.py ARGS`, bounded in time."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)


def stats_rows(csv_prefix: Path) -> dict[tuple[str, str], dict[str, str]]:
    """Locust's `<prefix>_stats.csv`, by (Type, Name)."""
    with open(f"{csv_prefix}_stats.csv", newline="") as handle:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(handle)}


def outcome_rows(csv_prefix: Path) -> dict[tuple[str, str], int]:
    """otasim's `<prefix>_outcomes.csv` (update outcomes, retries), by (Kind, Name)."""
    with open(f"{csv_prefix}_outcomes.csv", newline="") as handle:
        return {(row["Kind"], row["Name"]): int(row["Count"]) for row in csv.DictReader(handle)}


def device_versions(devices: Path) -> tuple[list[str], list[str], int]:
    """(device ids, current version of each device, stats still pending on the devices)."""
    port = make_sync_port()
    ids, versions, pending = [], [], 0
    for card in sorted(devices.glob("*/*/identity.json")):
        identity = DeviceIdentity(**json.loads(card.read_text()))
        config = AgentConfig(update_url="http://127.0.0.1:9/updates", public_key=None)
        status = SyncDevice.open(card.parent / "device", config, identity, port).status()
        ids.append(identity.device_id)
        versions.append(status.current.version)
        pending += status.pending_stats
    port.close()
    return ids, versions, pending
