"""The persisted state and stats queue: each write holds exactly the queue, whatever was cached;
every state field round-trips; a store that is not durable holds its commits until `flush`."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest

from agent.core.lifecycle import Boot, BundleInfo, DeviceState
from agent.core.retry import ArtefactFailures
from agent.errors import LocalError
from agent.protocol.base import StatEvent
from agent.store import STATE_FILE, STATS_FILE, DeviceStore


def _event(seq: int, action: str = "set", **meta: str) -> StatEvent:
    return StatEvent(seq, action, "1.0.1", 1_700_000_000_000 + seq, None, meta)


def test_commits_follow_appends_and_sent_batches(tmp_path: Path) -> None:
    store, _, loaded = DeviceStore.open(tmp_path, durable=False)
    assert loaded == []
    queue = [_event(0), _event(1, "download_10", note="a")]
    store.commit_stats(queue)
    store.flush()
    queue.append(_event(2, "app_moved_to_background"))
    store.commit_stats(queue)
    store.flush()
    queue = [*queue[2:], _event(3)]  # the first batch was sent, one more queued
    store.commit_stats(queue)
    store.flush()
    raw = json.loads((tmp_path / STATS_FILE).read_bytes())
    assert raw == [asdict(e) for e in queue]
    _, _, reloaded = DeviceStore.open(tmp_path, durable=False)
    assert reloaded == queue


def test_a_new_event_with_a_reused_seq_is_written_as_itself(tmp_path: Path) -> None:
    store, _, _ = DeviceStore.open(tmp_path, durable=False)
    store.commit_stats([_event(0, "set")])
    store.flush()
    store.commit_stats([_event(0, "update_fail")])  # not the cached event, though same seq
    store.flush()
    _, _, reloaded = DeviceStore.open(tmp_path, durable=False)
    assert [e.action for e in reloaded] == ["update_fail"]


def test_a_full_queue_round_trips(tmp_path: Path) -> None:
    store, _, _ = DeviceStore.open(tmp_path, durable=False)
    queue = [_event(i, f"download_{i % 10}0", n=str(i)) for i in range(200)]
    for end in range(1, 201):
        store.commit_stats(queue[max(0, end - 150) : end])
        store.flush()
    _, _, reloaded = DeviceStore.open(tmp_path, durable=False)
    assert reloaded == queue[50:]


def test_a_store_that_is_not_durable_holds_commits_until_flush(tmp_path: Path) -> None:
    store, state, _ = DeviceStore.open(tmp_path, durable=False)
    store.commit_stats([_event(0)])
    store.commit_state(replace(state, channel="beta"))
    store.commit_stats([_event(0), _event(1)])
    assert not (tmp_path / STATS_FILE).exists() and not (tmp_path / STATE_FILE).exists()
    store.flush()
    _, reopened, reloaded = DeviceStore.open(tmp_path, durable=False)
    assert reopened.channel == "beta" and reloaded == [_event(0), _event(1)]


def test_a_durable_store_writes_each_commit_at_once(tmp_path: Path) -> None:
    store, state, _ = DeviceStore.open(tmp_path)
    store.commit_stats([_event(0)])
    store.commit_state(replace(state, channel="beta"))
    _, reopened, reloaded = DeviceStore.open(tmp_path)
    assert reopened.channel == "beta" and reloaded == [_event(0)]


def test_every_state_field_round_trips(tmp_path: Path) -> None:
    """A state with no field left at its default: `to_json` must carry every one of them."""
    state = DeviceState(
        bundles={
            "a": BundleInfo("a", "1.0.1", "success", "abc", 1.5, "c1"),
            "b": BundleInfo("b", "1.0.2", "pending"),
        },
        current="a",
        next="b",
        fallback="b",
        boot=Boot(3, "a", 2.5, True),
        failed_versions=frozenset({"1.0.3", "0.9.0"}),
        rejected_artefacts={"1.0.4:ff": ArtefactFailures(2, 1.0, 3.0)},
        native_build="10",
        native_code="11",
        os_version="14",
        channel="beta",
        blocked_until=9.0,
        rate_limit_reported=True,
        install_check_pending=False,
        highest_confirmed="1.0.1",
        confirmed_content={"c1": "1.0.1"},
        failed_content={"c2": "1.0.3"},
        failed_unidentified=frozenset({"1.0.5"}),
        rejected_content={"c3": ArtefactFailures(1, 2.0, 2.0)},
        release_counter=5,
        release_expires=7,
    )
    default = DeviceState()
    assert all(getattr(state, f.name) != getattr(default, f.name) for f in fields(DeviceState))
    store, _, _ = DeviceStore.open(tmp_path)
    for bundle in state.bundles:
        store.bundle_dir(bundle).mkdir()  # reopening forgets bundles whose folder is missing
    store.commit_state(state)
    _, reopened, _ = DeviceStore.open(tmp_path)
    assert reopened == state
    assert set(json.loads((tmp_path / STATE_FILE).read_bytes())) == {
        *(f.name for f in fields(DeviceState)),
        "format",
    }


def test_an_empty_queue_is_no_file(tmp_path: Path) -> None:
    """The queue a device holds most of the time costs no file (an inode and a page less);
    a missing file reads as an empty queue, so a kill on either side of the removal is safe."""
    for durable in (True, False):
        folder = tmp_path / str(durable)
        store, _, _ = DeviceStore.open(folder, durable=durable)
        store.commit_stats([_event(0)])
        store.flush()
        assert (folder / STATS_FILE).exists()
        store.commit_stats([])
        store.flush()
        assert not (folder / STATS_FILE).exists()
        store.commit_stats([])  # nothing to remove: still fine
        store.flush()
        _, _, reloaded = DeviceStore.open(folder, durable=durable)
        assert reloaded == []


def test_downloads_and_staging_exist_only_while_a_download_needs_them(tmp_path: Path) -> None:
    store, state, _ = DeviceStore.open(tmp_path, durable=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundles"]
    store.fresh_staging("b1")  # an unpacking, killed
    store.downloads.mkdir()
    store.part_path("b1").write_bytes(b"partial")
    store.commit_state(replace(state, bundles={"b1": BundleInfo("b1", "1.0.1", "downloading")}))
    store.flush()
    DeviceStore.open(tmp_path, durable=False)  # the download resumes: its partial stays
    assert not store.staging.exists() and store.part_path("b1").exists()
    store.commit_state(state)  # the bundle forgotten
    store.flush()
    DeviceStore.open(tmp_path, durable=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundles", "state.json"]


def test_a_reopen_sweeps_what_a_kill_left_and_keeps_the_named_bundles(tmp_path: Path) -> None:
    store, state, _ = DeviceStore.open(tmp_path, durable=False)
    for bundle_id in ("kept", "stray"):
        (store.bundle_dir(bundle_id) / "index.html").parent.mkdir()
        (store.bundle_dir(bundle_id) / "index.html").write_text("x")
    (tmp_path / f".{STATS_FILE}.tmp").write_bytes(b"[half")  # a commit, killed
    store.fresh_staging("b2")
    store.commit_state(replace(state, bundles={"kept": BundleInfo("kept", "1.0.1", "success")}))
    store.flush()
    _, reopened, stats = DeviceStore.open(tmp_path, durable=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundles", "state.json"]
    assert [p.name for p in store.bundles.iterdir()] == ["kept"]
    assert list(reopened.bundles) == ["kept"] and stats == []
    shutil.rmtree(store.bundles)  # a wiped bundle: forgotten, the folder made again
    _, reopened, _ = DeviceStore.open(tmp_path, durable=False)
    assert reopened.bundles == {} and store.bundles.is_dir()


def test_a_folder_that_cannot_hold_bundles_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "bundles").write_bytes(b"not a folder")
    with pytest.raises(LocalError) as caught:
        DeviceStore.open(tmp_path, durable=False)
    assert caught.value.action == "disk_write_fail"
    assert (tmp_path / "bundles").read_bytes() == b"not a folder"


def test_a_reopened_store_removes_the_stats_file_it_found_once_the_queue_empties(
    tmp_path: Path,
) -> None:
    store, _, _ = DeviceStore.open(tmp_path, durable=False)
    store.commit_stats([_event(0)])
    store.flush()
    reopened, _, queued = DeviceStore.open(tmp_path, durable=False)
    assert queued == [_event(0)]
    reopened.commit_stats([])
    reopened.flush()
    assert not (tmp_path / STATS_FILE).exists()
