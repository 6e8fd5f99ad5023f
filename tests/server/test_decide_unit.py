"""Units: the decision rules no admin API call can reach; the write-behind recorder."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from simulator.server.db import DB_NAME, connect
from simulator.server.decide import decide, kind_of
from simulator.server.model import App, Bundle, Channel
from simulator.server.recorder import Recorder
from simulator.server.validation import DeviceInfo, parse_update_request

from .conftest import device

APP = App("com.unit.app")


def info(**overrides: object) -> DeviceInfo:
    return parse_update_request(device(APP.app_id, **overrides))


def url(file_id: str) -> str:
    return f"http://files/{file_id}"


def test_bundle_without_zip_or_manifest_is_no_bundle() -> None:
    channel = Channel(1, APP.app_id, "production", version="1.0.1", public=True)
    answer = decide(info(), APP, channel, False, Bundle(APP.app_id, "1.0.1"), url)
    assert answer.body == {"error": "no_bundle", "message": "Cannot get bundle", "kind": "failed"}
    assert (answer.stat, answer.stat_version) == ("missingBundle", "1.0.1")


def test_private_channel_without_override_is_refused() -> None:
    private = Channel(1, APP.app_id, "internal", version="1.0.1")
    bundle = Bundle(APP.app_id, "1.0.1", file_id="ab" * 32)
    answer = decide(info(defaultChannel="internal"), APP, private, False, bundle, url)
    assert answer.body["error"] == "cannot_update_via_private_channel"
    assert 'Please ensure your defaultChannel "internal"' in str(answer.body["message"])
    assert decide(info(), APP, private, True, bundle, url).body["version"] == "1.0.1"


def test_kinds() -> None:
    assert kind_of("already_on_builtin") == "up_to_date"
    assert kind_of("disable_emulator") == "blocked"
    assert kind_of("no_bundle_url") == "failed"


def test_recorder_keeps_its_buffer_when_a_flush_fails(tmp_path: Path) -> None:
    conn = connect(tmp_path)
    recorder = Recorder(conn, clock=lambda: 120.0)
    recorder.count(APP.app_id, "1.0.1", "set")
    recorder.device_seen(info(), "1.0.0", keep_custom_id=True)
    blocker = sqlite3.connect(tmp_path / DB_NAME, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    conn.execute("PRAGMA busy_timeout=0")
    with pytest.raises(sqlite3.OperationalError):
        recorder.flush()
    blocker.rollback()
    recorder.count(APP.app_id, "1.0.1", "set")
    recorder.flush()
    assert [tuple(r) for r in conn.execute("SELECT bucket, count FROM version_stats")] == [(2, 2)]
    assert conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0] == 1
