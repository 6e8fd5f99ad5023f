"""Property tests: hostile zips write nothing outside staging; verify(encrypt(zip)) round-trips."""

from __future__ import annotations

import re
import stat
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent.bundles.unzip import UnzipLimits, safe_unzip
from agent.bundles.zipbundle import unpack_file
from agent.errors import VerificationError
from agent.security.verify import plan_bundle_verification
from simulator.release import encrypt_bundle, zip_dist

from .zips import make_zip, symlink_info, tree

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SAFE = st.text("abcXYZ019-_.", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))
HOSTILE = st.sampled_from(["..", "/", "C:", "\\", "a\\..", "\x00", "", ".", "../.."])
NAME = st.lists(st.one_of(SAFE, SAFE, SAFE, HOSTILE), min_size=1, max_size=4).map("/".join)
ENTRY = st.tuples(
    st.one_of(NAME, NAME.map(symlink_info)),
    st.one_of(st.binary(max_size=64), st.just(bytes(300_000))),
)


def _infos(path: Path) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as zf:
        return zf.infolist()


def _hostile(info: zipfile.ZipInfo) -> bool:
    """The spec, independently of the checker: traversal, absolute, Windows, NUL, link, bomb."""
    name = info.orig_filename
    return (
        name.startswith("/")
        or any(c in name for c in "\\\x00")
        or re.match("[A-Za-z]:", name) is not None
        or ".." in name.split("/")
        or stat.S_ISLNK(info.external_attr >> 16)
        or info.file_size >= 100_000
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in root.rglob("*")
    }


@SETTINGS
@given(entries=st.lists(ENTRY, min_size=1, max_size=6))
def test_hostile_zips_write_nothing_outside_staging(entries):
    with tempfile.TemporaryDirectory() as sandbox:
        root = Path(sandbox)
        (root / "inside").mkdir()
        (root / "bundle.zip").write_bytes(make_zip(entries))
        (root / "keep.txt").write_text("precious")
        before = snapshot(root)
        dest = root / "inside" / "stage"
        limits = UnzipLimits(max_total_bytes=1_000_000, ratio_min_bytes=100_000, max_ratio=50)
        try:
            safe_unzip(root / "bundle.zip", dest, limits)
        except VerificationError:
            assert not dest.exists()
        else:
            assert not any(_hostile(info) for info in _infos(root / "bundle.zip"))
            assert all(not p.is_symlink() for p in dest.rglob("*"))
        after = {k: v for k, v in snapshot(root).items() if not k.startswith("inside/stage")}
        assert after == before


TREE = st.dictionaries(
    st.lists(SAFE, min_size=1, max_size=3).map("/".join),
    st.binary(max_size=3000),
    min_size=1,
    max_size=8,
)


def _consistent(files: dict[str, bytes]) -> bool:
    """No path is both a file and a folder, and no two differ only in case."""
    folded = {k.casefold() for k in files}
    prefixes = {
        "/".join(k.casefold().split("/")[:i]) for k in files for i in range(1, k.count("/") + 1)
    }
    return len(folded) == len(files) and not folded & prefixes


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=TREE, fmt=st.sampled_from(["v3", "legacy"]))
def test_verify_of_encrypt_round_trips_any_tree(private_pem, public_key, files, fmt):
    files = {"index.html": b"<html>", **files}
    assume(_consistent(files))
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        for name, data in files.items():
            (root / "dist" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "dist" / name).write_bytes(data)
        zip_dist(root / "dist", root / "b.zip")
        enc = encrypt_bundle(root / "b.zip", private_pem, root / "e.zip", checksum_format=fmt)
        plan = plan_bundle_verification(enc.checksum, enc.session_key, public_key)
        unpack_file(enc.path, root / "out", plan)
        assert tree(root / "out") == files
        with zipfile.ZipFile(root / "b.zip") as zf:
            assert sorted(zf.namelist()) == sorted(files)
