"""Bundle files: Range resume from any offset gives identical bytes; 416; ETag; caching."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.server.blobs import BlobResponse
from simulator.server.client import AdminClient
from simulator.server.embedded import RunningServer

SIZE = (5 << 19) + 7  # 2.5 MiB and a bit: several read chunks


@pytest.fixture(scope="module")
def blob(admin: AdminClient, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    admin.create_app("com.files.app")
    data = os.urandom(SIZE)
    path: Path = tmp_path_factory.mktemp("blob") / "bundle.zip"
    path.write_bytes(data)
    return admin.upload_file("com.files.app", path), data


@pytest.fixture(scope="module")
def files(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/files/") as client:
        yield client


def test_file_id_is_the_content_hash_and_headers(
    files: httpx.Client, blob: tuple[str, bytes]
) -> None:
    file_id, data = blob
    assert file_id == hashlib.sha256(data).hexdigest()
    response = files.get(file_id)
    assert response.content == data
    assert response.headers["etag"] == f'"{file_id}"'
    assert response.headers["cache-control"].startswith("public, max-age=31536000, immutable")
    assert response.headers["accept-ranges"] == "bytes"
    head = files.head(file_id)
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(SIZE))
    assert files.get(file_id, headers={"If-None-Match": f'"{file_id}"'}).status_code == 304


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, SIZE - 1), chunk=st.integers(1, SIZE))
def test_resume_from_any_offset_gives_identical_bytes(
    files: httpx.Client, blob: tuple[str, bytes], cut: int, chunk: int
) -> None:
    file_id, data = blob
    head = files.get(file_id, headers={"Range": f"bytes=0-{cut - 1}"}).content if cut else b""
    tail = files.get(file_id, headers={"Range": f"bytes={cut}-"})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes {cut}-{SIZE - 1}/{SIZE}"
    assert head + tail.content == data
    end = min(cut + chunk, SIZE) - 1
    middle = files.get(file_id, headers={"Range": f"bytes={cut}-{end}"})
    assert middle.content == data[cut : end + 1]


def test_unsatisfiable_and_stale_ranges(files: httpx.Client, blob: tuple[str, bytes]) -> None:
    file_id, data = blob
    past = files.get(file_id, headers={"Range": f"bytes={SIZE}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{SIZE}"
    stale = files.get(file_id, headers={"Range": "bytes=10-", "If-Range": '"0000"'})
    assert (stale.status_code, stale.content) == (200, data)
    fresh = files.get(file_id, headers={"Range": "bytes=10-", "If-Range": f'"{file_id}"'})
    assert (fresh.status_code, fresh.content) == (206, data[10:])


@pytest.mark.parametrize("name", ["0" * 64, "not-a-hash", "..%2f..%2fetc%2fpasswd", "no.zip"])
def test_unknown_or_invalid_names_are_404(files: httpx.Client, name: str) -> None:
    assert files.get(name).status_code == 404


def test_a_folder_under_a_file_name_is_404(files: httpx.Client, server: RunningServer) -> None:
    name = "1" * 64
    (server.data_dir / "files" / name).mkdir()
    assert files.get(name).status_code == 404


def test_upload_over_the_cap_is_refused_and_leaves_nothing(server: RunningServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    request = (
        f"PUT /api/apps/com.files.app/files HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {server.admin_key}\r\nContent-Length: {1 << 40}\r\n\r\nxx"
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request.encode())
        answer = ""
        while "}" not in answer and (chunk := conn.recv(65536)):
            answer += chunk.decode()
    assert answer.startswith("HTTP/1.1 413")
    assert '"error":"body_too_large"' in answer
    assert list((server.data_dir / "files").glob(".upload-*")) == []


def test_a_bundle_is_sent_in_one_mebibyte_chunks(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    (tmp_path / "bundle.zip").write_bytes(data)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": []}
    asyncio.run(BlobResponse(tmp_path / "bundle.zip")(scope, receive, send))
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert b"".join(bodies) == data
    assert [len(b) for b in bodies] == [1 << 20, 1 << 20, SIZE - (2 << 20)]
