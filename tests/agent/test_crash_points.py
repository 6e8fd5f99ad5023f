"""Kill the device, or cut its power, at every write boundary of an update's life.

`atomic_write` is checked against a kill raised just before or after its rename; the whole
life (download, stage, unpack, swap, confirm, rollback) against the kill and power-cut images
of `simulator.prove.powercut`, each reopened and booted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from capgo_peer import CapgoPeer
from device_harness import NoWaitClock

from agent import store as store_module
from agent.config import AgentConfig, DeviceIdentity
from agent.core.base import Ledger
from agent.drivers.api import DeviceStatus
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from agent.store import DeviceStore, atomic_write, fsync_dir
from simulator.prove.powercut import (
    DiskRecorder,
    prove_disk_full,
    prove_power_cuts,
    recording_folder,
)


class Killed(BaseException):
    pass


class Killer:
    """Counts boundaries; raises `Killed` before or after boundary number `at`."""

    def __init__(self, at: int | None, after: bool) -> None:
        self.at, self.after, self.seen = at, after, 0

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def boundary(*args: Any, **kwargs: Any) -> Any:
            hit = self.seen == self.at
            self.seen += 1
            if hit and not self.after:
                raise Killed
            result = real(*args, **kwargs)
            if hit:
                raise Killed
            return result

        return boundary


def run_with_killer(
    monkeypatch: pytest.MonkeyPatch, killer: Killer, fn: Callable[[], None]
) -> bool:
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killer.wrap(os.replace))
        patch.setattr(DeviceStore, "delete_bundle", killer.wrap(DeviceStore.delete_bundle))
        try:
            fn()
        except Killed:
            return True
    return False


@pytest.mark.parametrize("durable", [True, False])
def test_atomic_write_keeps_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"old")
    for after in (False, True):
        killed = run_with_killer(
            monkeypatch, Killer(0, after), lambda: atomic_write(target, b"new", durable=durable)
        )
        assert killed and target.read_bytes() == (b"new" if after else b"old")
        atomic_write(target, b"old")


def test_kill_and_power_cut_at_every_write_boundary() -> None:
    figures = prove_power_cuts()
    assert figures.problems == []
    assert figures.boundaries > 200
    assert set(figures.by_area) == {"download", "stage", "unpack", "swap", "commit", "cleanup"}
    assert "rollback 1.0.3->1.0.2" in figures.by_step
    assert figures.kill_recovered == figures.kill_images == figures.boundaries + 1
    assert figures.cut_recovered == figures.cut_images == figures.boundaries + 1


def test_power_cut_finds_bundles_renamed_before_their_files_are_durable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without `sync_tree` a kill still recovers, a power cut does not: the proof can fail."""
    monkeypatch.setattr(store_module, "sync_tree", lambda folder: None)
    figures = prove_power_cuts()
    assert figures.kill_recovered == figures.kill_images
    assert figures.cut_recovered < figures.cut_images
    assert any("incomplete after reopen" in p for p in figures.problems)


def test_durable_image_keeps_only_what_was_fsynced() -> None:
    with recording_folder() as scratch:
        root = scratch / "device"
        root.mkdir()
        recorder = DiskRecorder(root)
        with recorder.recording():
            (root / "lost").write_bytes(b"never synced")
            atomic_write(root / "kept", b"synced")
            (root / "folder").mkdir()
            (root / "folder" / "inner").write_bytes(b"x")
            fsync_dir(root)
        assert recorder.durable_image() == {"lost": b"", "kept": b"synced", "folder": None}
        ops = [(b.op, b.path) for b in recorder.boundaries]
        assert ("write", "lost") in ops and ("mkdir", "folder") in ops
        assert ("fsync", ".") in ops and ("replace", ops[ops.index(("fsync", ".")) - 1][1])
        kill_before_last = recorder.images[recorder.boundaries[-1].kill]
        assert kill_before_last["folder/inner"] == b"x" and kill_before_last["lost"]


def test_disk_full_at_every_write_of_a_first_update() -> None:
    figures = prove_disk_full()
    assert figures.problems == [] and figures.absorbed == []
    assert figures.injection_points > 50
    assert figures.typed_errors > 0 and figures.reported > 0  # both ways a fill surfaces
    assert figures.typed_errors + figures.reported == figures.injection_points
    assert figures.recovered == figures.succeeded_after == figures.injection_points


def test_disk_full_proof_finds_a_commit_the_core_believes_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without `commit_failed` a confirm whose commit met a full disk is never written again:
    the device reopens unconfirmed, rolls the good release back and never retries it."""
    monkeypatch.setattr(Ledger, "commit_failed", lambda self: None)
    figures = prove_disk_full()
    assert any("did not install once space returned" in p for p in figures.problems)


@pytest.mark.parametrize("durable", [True, False])
def test_only_a_durable_device_fsyncs(
    durable: bool, peer: CapgoPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fleet's devices run with `durable=False` (kills simulated, power loss not): a whole
    download, unpack and install then fsyncs nothing, while a durable device fsyncs it."""
    peer.publish("1.0.1")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    assert _first_update(peer, tmp_path / "device", durable).next is not None
    assert bool(synced) == durable


def _first_update(peer: CapgoPeer, folder: Path, durable: bool) -> DeviceStatus:
    """A new device in `folder` launched once against `peer`: checks, downloads, installs."""
    config = AgentConfig(
        update_url=f"{peer.url}/updates",
        stats_url=f"{peer.url}/stats",
        channel_url=f"{peer.url}/channel_self",
    )
    identity = DeviceIdentity(str(uuid.uuid4()), "com.example.app", "android", "1.0.0")
    port = make_sync_port()
    try:
        device = SyncDevice.open(
            folder, config, identity, port, clock=NoWaitClock(), durable=durable
        )
        device.launch()
        return device.status()
    finally:
        port.close()


def test_a_device_that_is_not_durable_writes_each_file_once_per_call(
    peer: CapgoPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fleet's devices hold their commits until the lifecycle call ends (the simulator
    kills between calls): a launch that checks, downloads and installs writes state.json and
    stats.json once each, and what it leaves on disk is what the device holds."""
    peer.publish("1.0.1")
    written: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: written.append(Path(dst).name) or real_replace(src, dst)
    )
    status = _first_update(peer, tmp_path / "device", durable=False)
    assert status.next is not None  # downloaded, unpacked and installed
    assert sorted(n for n in written if n.endswith(".json")) == ["state.json", "stats.json"]
    _, state, stats = DeviceStore.open(tmp_path / "device", durable=False)
    assert state.next == status.next.id and len(stats) == status.pending_stats > 0
