"""Kill the device at every commit boundary of an update's life, reopen, find it bootable.

A boundary is each `os.replace` (every state/stats commit and the bundle folder rename) and
each bundle deletion; the kill lands just before or just after it. After the kill the folder
is reopened as a new process would, checked for consistency, and driven on to prove it still
updates.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from capgo_peer import CapgoPeer, make_zip
from device_harness import NoWaitClock

from agent.config import AgentConfig, DeviceIdentity
from agent.core.lifecycle import BUILTIN
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from agent.store import DeviceStore, atomic_write

IDENTITY = DeviceIdentity(str(uuid.UUID(int=3)), "com.example.app", "ios", "1.0.0")


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


@pytest.fixture
def shm_path(tmp_path: Path) -> Iterator[Path]:
    """A scratch folder on tmpfs when there is one: fsync is free there, kills are the same."""
    base = Path("/dev/shm")
    if not base.is_dir():
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(dir=base, prefix="otasim-crash-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def port() -> Iterator[Any]:
    sync_port = make_sync_port()
    yield sync_port
    sync_port.close()


def open_device(folder: Path, peer: CapgoPeer, port: Any) -> SyncDevice:
    config = AgentConfig(
        update_url=f"{peer.url}/updates", stats_url=f"{peer.url}/stats", channel_url=f"{peer.url}/c"
    )
    return SyncDevice.open(folder, config, IDENTITY, port, clock=NoWaitClock())


def life(folder: Path, peer: CapgoPeer, port: Any) -> None:
    """Update to 1.0.1, confirm it, update to 1.0.2 (deleting 1.0.1), confirm it."""
    for version in ("1.0.1", "1.0.2"):
        peer.publish(version, make_zip(version, {"app.js": b"x" * 5000}))
        device = open_device(folder, peer, port)
        device.launch()
        device.notify_app_ready()
        device.background()
        device.notify_app_ready()
        device.flush_stats(max_wait_s=0)


def assert_consistent(folder: Path) -> None:
    store, state, _ = DeviceStore.open(folder)
    assert state.bootable(state.current) and state.bootable(state.fallback)
    for info in state.bundles.values():
        if info.status in ("pending", "success"):
            index = store.bundle_dir(info.id) / "index.html"
            assert index.read_text() == f"<html>{info.version}</html>"
            assert info.id in (state.current, state.next, state.fallback)  # no orphan
    installed = {k for k, v in state.bundles.items() if v.status != "downloading"}
    assert {p.name for p in store.bundles.iterdir()} == installed
    assert list(store.staging.iterdir()) == []
    assert list(folder.glob(".*.tmp")) == []
    assert state.current == BUILTIN or state.current in installed


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


def test_kill_at_every_commit_boundary(
    peer: CapgoPeer, port: Any, shm_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path = shm_path
    counter = Killer(None, False)
    run_with_killer(monkeypatch, counter, lambda: life(tmp_path / "clean", peer, port))
    boundaries = counter.seen
    assert boundaries > 10
    for at in range(boundaries):
        for after in (False, True):
            folder = tmp_path / f"kill-{at}-{after}"
            peer.reset()
            killed = run_with_killer(
                monkeypatch, Killer(at, after), lambda f=folder: life(f, peer, port)
            )
            assert killed
            assert_consistent(folder)
            device = open_device(folder, peer, port)
            device.launch()
            device.notify_app_ready()
            device.background()
            device.notify_app_ready()
            assert_consistent(folder)
            status = device.status()
            assert status.current.version in ("1.0.0", "1.0.1", "1.0.2")
            assert status.current.version not in status.failed_versions
