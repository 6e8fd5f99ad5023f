"""Safe unzip of a verified bundle into a staging folder.

Every entry is checked before the first byte is written, so a hostile archive writes nothing:
no absolute paths, `..`, Windows drive paths or backslashes, NUL bytes, symlinks or special
files, duplicate names (also when they differ only in case, as on iOS's file system),
file/folder clashes, encrypted entries, or compression methods devices cannot read. Caps on
entry count, total size and compression ratio stop zip bombs; the size cap is also enforced on
the bytes really written. On any failure the staging folder is left as it was found (absent or
empty). Like the plugin, a bundle whose only top-level entry is a folder (ignoring `__MACOSX`
and dot-names) is unflattened: that folder's content becomes the bundle root.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.errors import LocalError, VerificationError

MiB: Final = 1024 * 1024
COPY_CHUNK_BYTES: Final = 256 * 1024
DEVICE_COMPRESSION: Final = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
_DRIVE: Final = re.compile(r"^[A-Za-z]:")
# What zipfile raises on a damaged archive (ValueError covers undecodable names).
CORRUPT_ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    ValueError,
    struct.error,
    NotImplementedError,
)


@dataclass(frozen=True)
class UnzipLimits:
    """Zip-bomb caps. `max_ratio` applies to entries of at least `ratio_min_bytes`."""

    max_total_bytes: int = 512 * MiB
    max_files: int = 20_000
    max_ratio: float = 200.0
    ratio_min_bytes: int = 1 * MiB


DEFAULT_LIMITS: Final = UnzipLimits()


@dataclass(frozen=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]

    @property
    def is_dir(self) -> bool:
        return self.info.is_dir()


def safe_unzip(zip_path: Path, dest: Path, limits: UnzipLimits = DEFAULT_LIMITS) -> None:
    """Extract the bundle zip at `zip_path` into `dest`, refusing anything unsafe.

    Raises:
        ValueError: `dest` exists and is not an empty directory (its parent must exist).
        VerificationError: `windows_path_fail` (backslash, drive letter), `canonical_path_fail`
            (absolute, `..`, NUL, symlink or special file), `directory_path_fail` (a file where
            a folder must go), `unzip_fail` (not a zip, corrupt, duplicate names, encrypted,
            unsupported method, empty, over a limit).
        LocalError: `insufficient_disk_space` when the disk cannot hold the unpacked size or
            fills while writing; `unzip_fail` when writing fails otherwise (permissions).
    """
    created = not dest.exists()
    if not created and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"unzip destination {dest} must not exist or be an empty folder")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            entries = _unflatten(_plan(archive.infolist(), limits))
            _check_room(dest.parent, sum(e.info.file_size for e in entries))
            dest.mkdir(exist_ok=True)
            _extract(archive, entries, dest, limits)
    except (VerificationError, LocalError):
        _clear(dest, created)
        raise
    except CORRUPT_ZIP_ERRORS as exc:
        _clear(dest, created)
        raise VerificationError("unzip_fail", f"corrupt zip: {exc}") from None
    except OSError as exc:
        _clear(dest, created)
        raise LocalError.from_os_error(exc, "unzip_fail", "write the bundle") from None
    except BaseException:
        _clear(dest, created)
        raise


def _check_room(folder: Path, size: int) -> None:
    """Refuse to unpack what the disk cannot hold (the size cap still applies while writing).

    Raises:
        LocalError: `insufficient_disk_space`.
    """
    free = shutil.disk_usage(folder).free
    if free < size:
        raise LocalError("insufficient_disk_space", f"{free} bytes free, {size} to unpack")


def _plan(infos: list[zipfile.ZipInfo], limits: UnzipLimits) -> list[_Entry]:
    if not infos:
        raise VerificationError("unzip_fail", "the zip is empty")
    if len(infos) > limits.max_files:
        raise VerificationError("unzip_fail", f"{len(infos)} entries (limit {limits.max_files})")
    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        raise VerificationError(
            "unzip_fail", f"{total} bytes uncompressed (limit {limits.max_total_bytes})"
        )
    entries = [_Entry(info, _check_entry(info, limits)) for info in infos]
    _check_clashes(entries)
    return entries


def _check_entry(info: zipfile.ZipInfo, limits: UnzipLimits) -> tuple[str, ...]:
    parts = check_relative_path(info.orig_filename)
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        kind = "symlink" if stat.S_ISLNK(mode) else "special file"
        raise VerificationError("canonical_path_fail", f"{kind} entry {info.filename!r}")
    if info.flag_bits & 0x1:
        raise VerificationError("unzip_fail", f"encrypted entry {info.filename!r}")
    if info.compress_type not in DEVICE_COMPRESSION:
        raise VerificationError(
            "unzip_fail", f"entry {info.filename!r} uses compression method {info.compress_type}"
        )
    if info.file_size >= limits.ratio_min_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise VerificationError(
                "unzip_fail",
                f"entry {info.filename!r} expands {ratio:.0f}x (limit {limits.max_ratio:.0f}x)",
            )
    return parts


def check_relative_path(name: str) -> tuple[str, ...]:
    """Check a bundle-relative path as the plugin does; return its parts (no '' or '.').

    Raises:
        VerificationError: `windows_path_fail` (backslash, drive letter) or
            `canonical_path_fail` (NUL, absolute, `..`, empty).
    """
    if "\\" in name or _DRIVE.match(name):
        raise VerificationError("windows_path_fail", f"Windows path {name!r}")
    if "\0" in name:
        raise VerificationError("canonical_path_fail", f"NUL byte in {name!r}")
    if name.startswith("/"):
        raise VerificationError("canonical_path_fail", f"absolute path {name!r}")
    segments = name.split("/")
    if ".." in segments:
        raise VerificationError("canonical_path_fail", f"path traversal in {name!r}")
    parts = tuple(s for s in segments if s not in ("", "."))
    if not parts:
        raise VerificationError("canonical_path_fail", f"empty path {name!r}")
    return parts


def _check_clashes(entries: list[_Entry]) -> None:
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for entry in entries:
        key = tuple(p.casefold() for p in entry.parts)
        if entry.is_dir:
            dirs.add(key)
        elif key in files:
            raise VerificationError("unzip_fail", f"duplicate entry {entry.info.filename!r}")
        else:
            files.add(key)
        dirs.update(key[:i] for i in range(1, len(key)))
    clash = files & dirs
    if clash:
        raise VerificationError(
            "directory_path_fail", f"{'/'.join(min(clash))!r} is both a file and a folder"
        )


def _unflatten(entries: list[_Entry]) -> list[_Entry]:
    kept = [e for e in entries if not _ignored_top(e.parts[0])]
    tops = {e.parts[0] for e in kept}
    if len(tops) != 1 or any(len(e.parts) == 1 and not e.is_dir for e in kept):
        return entries
    return [_Entry(e.info, e.parts[1:]) for e in kept if len(e.parts) > 1]


def _ignored_top(name: str) -> bool:
    return name.startswith("__MACOSX") or name.startswith(".")


def _extract(
    archive: zipfile.ZipFile, entries: list[_Entry], dest: Path, limits: UnzipLimits
) -> None:
    written = 0
    for entry in entries:
        target = dest.joinpath(*entry.parts)
        if entry.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        written += _copy_entry(archive, entry.info, target, limits.max_total_bytes - written)


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    count = 0
    with archive.open(info) as src, os.fdopen(os.open(target, flags, 0o644), "wb") as out:
        while chunk := src.read(COPY_CHUNK_BYTES):
            count += len(chunk)
            if count > info.file_size or count > budget:
                raise VerificationError(
                    "unzip_fail", f"entry {info.filename!r} expands past its declared size"
                )
            out.write(chunk)
    return count


def _clear(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
