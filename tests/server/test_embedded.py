import httpx

from simulator.server.client import AdminClient
from simulator.server.embedded import run_server


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
