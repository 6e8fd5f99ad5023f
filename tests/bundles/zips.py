"""Build ordinary and hostile zips for the unzip tests."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path


def make_zip(entries, *, method=zipfile.ZIP_DEFLATED, tweak=None) -> bytes:
    """`entries`: (name, data) pairs, or ZipInfo/data pairs; `tweak(zf)` runs before close."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names are what some tests want
        for name, data in entries:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            info.compress_type = method
            zf.writestr(info, data)
        if tweak is not None:
            tweak(zf)
    return buf.getvalue()


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return info


def write(tmp: Path, data: bytes, name: str = "bundle.zip") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root, by relative posix path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
