"""Power cut, process kill and full disk at every write boundary of an update's life.

A `DiskRecorder` watches every call that changes the device folder (file creation, each data
write, rename, unlink, mkdir, rmdir, fsync). Before each one it takes two images:

- the *kill* image: the folder as the kernel holds it (what a killed process leaves: bytes
  still in Python's buffers are lost, everything written is kept);
- the *power-cut* image: only what was made durable (a file's bytes as of its last fsync, a
  folder's entries as of its last fsync, by inode; a file never fsynced comes back empty, an
  entry never made durable is gone). This is the strict POSIX reading that ext4 and others
  can show after a power loss.

Each distinct image is then materialized in a fresh folder, reopened and booted: the device
must run the version it ran before the step or the new one (old-or-new), every installed
bundle must be complete, and its stats queue must load whole.

The same recorder is the disk-full injection point (`full_at`): it raises ENOSPC at one chosen
write, and `prove_disk_full` runs a fresh device's first update once per write that can fail.

Inodes identify files across renames, so the device folder must live on a file system that
does not reuse inode numbers within a run: tmpfs (`/dev/shm`), checked by `recording_folder`.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.drivers.api import AgentObserver
from agent.drivers.backends import make_sync_port
from agent.drivers.sync import SyncDevice
from agent.errors import AgentError
from agent.store import STATS_FILE, DeviceStore, read_json

# relative path -> file bytes, or None for a folder
Image = dict[str, bytes | None]

LiveFn = Callable[[Path, Callable[[str], None]], None]  # (device folder, on_step)
_CAN_FILL = frozenset({"create", "open", "write", "mkdir", "fsync", "replace", "rename"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
BUILTIN_VERSION = "1.0.0"


@dataclass
class Boundary:
    """One write boundary: the operation, the path it touches, the step of the life."""

    op: str
    path: str
    step: str
    kill: str  # digest of the kill image taken just before the operation
    cut: str  # digest of the power-cut image taken just before the operation

    @property
    def area(self) -> str:
        """Which part of an update this write belongs to."""
        parts = self.path.split("/")
        if parts[0] not in ("downloads", "staging", "bundles"):
            return "commit"  # state.json, stats.json and their temp files
        if self.op in ("unlink", "rmdir"):
            return "cleanup"
        if parts[0] == "downloads":
            return "download"
        if parts[0] == "bundles" or self.op in ("rename", "replace"):
            return "swap"
        if self.op == "fsync" or (self.op == "mkdir" and len(parts) == 2):
            return "stage"
        return "unpack"  # unzipped files, or delta files fetched into staging


def _snapshot(root: Path) -> Image:
    image: Image = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        for name in dirs:
            image[os.path.normpath(os.path.join(rel, name))] = None
        for name in files:
            path = os.path.join(folder, name)
            with _REAL_OPEN(path, "rb") as handle:
                image[os.path.normpath(os.path.join(rel, name))] = handle.read()
    return image


def read_tree(root: Path) -> dict[str, bytes]:
    """The files under `root` (relative path -> bytes); empty when `root` is missing."""
    return {k: v for k, v in _snapshot(root).items() if v is not None}


def _digest(image: Image) -> str:
    hasher = hashlib.sha256()
    for path in sorted(image):
        data = image[path]
        hasher.update(f"{path}\0{'d' if data is None else len(data)}\0".encode())
        hasher.update(data or b"")
    return hasher.hexdigest()


_REAL_OPEN = builtins.open


class NoWaitClock:
    """Wall-clock time, but a sleep moves this clock forward instead of waiting."""

    def __init__(self) -> None:
        self._ahead = 0.0

    def now(self) -> float:
        return time.time() + self._ahead

    def sleep(self, seconds: float) -> None:
        self._ahead += max(0.0, seconds)


class _TrackedFile:
    """A file object whose every `write` is a boundary (the rest passes through)."""

    def __init__(self, inner: Any, recorder: DiskRecorder, path: str) -> None:
        self._inner, self._recorder, self._path = inner, recorder, path

    def write(self, data: Any) -> int:
        self._recorder.boundary("write", self._path)
        written: int = self._inner.write(data)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> _TrackedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._inner)


class DiskRecorder:
    """Records the write boundaries under `root` and the durable state at each (see module)."""

    def __init__(self, root: Path, full_at: int | None = None) -> None:
        self.root = str(root)
        self.root_ino = os.stat(root).st_ino
        self.listings: dict[int, dict[str, tuple[int, bool]]] = {self.root_ino: {}}
        self.contents: dict[int, bytes] = {}
        self.boundaries: list[Boundary] = []
        self.images: dict[str, Image] = {}
        self.step = ""
        self.images_on = full_at is None
        self.full_at = full_at  # index among the writes that can fill a disk
        self.fillable = 0
        self.fill_ops: list[str] = []

    # -- what is durable ------------------------------------------------------------------

    def durable_image(self) -> Image:
        image: Image = {}

        def walk(ino: int, rel: str) -> None:
            for name, (child, is_dir) in self.listings.get(ino, {}).items():
                path = f"{rel}{name}"
                if is_dir:
                    image[path] = None
                    walk(child, f"{path}/")
                else:
                    image[path] = self.contents.get(child, b"")

        walk(self.root_ino, "")
        return image

    def _record_fsync(self, fd: int, path: str) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            with os.scandir(path) as entries:
                self.listings[os.fstat(fd).st_ino] = {
                    e.name: (e.inode(), e.is_dir(follow_symlinks=False)) for e in entries
                }
        else:
            with _REAL_OPEN(f"/proc/self/fd/{fd}", "rb") as handle:
                self.contents[os.fstat(fd).st_ino] = handle.read()

    # -- boundaries -----------------------------------------------------------------------

    def _keep(self, image: Image) -> str:
        digest = _digest(image)
        self.images.setdefault(digest, image)
        return digest

    def boundary(self, op: str, path: str) -> None:
        """Before each write: raise ENOSPC at the one `full_at` names (the disk-full injection
        point), else take the kill and power-cut images when `images` is on."""
        exists = op == "mkdir" and os.path.isdir(path)  # EEXIST comes before ENOSPC
        if op in _CAN_FILL and not exists and self.full_at is not None:
            self.fillable += 1
            self.fill_ops.append(f"{op} {os.path.relpath(path, self.root)} ({self.step})")
            if self.fillable - 1 == self.full_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        if not self.images_on:
            return
        kill = self._keep(_snapshot(Path(self.root)))
        cut = self._keep(self.durable_image())
        rel = os.path.relpath(path, self.root)
        self.boundaries.append(Boundary(op, rel, self.step, kill, cut))

    def _under(self, path: Any, dir_fd: int | None = None) -> str | None:
        if isinstance(path, int):
            return None
        name = os.fsdecode(path)
        if dir_fd is not None:
            name = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name)
        full = os.path.abspath(name)
        return full if full == self.root or full.startswith(self.root + os.sep) else None

    @contextlib.contextmanager
    def recording(self) -> Iterator[DiskRecorder]:
        """Patch the file-system calls the agent makes; restore them on exit."""
        saved = {
            name: getattr(os, name)
            for name in ("replace", "rename", "unlink", "rmdir", "mkdir", "open", "fsync", "fdopen")
        }
        real_open = builtins.open

        def path_op(op: str) -> Callable[..., Any]:
            real = saved[op]

            def wrapped(path: Any, *args: Any, **kwargs: Any) -> Any:
                full = self._under(path, kwargs.get("dir_fd"))
                if full is not None:
                    self.boundary(op, full)
                return real(path, *args, **kwargs)

            return wrapped

        def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            full = self._under(path, kwargs.get("dir_fd"))
            if full is not None and flags & _WRITE_FLAGS:
                self.boundary("create" if flags & os.O_CREAT else "open", full)
            fd: int = saved["open"](path, flags, *args, **kwargs)
            return fd

        def fsync(fd: Any) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            full = self._under(os.readlink(f"/proc/self/fd/{number}"))
            if full is not None:
                self.boundary("fsync", full)
            saved["fsync"](fd)
            if full is not None:
                self._record_fsync(number, full)

        def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = saved["fdopen"](fd, mode, *args, **kwargs)
            full = self._under(os.readlink(f"/proc/self/fd/{fd}"))
            writing = any(c in mode for c in "wax+")
            return _TrackedFile(handle, self, full) if full is not None and writing else handle

        def file_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            full = self._under(file)
            writing = full is not None and any(c in mode for c in "wax+")
            if writing:
                assert full is not None
                self.boundary("create", full)
            handle = real_open(file, mode, *args, **kwargs)
            return _TrackedFile(handle, self, full) if writing and full is not None else handle

        patches: dict[str, Callable[..., Any]] = {
            op: path_op(op) for op in ("replace", "rename", "unlink", "rmdir", "mkdir")
        }
        patches.update(open=os_open, fsync=fsync, fdopen=fdopen)
        try:
            for name, fn in patches.items():
                setattr(os, name, fn)
            builtins.open = io.open = file_open  # pathlib opens through io.open
            yield self
        finally:
            for name, fn in saved.items():
                setattr(os, name, fn)
            builtins.open = io.open = real_open


@contextlib.contextmanager
def recording_folder() -> Iterator[Path]:
    """A scratch folder on tmpfs (no inode reuse, fsync is free); removed on exit.

    Raises:
        RuntimeError: there is no tmpfs at /dev/shm.
    """
    base = Path("/dev/shm")
    if not base.is_dir() or os.statvfs(base).f_fsid == os.statvfs(tempfile.gettempdir()).f_fsid:
        raise RuntimeError("the power-cut proof needs a tmpfs at /dev/shm")
    folder = Path(tempfile.mkdtemp(dir=base, prefix="otasim-powercut-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- recovery ----------------------------------------------------------------------------


@dataclass
class Recovery:
    """What one image gave when reopened and booted; `problem` is None when it recovered."""

    version: str | None
    problem: str | None


def materialize(image: Image, folder: Path) -> None:
    folder.mkdir(parents=True)
    for path in sorted(image):
        data = image[path]
        if data is None:
            (folder / path).mkdir(parents=True, exist_ok=True)
        else:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)


@dataclass
class Life:
    """An update's life against a server: the releases, their files, how to open the device."""

    open_device: Callable[..., SyncDevice]  # (folder, observer=None)
    files: dict[str, dict[str, bytes]]  # version -> bundle-relative path -> bytes
    steps: dict[str, tuple[str, str]] = field(default_factory=dict)  # step -> (old, new)


def check_image(image: Image, folder: Path, life: Life, step: str) -> Recovery:
    """Materialize `image` in `folder`, reopen it, check every bundle, boot, confirm."""
    materialize(image, folder)
    stats_raw = image.get(STATS_FILE)
    try:
        store, state, stats = DeviceStore.open(folder)
    except AgentError as exc:
        return Recovery(None, f"reopen failed: {exc}")
    if stats_raw is not None and [s.seq for s in stats] != [
        item["seq"] for item in read_json(folder / STATS_FILE) or []
    ]:
        return Recovery(None, "stats queue not loaded whole")
    for info in state.bundles.values():
        if info.status in ("pending", "success"):
            expected = life.files.get(info.version)
            if read_tree(store.bundle_dir(info.id)) != expected:
                return Recovery(None, f"bundle {info.version} is incomplete after reopen")
    old, new = life.steps[step]
    try:
        device = life.open_device(folder)
        device.launch()
        status = device.status()
        device.notify_app_ready(status.boot_id)
        pending = status.pending_stats
    except AgentError as exc:
        return Recovery(None, f"boot failed: {exc}")
    version = status.current.version
    if version not in (old, new):
        return Recovery(version, f"booted {version}, neither {old} nor {new}")
    if status.current.path is not None:
        index = (status.current.path / "index.html").read_bytes()
        if index != life.files[version]["index.html"]:
            return Recovery(version, f"{version} boots a wrong index.html")
    try:
        delivered = device.flush_stats()
    except AgentError as exc:
        return Recovery(version, f"stats flush failed: {exc}")
    if not delivered:
        return Recovery(version, f"{pending} queued stats were not delivered")
    return Recovery(version, None)


# -- the proof ---------------------------------------------------------------------------


@dataclass
class PowerCutFigures:
    boundaries: int
    by_area: dict[str, int]
    by_step: dict[str, int]
    kill_images: int
    cut_images: int
    kill_recovered: int
    cut_recovered: int
    distinct_images: int  # (image, step) pairs reopened and booted
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "write_boundaries": self.boundaries,
            "by_area": self.by_area,
            "by_step": self.by_step,
            "kill_images": self.kill_images,
            "kill_recovered": self.kill_recovered,
            "power_cut_images": self.cut_images,
            "power_cut_recovered": self.cut_recovered,
            "distinct_images": self.distinct_images,
            "problems": self.problems,
        }


def _dist(version: str) -> dict[str, bytes]:
    return {
        "index.html": f"<html>{version}</html>".encode(),
        "js/app.js": f"console.log('{version}');".encode() * 300,
        "js/vendor.js": b"/* shared by every release */" * 200,
        "assets/logo.bin": hashlib.sha256(version.encode()).digest() * 64,
    }


@contextlib.contextmanager
def reference_life(work: Path) -> Iterator[tuple[Life, LiveFn]]:
    """An embedded reference server with three releases to publish, and the life to run.

    Yields (life, live): `live(folder, on_step)` runs builtin 1.0.0 -> 1.0.1 (full zip,
    encrypted and signed) -> 1.0.2 (delta manifest, signed) -> 1.0.3 (full zip, never
    confirmed) -> rolled back to 1.0.2, naming each step with `on_step` before it starts.
    """
    from simulator.publish import publish
    from simulator.release import create_keys
    from simulator.server.client import AdminClient
    from simulator.server.embedded import run_server

    private_pem, public_pem = create_keys()
    app_id = "com.otasim.prove"
    identity = DeviceIdentity(str(uuid.UUID(int=15)), app_id, "android", BUILTIN_VERSION)
    files = {v: _dist(v) for v in ("1.0.1", "1.0.2", "1.0.3")}
    port = make_sync_port()
    with run_server() as server, AdminClient(server.url, server.admin_key) as admin:
        config = AgentConfig(
            update_url=f"{server.url}/updates",
            stats_url=f"{server.url}/stats",
            channel_url=f"{server.url}/channel_self",
            public_key=public_pem.decode(),
        )

        def open_device(folder: Path, observer: AgentObserver | None = None) -> SyncDevice:
            return SyncDevice.open(
                folder, config, identity, port, clock=NoWaitClock(), observer=observer
            )

        def release(version: str, delta: bool) -> None:
            dist = work / f"dist-{version}"
            for name, data in files[version].items():
                (dist / name).parent.mkdir(parents=True, exist_ok=True)
                (dist / name).write_bytes(data)
            publish(
                admin,
                app_id=app_id,
                version=version,
                channel="production",
                source=dist,
                private_pem=private_pem,
                delta=delta,
            )

        life = Life(open_device, files)

        def live(folder: Path, on_step: Callable[[str], None]) -> None:
            for old, new, delta in (
                (BUILTIN_VERSION, "1.0.1", False),
                ("1.0.1", "1.0.2", True),
                ("1.0.2", "1.0.3", False),
            ):
                release(new, delta)
                step = f"{old}->{new}"
                life.steps[step] = (old, new)
                on_step(step)
                device = open_device(folder)
                device.launch()
                device.background()
                if new != "1.0.3":
                    device.notify_app_ready(device.status().boot_id)
                device.flush_stats(max_wait_s=0)
            step = "rollback 1.0.3->1.0.2"
            life.steps[step] = ("1.0.3", "1.0.2")
            on_step(step)
            device = open_device(folder)
            device.launch()
            device.flush_stats(max_wait_s=0)

        try:
            yield life, live
        finally:
            port.close()


def prove_power_cuts() -> PowerCutFigures:
    """Record the life's write boundaries, then reopen and boot every kill and power-cut image."""
    with recording_folder() as scratch, reference_life(scratch / "work") as (life, live):
        (scratch / "work").mkdir()
        device_folder = scratch / "device"
        device_folder.mkdir()
        recorder = DiskRecorder(device_folder)

        def on_step(step: str) -> None:
            recorder.step = step

        with recorder.recording():
            live(device_folder, on_step)
        recorder.boundary("end", str(device_folder))  # the kill or cut after the last write
        problems: list[str] = []
        recovered = {"kill": 0, "cut": 0}
        checked: dict[tuple[str, str], Recovery] = {}
        for number, boundary in enumerate(recorder.boundaries):
            for kind, digest in (("kill", boundary.kill), ("cut", boundary.cut)):
                key = (digest, boundary.step)
                if key not in checked:
                    folder = scratch / f"check-{len(checked)}"
                    checked[key] = check_image(recorder.images[digest], folder, life, boundary.step)
                    shutil.rmtree(folder, ignore_errors=True)
                outcome = checked[key]
                if outcome.problem is None:
                    recovered[kind] += 1
                else:
                    problems.append(
                        f"{kind} before write {number} ({boundary.op} {boundary.path}, "
                        f"{boundary.step}): {outcome.problem}"
                    )
        writes = recorder.boundaries[:-1]
        return PowerCutFigures(
            boundaries=len(recorder.boundaries) - 1,
            by_area=dict(sorted(Counter(b.area for b in writes).items())),
            by_step=dict(Counter(b.step for b in writes)),
            kill_images=len(recorder.boundaries),
            cut_images=len(recorder.boundaries),
            kill_recovered=recovered["kill"],
            cut_recovered=recovered["cut"],
            distinct_images=len(checked),
            problems=problems,
        )


@dataclass
class DiskFullFigures:
    injection_points: int  # writes of a fresh device's first update that can meet a full disk
    typed_errors: int  # the fill surfaced as a LocalError out of the device call
    reported: int  # the device carried on and queued a failure stat
    recovered: int  # reopened: old or new, bundles complete, staging freed
    succeeded_after: int  # with space back, the update installed and booted
    problems: list[str]
    absorbed: list[str] = field(default_factory=list)  # fills with no error and no stat

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def prove_disk_full() -> DiskFullFigures:
    """Fill the disk at each write of a fresh device's first update, one write per run: the
    device must fail with a typed error or a failure stat, keep booting, free its staging,
    and install the update once space returns."""
    with recording_folder() as scratch, reference_life(scratch / "work") as (life, live):
        (scratch / "work").mkdir()
        live(scratch / "life", lambda step: None)  # publishes the releases; 1.0.3 is served
        latest = "1.0.3"
        life.steps["fresh"] = (BUILTIN_VERSION, latest)
        counting = DiskRecorder(_fresh(scratch / "count"), full_at=-1)
        with counting.recording():
            _first_update(life, Path(counting.root))
        figures = DiskFullFigures(counting.fillable, 0, 0, 0, 0, [])
        for point in range(counting.fillable):
            folder = _fresh(scratch / f"full-{point}")
            recorder = DiskRecorder(folder, full_at=point)
            problem = None
            with recorder.recording():
                try:
                    typed, stats = _first_update(life, folder)
                except Exception as exc:
                    typed, stats = False, []
                    problem = f"unhandled {type(exc).__name__}: {exc}"
            reported = not typed and any(a.endswith(("_fail", "_space")) for a in stats)
            figures.typed_errors += typed
            figures.reported += reported
            if not typed and not reported and problem is None:
                figures.absorbed.append(counting.fill_ops[point])
            leftovers = list((folder / "staging").glob("*"))
            if problem is None and leftovers:
                problem = f"staging not freed: {[p.name for p in leftovers]}"
            outcome = check_image(_snapshot(folder), scratch / f"check-{point}", life, "fresh")
            if problem is None and outcome.problem is not None:
                problem = outcome.problem
            figures.recovered += outcome.problem is None
            try:
                device = life.open_device(folder)
                device.launch()
                device.background()
                device.notify_app_ready(device.status().boot_id)
                ok = device.status().current.version == latest
            except AgentError as exc:
                ok, problem = False, problem or f"after space returned: {exc}"
            figures.succeeded_after += ok
            if problem is None and not ok:
                problem = "the update did not install once space returned"
            if problem is not None:
                where = counting.fill_ops[point]
                figures.problems.append(f"disk full at write {point} ({where}): {problem}")
        return figures


def _fresh(folder: Path) -> Path:
    folder.mkdir()
    return folder


def _first_update(life: Life, folder: Path) -> tuple[bool, list[str]]:
    """A fresh device's first update, each app call made whatever the one before raised (the
    app runs on); then a foreground, after the disk has room again. Returns whether a call
    raised a typed `AgentError`, and the stat actions queued."""
    watch = _StatWatch()
    typed = False
    try:
        device = life.open_device(folder, watch)
    except AgentError:  # the folder could not be created: the app opens it again later
        typed = True
        device = life.open_device(folder, watch)
    for call in (device.launch, device.background, device.notify_app_ready, device.foreground):
        try:
            call()
        except AgentError:
            typed = True
    return typed, watch.actions


class _StatWatch(AgentObserver):
    def __init__(self) -> None:
        self.actions: list[str] = []

    def on_stat(self, action: str, version_name: str) -> None:
        self.actions.append(action)
