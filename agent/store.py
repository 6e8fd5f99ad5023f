"""The device's disk: bundle folders, the state file, the stats queue, partial downloads.

```
<folder>/state.json          DeviceState (lifecycle.to_json)
<folder>/stats.json          pending stats events (no file: none pending)
<folder>/bundles/<id>/       unpacked bundles, moved in whole by one rename
<folder>/downloads/<id>.part raw bytes received so far (resumed with HTTP Range)
<folder>/staging/<id>/       a bundle being unpacked; never survives a reopen
```

`downloads/` and `staging/` exist only while a download needs them: `open` removes
`staging/`, and `downloads/` when it holds no resumable download (one inode and one dentry
less each for the kernel to hold per idle device).

Every file is written by `atomic_write` (temp file in the same folder, fsync, `os.replace`,
fsync the folder), and every bundle enters `bundles/` by one directory rename once its whole
tree is fsynced (`sync_tree`), so a kill or a power cut at any instant leaves either the old
or the new version of each (`simulator.prove.powercut` checks it at every write). A store
that is not durable (a simulated fleet's) skips the fsyncs and holds its state and stats
commits until its driver flushes them at the end of each lifecycle call (`DeviceStore.flush`).
`DeviceStore.open` then sweeps what a kill may leave behind (temp files, staging folders,
bundles the state does not name, partial downloads no bundle resumes) and repairs the state
against the folders it finds, so the device always has a bootable bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.core.lifecycle import DeviceState, from_json, reconcile, to_json
from agent.errors import LocalError
from agent.protocol.base import StatEvent

STATE_FILE = "state.json"
STATS_FILE = "stats.json"


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """Make a folder's whole content durable: fsync every file and folder, deepest first.

    Before a folder is moved into place by one rename: without it a power cut after the
    rename (made durable by `fsync_dir` of the new parent) can leave the entry pointing at
    empty files or a folder whose entries were never written.
    """
    for parent, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(parent, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(parent))


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """The one commit primitive: after a kill, `path` holds either the old or the new bytes.

    The temporary file has a fixed name (`.<name>.tmp`, not `tempfile.mkstemp`'s random one,
    which cost more than the write): a device folder has one writer at a time.

    `durable=False` skips the two fsyncs: still atomic against a killed process (the rename is
    atomic in the kernel), no longer against a power loss of the host. For simulated fleets,
    where an fsync (~3.5 ms here) per commit would bound a whole process.

    Raises:
        LocalError: the disk refused the write (action `disk_write_fail`).
    """
    tmp = path.with_name(f".{path.name}.tmp")  # one writer per folder; swept by `open`
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LocalError("disk_write_fail", f"cannot write {path}: {exc}") from exc


def read_json(path: Path) -> Any:
    """Read a JSON file written by `atomic_write`; None when it does not exist.

    Raises:
        LocalError: the file exists but is not JSON (action `state_corrupt`).
    """
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LocalError("state_corrupt", f"cannot read {path}: {exc}") from exc


FreeSpace = Callable[[Path], int]  # a folder -> bytes free on its file system


def disk_free(folder: Path) -> int:
    """What the file system holding `folder` has free (the store's default `free_space`)."""
    return shutil.disk_usage(folder).free


class DeviceStore:
    """One device folder. Open it with `DeviceStore.open`."""

    __slots__ = (
        "_encoded",
        "_held_state",
        "_held_stats",
        "_stats_on_disk",
        "bundles",
        "downloads",
        "durable",
        "folder",
        "free_space",
        "staging",
    )

    def __init__(
        self, folder: Path, *, durable: bool = True, free_space: FreeSpace = disk_free
    ) -> None:
        self.folder = folder
        self.durable = durable
        self.free_space = free_space  # the injection point of a full disk (the simulator's)
        self.bundles = folder / "bundles"
        self.downloads = folder / "downloads"
        self.staging = folder / "staging"
        self._encoded: dict[int, tuple[StatEvent, bytes]] = {}  # seq -> event, its JSON
        # Not durable: the last commit of each file since `flush` (None: nothing held).
        self._held_state: DeviceState | None = None
        self._held_stats: Sequence[StatEvent] | None = None
        # False: no stats file (the store is its folder's one writer), so an empty queue
        # has nothing to remove: a queue filled and sent in one lifecycle call is never
        # written, and asking the disk to remove a file that is not there costs an error.
        self._stats_on_disk = True

    @classmethod
    def open(
        cls, folder: Path, *, durable: bool = True, free_space: FreeSpace = disk_free
    ) -> tuple[DeviceStore, DeviceState, list[StatEvent]]:
        """Open (creating if needed) a device folder, clean it, and load its state and stats.

        `durable`: fsync every commit (see `atomic_write`). `free_space`: how many bytes the
        device's disk has free, asked before and during a download (unpacking asks the disk).

        Raises:
            LocalError: the folder cannot be created or its files are corrupt.
        """
        store = cls(Path(folder), durable=durable, free_space=free_space)
        try:
            # One listing of the folder answers what a reopen asks of it: which files and
            # folders exist (a missing stats file is the common case: no failed open per
            # reopen), what a kill left behind.
            names = _listing(store.folder)
            if names is None:
                store.folder.mkdir(parents=True, exist_ok=True)
                names = set()
            bundles = _listing(store.bundles) if "bundles" in names else None
            if bundles is None:  # downloads/, staging/: when needed
                store.bundles.mkdir(exist_ok=True)
        except OSError as exc:
            raise LocalError("disk_write_fail", f"cannot create {folder}: {exc}") from exc
        raw = read_json(store.folder / STATE_FILE) if STATE_FILE in names else None
        try:
            state = DeviceState() if raw is None else from_json(raw)
        except ValueError as exc:
            raise LocalError("state_corrupt", f"{folder / STATE_FILE}: {exc}") from exc
        store._stats_on_disk = STATS_FILE in names
        stats = store._load_stats() if store._stats_on_disk else []
        present = store._sweep(state, names, bundles or set())
        repaired = reconcile(state, present)
        if repaired != state:
            store.commit_state(repaired)
            store.flush()
        return store, repaired, stats

    def _load_stats(self) -> list[StatEvent]:
        raw = read_json(self.folder / STATS_FILE) or []
        try:
            return [StatEvent(**item) for item in raw]
        except TypeError as exc:
            raise LocalError("state_corrupt", f"{self.folder / STATS_FILE}: {exc}") from exc

    def _sweep(self, state: DeviceState, names: set[str], bundles: set[str]) -> list[str]:
        """Remove what an interrupted run left (temp files, staging, unnamed bundles, partials)
        given the names in the device folder and in `bundles/`; the bundle folders kept."""
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                (self.folder / name).unlink(missing_ok=True)
        if "staging" in names:
            _remove(self.staging)
        installed = {k for k, v in state.bundles.items() if v.status != "downloading"}
        present = []
        for name in sorted(bundles):
            if name in installed:
                present.append(name)
            else:
                _remove(self.bundles / name)
        resumable = {k for k, v in state.bundles.items() if v.status == "downloading"}
        if "downloads" in names and self.downloads.is_dir():
            for part in self.downloads.iterdir():
                if part.name.split(".")[0] not in resumable:
                    _remove(part)
            with contextlib.suppress(OSError):  # kept while it holds a resumable download
                self.downloads.rmdir()
        return present

    def commit_state(self, state: DeviceState) -> None:
        """Write `state` with `atomic_write` (not durable: held until `flush`).

        Raises:
            LocalError: the disk refused the write (`disk_write_fail`).
        """
        if self.durable:
            self._write_state(state)
        else:
            self._held_state = state

    def commit_stats(self, events: Sequence[StatEvent]) -> None:
        """Write the pending stats queue with `atomic_write` (not durable: held until `flush`).

        Raises:
            LocalError: the disk refused the write (`disk_write_fail`).
        """
        if self.durable:
            self._write_stats(events)
        else:
            self._held_stats = events

    def flush(self) -> None:
        """Write the commits a store that is not durable holds (the last of each file).

        A device that need not survive a power cut (`durable=False`: a simulated fleet, whose
        kills fall between lifecycle calls) commits once per lifecycle call instead of once
        per change: its driver flushes when each call ends, so a kill between calls finds on
        disk exactly what committing every change would have left (what happened inside the
        call, two to five commits of each file, costs one write). A durable store holds
        nothing: each commit is written, fsynced, before the next effect.

        Raises:
            LocalError: the disk refused the write (`disk_write_fail`); what was not written
                stays held for the next flush.
        """
        if self._held_state is not None:
            self._write_state(self._held_state)
            self._held_state = None
        if self._held_stats is not None:
            self._write_stats(self._held_stats)
            self._held_stats = None

    def _write_state(self, state: DeviceState) -> None:
        data = json.dumps(to_json(state)).encode()
        atomic_write(self.folder / STATE_FILE, data, durable=self.durable)

    def _write_stats(self, events: Sequence[StatEvent]) -> None:
        """Write the whole pending queue (up to 200 events) with `atomic_write`; an empty
        queue removes the file (a missing file reads as an empty queue).

        The queue changes by one appended event or one sent batch between commits, so each
        event is encoded to JSON once and its bytes are reused while it stays queued
        (re-encoding the whole queue at every commit was a quarter of a fleet's CPU).

        Raises:
            LocalError: the disk refused the write (`disk_write_fail`).
        """
        if not events:  # an empty queue is no file: one inode and one page less per device
            self._encoded = {}
            if self._stats_on_disk:
                _unlink(self.folder / STATS_FILE, durable=self.durable)
                self._stats_on_disk = False
            return
        encoded: dict[int, tuple[StatEvent, bytes]] = {}
        parts: list[bytes] = []
        for event in events:
            hit = self._encoded.get(event.seq)
            if hit is None or hit[0] is not event:
                hit = (event, _encode_event(event))
            encoded[event.seq] = hit
            parts.append(hit[1])
        self._encoded = encoded
        data = b"[" + b",".join(parts) + b"]"
        atomic_write(self.folder / STATS_FILE, data, durable=self.durable)
        self._stats_on_disk = True

    def free_bytes(self) -> int:
        """Bytes free on the device's disk, as `free_space` answers."""
        return self.free_space(self.folder)

    def bundle_dir(self, bundle_id: str) -> Path:
        return self.bundles / bundle_id

    def part_path(self, bundle_id: str) -> Path:
        return self.downloads / f"{bundle_id}.part"

    def zip_path(self, bundle_id: str) -> Path:
        return self.downloads / f"{bundle_id}.zip"

    def fresh_staging(self, bundle_id: str) -> Path:
        """An empty staging folder for `bundle_id` (any previous attempt removed).

        Raises:
            LocalError: the folder cannot be created (`insufficient_disk_space` when full).
        """
        path = self.staging / bundle_id
        _remove(path)
        try:
            path.mkdir(parents=True)
        except OSError as exc:
            raise LocalError.from_os_error(exc, "unzip_fail", "creating staging") from exc
        return path

    def install(self, bundle_id: str, staged: Path) -> Path:
        """Move a fully unpacked bundle into place with one rename, then drop its download.

        With `durable`, the staged tree is fsynced before the rename and `bundles/` after it.

        Raises:
            LocalError: the rename failed (action `set_fail`).
        """
        target = self.bundle_dir(bundle_id)
        try:
            if self.durable:
                sync_tree(staged)
            _remove(target)
            os.replace(staged, target)
            if self.durable:
                fsync_dir(self.bundles)
        except OSError as exc:
            raise LocalError("set_fail", f"cannot install bundle {bundle_id}: {exc}") from exc
        self.part_path(bundle_id).unlink(missing_ok=True)
        self.zip_path(bundle_id).unlink(missing_ok=True)
        return target

    def delete_bundle(self, bundle_id: str) -> None:
        """Remove everything stored for a bundle the state no longer names."""
        for path in (
            self.bundle_dir(bundle_id),
            self.staging / bundle_id,
            self.part_path(bundle_id),
            self.zip_path(bundle_id),
        ):
            _remove(path)


def _encode_event(event: StatEvent) -> bytes:
    """A stats event as JSON (the fields of `dataclasses.asdict`, without its deep copy)."""
    return json.dumps(vars(event) | {"metadata": dict(event.metadata)}).encode()


def _unlink(path: Path, *, durable: bool) -> None:
    """Remove a file `atomic_write` wrote (a kill leaves it or not: both read the same).

    Raises:
        LocalError: the file exists and cannot be removed (action `disk_write_fail`).
    """
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LocalError("disk_write_fail", f"cannot remove {path}: {exc}") from exc
    if durable:
        fsync_dir(path.parent)


def _listing(folder: Path) -> set[str] | None:
    """The names in `folder`; None when it does not exist."""
    try:
        return set(os.listdir(folder))
    except FileNotFoundError:
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
