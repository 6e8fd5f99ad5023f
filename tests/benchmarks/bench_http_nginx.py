"""nginx on 127.0.0.1 answering a canned `/updates` and `/stats`: the HTTP benchmarks' endpoint.

Run by the benchmark scripts themselves (never by the test suite): its own prefix and
config in a temp folder, one worker pinned to one core, stopped when the block ends.
Needs Debian's nginx (`apt-get install nginx-light`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# the steady-state answer of a Capgo server (reference section 3.2): nothing to download
UPDATE_ANSWER = {
    "error": "no_new_version_available",
    "message": "No new version available",
    "kind": "up_to_date",
}
CONFIG = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /updates {{
            default_type application/json;
            return 200 '{answer}';
        }}
        location = /stats {{
            default_type application/json;
            return 200 '{{"status":"ok"}}';
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(port: int, process: subprocess.Popen[bytes], folder: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(folder / 'error.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start listening within 10 s")


@contextmanager
def run_nginx(cpu: int = 1) -> Iterator[str]:
    """Start nginx pinned to `cpu`; yield the `/updates` URL; stop it on exit.

    Raises:
        RuntimeError: nginx is not installed, or did not start.
    """
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx not found: apt-get install nginx-light")
    with tempfile.TemporaryDirectory(prefix="otasim-nginx-") as folder:
        port = free_port()
        config = Path(folder) / "nginx.conf"
        answer = json.dumps(UPDATE_ANSWER)
        config.write_text(CONFIG.format(prefix=folder, port=port, answer=answer))
        command = ["taskset", "-c", str(cpu), binary, "-p", folder, "-c", str(config)]
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port, process, Path(folder))
            yield f"http://127.0.0.1:{port}/updates"
        finally:
            process.terminate()
            process.wait(timeout=10)
