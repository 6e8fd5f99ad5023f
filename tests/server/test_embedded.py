import asyncio
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from simulator.server.auth import bootstrap_admin_key
from simulator.server.client import AdminClient
from simulator.server.db import DB_NAME, connect
from simulator.server.embedded import run_server
from simulator.server.runner import bind, make_server, url_of
from simulator.server.state import ServerConfig

from .conftest import device


def test_subprocess_server_serves_health_and_admin_then_stops() -> None:
    with run_server(in_process=False) as server:
        assert httpx.get(f"{server.url}/updates").json() == {"status": "ok"}
        with AdminClient(server.url, server.admin_key) as admin:
            admin.create_app("com.example.sub")
            assert admin.list_apps() == ["com.example.sub"]
        url = server.url
    try:
        httpx.get(f"{url}/updates", timeout=2)
    except httpx.HTTPError:
        stopped = True
    else:
        stopped = False
    assert stopped


def test_thread_server_stops_and_keeps_its_data_folder(tmp_path) -> None:
    with run_server(tmp_path) as server, AdminClient(server.url, server.admin_key) as admin:
        admin.create_app("com.example.kept")
    with run_server(tmp_path) as again, AdminClient(again.url, again.admin_key) as admin:
        assert admin.list_apps() == ["com.example.kept"]


def test_buffered_writes_are_flushed_at_shutdown(tmp_path: Path) -> None:
    url, key, stop = _serve(ServerConfig(data_dir=tmp_path, flush_interval_s=3600))
    with AdminClient(url, key) as admin:
        admin.create_app("com.example.stop")
        admin.set_channel("com.example.stop", "production", version="builtin", public=True)
    body = device("com.example.stop", version_name="1.0.3")
    assert httpx.post(f"{url}/updates", json=body).json()["error"] == "already_on_builtin"
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM devices").fetchone() == (0,)  # still buffered
    stop()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("SELECT device_id FROM devices").fetchall() == [(body["device_id"],)]


def test_a_given_data_folder_makes_no_temp_folder_and_a_dead_runs_folder_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    left = tmp_path / "tmp" / "otasim-server-999999999-x"  # a killed run's folder
    left.mkdir()
    with run_server(tmp_path / "data"):
        assert list((tmp_path / "tmp").iterdir()) == [left]  # nothing made, nothing swept
    with run_server() as server:
        assert server.data_dir.name.startswith(f"otasim-server-{os.getpid()}-")
        assert list((tmp_path / "tmp").iterdir()) == [server.data_dir]  # the dead one swept
    assert list((tmp_path / "tmp").iterdir()) == []


def _serve(config: ServerConfig) -> tuple[str, str, Callable[[], None]]:
    """A server in a thread on `config`: (url, admin key, stop)."""
    conn = connect(config.data_dir)
    key = bootstrap_admin_key(conn)
    conn.close()
    sock = bind("127.0.0.1", 0)
    server = make_server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    while not server.started:
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return url_of(sock), str(key), stop


def _stats_rows(data_dir: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(data_dir / DB_NAME) as db:
        rows = db.execute("SELECT action, count FROM version_stats ORDER BY action").fetchall()
    return [tuple(row) for row in rows]


def _post_stats(url: str, app_id: str) -> None:
    events = [device(app_id, version_name="builtin", action=a) for a in ("set", "app_crash")]
    single = device(app_id, version_name="builtin", action="download_complete")
    with httpx.Client(base_url=url) as http:
        assert http.post("/stats", json=events).json()["status"] == "ok"
        assert http.post("/stats", json=single).json() == {"status": "ok"}


def test_stats_are_written_behind_and_all_in_the_database_at_shutdown(tmp_path: Path) -> None:
    url, key, stop = _serve(ServerConfig(data_dir=tmp_path, flush_interval_s=3600))
    try:
        with AdminClient(url, key) as admin:
            admin.create_app("com.example.behind")
            admin.set_channel("com.example.behind", "production", version="builtin", public=True)
        _post_stats(url, "com.example.behind")
        assert _stats_rows(tmp_path) == []  # answered before written
    finally:
        stop()
    counted = [("app_crash", 1), ("download_complete", 1), ("install", 1), ("set", 1)]
    assert _stats_rows(tmp_path) == counted


def test_stats_written_behind_reach_the_database_within_the_flush_interval(
    tmp_path: Path,
) -> None:
    url, key, stop = _serve(ServerConfig(data_dir=tmp_path, flush_interval_s=0.05))
    try:
        with AdminClient(url, key) as admin:
            admin.create_app("com.example.soon")
            admin.set_channel("com.example.soon", "production", version="builtin", public=True)
        _post_stats(url, "com.example.soon")
        deadline = time.monotonic() + 10
        while len(_stats_rows(tmp_path)) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _stats_rows(tmp_path) == [
            ("app_crash", 1),
            ("download_complete", 1),
            ("install", 1),
            ("set", 1),
        ]
    finally:
        stop()
