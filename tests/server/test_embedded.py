import asyncio
import os
import sqlite3
import tempfile
import threading
import time
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
    conn = connect(tmp_path)
    key = bootstrap_admin_key(conn)
    conn.close()
    sock = bind("127.0.0.1", 0)
    server = make_server(ServerConfig(data_dir=tmp_path, flush_interval_s=3600))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = url_of(sock)
    with AdminClient(url, str(key)) as admin:
        admin.create_app("com.example.stop")
        admin.set_channel("com.example.stop", "production", version="builtin", public=True)
    body = device("com.example.stop", version_name="1.0.3")
    assert httpx.post(f"{url}/updates", json=body).json()["error"] == "already_on_builtin"
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM devices").fetchone() == (0,)  # still buffered
    server.should_exit = True
    thread.join(10)
    sock.close()
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
