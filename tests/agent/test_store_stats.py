"""The persisted stats queue: each commit writes exactly the queue, whatever was cached."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from agent.protocol.base import StatEvent
from agent.store import STATS_FILE, DeviceStore


def _event(seq: int, action: str = "set", **meta: str) -> StatEvent:
    return StatEvent(seq, action, "1.0.1", 1_700_000_000_000 + seq, None, meta)


def test_commits_follow_appends_and_sent_batches(tmp_path: Path) -> None:
    store, _, loaded = DeviceStore.open(tmp_path, durable=False)
    assert loaded == []
    queue = [_event(0), _event(1, "download_10", note="a")]
    store.commit_stats(queue)
    queue.append(_event(2, "app_moved_to_background"))
    store.commit_stats(queue)
    queue = [*queue[2:], _event(3)]  # the first batch was sent, one more queued
    store.commit_stats(queue)
    raw = json.loads((tmp_path / STATS_FILE).read_bytes())
    assert raw == [asdict(e) for e in queue]
    _, _, reloaded = DeviceStore.open(tmp_path, durable=False)
    assert reloaded == queue


def test_a_new_event_with_a_reused_seq_is_written_as_itself(tmp_path: Path) -> None:
    store, _, _ = DeviceStore.open(tmp_path, durable=False)
    store.commit_stats([_event(0, "set")])
    store.commit_stats([_event(0, "update_fail")])  # not the cached event, though same seq
    _, _, reloaded = DeviceStore.open(tmp_path, durable=False)
    assert [e.action for e in reloaded] == ["update_fail"]


def test_a_full_queue_round_trips(tmp_path: Path) -> None:
    store, _, _ = DeviceStore.open(tmp_path, durable=False)
    queue = [_event(i, f"download_{i % 10}0", n=str(i)) for i in range(200)]
    for end in range(1, 201):
        store.commit_stats(queue[max(0, end - 150) : end])
    _, _, reloaded = DeviceStore.open(tmp_path, durable=False)
    assert reloaded == queue[50:]
