import os
import zipfile

import pytest

from agent.bundles.unzip import UnzipLimits, safe_unzip
from agent.errors import VerificationError

from .zips import make_zip, symlink_info, tree, write

GOOD = [("index.html", b"<html>"), ("js/app.js", b"console.log(1)"), ("assets/a/b.css", b"b{}")]


def test_extracts_files(tmp_path):
    safe_unzip(write(tmp_path, make_zip(GOOD)), tmp_path / "out")
    assert tree(tmp_path / "out") == dict(GOOD)


def test_directory_entries_and_dot_segments_are_fine(tmp_path):
    data = make_zip([("js/", b""), ("./index.html", b"i"), ("js//a.js", b"a")])
    safe_unzip(write(tmp_path, data), tmp_path / "out")
    assert tree(tmp_path / "out") == {"index.html": b"i", "js/a.js": b"a"}


def test_empty_existing_destination_is_used(tmp_path):
    (tmp_path / "out").mkdir()
    safe_unzip(write(tmp_path, make_zip(GOOD)), tmp_path / "out")
    assert "index.html" in tree(tmp_path / "out")


def test_non_empty_destination_is_misuse(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    with pytest.raises(ValueError):
        safe_unzip(write(tmp_path, make_zip(GOOD)), tmp_path / "out")
    assert tree(tmp_path / "out") == {"keep": b"x"}


def test_single_top_folder_is_unflattened(tmp_path):
    data = make_zip(
        [("dist/index.html", b"i"), ("dist/js/a.js", b"a"), ("__MACOSX/x", b""), (".DS_Store", b"")]
    )
    safe_unzip(write(tmp_path, data), tmp_path / "out")
    assert tree(tmp_path / "out") == {"index.html": b"i", "js/a.js": b"a"}


@pytest.mark.parametrize(
    "entries",
    [
        [("index.html", b"i"), ("dist/a.js", b"a")],  # root index.html
        [("dist/a.js", b"a"), ("other/b.js", b"b")],  # two top folders
        [("app.js", b"a")],  # single top file
    ],
)
def test_no_unflatten_otherwise(tmp_path, entries):
    safe_unzip(write(tmp_path, make_zip(entries)), tmp_path / "out")
    assert tree(tmp_path / "out") == dict(entries)


def _deflate_bomb() -> bytes:
    return make_zip([("index.html", b"i"), ("bomb.bin", bytes(4 * 1024 * 1024))])


def _nul_name() -> bytes:
    return make_zip([("aXb.js", b"x")]).replace(b"aXb.js", b"a\x00b.js")


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


def _encrypted_flag(zf: zipfile.ZipFile) -> None:
    zf.filelist[-1].flag_bits |= 0x1


def _lying_size(zf: zipfile.ZipFile) -> None:
    zf.filelist[-1].file_size = 10


HOSTILE = {
    "traversal": (make_zip([("../evil.js", b"x")]), "canonical_path_fail"),
    "deep-traversal": (make_zip([("a/../../evil.js", b"x")]), "canonical_path_fail"),
    "absolute": (make_zip([("/tmp/evil.js", b"x")]), "canonical_path_fail"),
    "backslash": (make_zip([("..\\evil.js", b"x")]), "windows_path_fail"),
    "drive": (make_zip([("C:evil.js", b"x")]), "windows_path_fail"),
    "nul": (_nul_name(), "canonical_path_fail"),
    "symlink": (
        make_zip([("index.html", b"i"), (symlink_info("link"), b"/etc/passwd")]),
        "canonical_path_fail",
    ),
    "duplicate": (make_zip([("a.js", b"1"), ("a.js", b"2")]), "unzip_fail"),
    "case-duplicate": (make_zip([("A.js", b"1"), ("a.js", b"2")]), "unzip_fail"),
    "file-folder-clash": (make_zip([("a", b"1"), ("a/b.js", b"2")]), "directory_path_fail"),
    "only-dot": (make_zip([("./", b"")]), "canonical_path_fail"),
    "bomb": (_deflate_bomb(), "unzip_fail"),
    "encrypted": (make_zip([("a.js", b"1")], tweak=_encrypted_flag), "unzip_fail"),
    "bzip2": (make_zip([("a.js", b"1")], method=zipfile.ZIP_BZIP2), "unzip_fail"),
    "lying-size": (
        make_zip([("index.html", b"i"), ("a.js", b"y" * 5000)], tweak=_lying_size),
        "unzip_fail",
    ),
    "crc-mismatch": (
        _flip(make_zip([("a.js", bytes(3000))], method=zipfile.ZIP_STORED), 500),
        "unzip_fail",
    ),
    "no-central-directory": (make_zip([("a.js", os.urandom(3000))])[:-30], "unzip_fail"),
    "not-a-zip": (b"PK\x03\x04 this is not a zip", "unzip_fail"),
    "empty": (make_zip([]), "unzip_fail"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_zips_are_refused_and_write_nothing(tmp_path, name):
    data, action = HOSTILE[name]
    zip_path = write(tmp_path, data)
    (tmp_path / "stage").mkdir()
    before = sorted(tmp_path.parent.iterdir())
    with pytest.raises(VerificationError) as err:
        safe_unzip(zip_path, tmp_path / "stage" / "out")
    assert err.value.action == action
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.zip", "stage"]
    assert list((tmp_path / "stage").iterdir()) == []
    assert sorted(tmp_path.parent.iterdir()) == before


def test_failure_in_an_existing_empty_destination_leaves_it_empty(tmp_path):
    data = make_zip([("index.html", b"i"), ("a.js", b"y" * 5000)], tweak=_lying_size)
    (tmp_path / "out").mkdir()
    with pytest.raises(VerificationError):
        safe_unzip(write(tmp_path, data), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("limits", "entries"),
    [
        (UnzipLimits(max_files=2), [("a", b"1"), ("b", b"2"), ("c", b"3")]),
        (UnzipLimits(max_total_bytes=1000), [("a", b"1" * 600), ("b", b"2" * 600)]),
        (UnzipLimits(max_ratio=5, ratio_min_bytes=1000), [("a", b"0" * 5000)]),
    ],
    ids=["files", "total", "ratio"],
)
def test_configurable_limits(tmp_path, limits, entries):
    zip_path = write(tmp_path, make_zip(entries))
    with pytest.raises(VerificationError) as err:
        safe_unzip(zip_path, tmp_path / "out", limits)
    assert err.value.action == "unzip_fail"
    assert not (tmp_path / "out").exists()
    safe_unzip(zip_path, tmp_path / "ok")  # the default limits accept it
    assert tree(tmp_path / "ok") == dict(entries)
