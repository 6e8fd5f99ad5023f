"""Content-addressed bundle and delta files on disk, served with Range and a strong ETag."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from simulator.server.web import ApiError

FILE_ID = re.compile(r"^[0-9a-f]{64}$")
IMMUTABLE = "public, max-age=31536000, immutable, no-transform"


class BlobResponse(FileResponse):
    """Starlette's file answer, read in 1 MiB chunks instead of 64 KiB: each read is a hop to
    a worker thread and a write, so a typical bundle goes out in one of each."""

    chunk_size = 1 << 20


class BlobStore:
    """Files named by the SHA-256 of their bytes under `<data>/files/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        """Where the blob lives (it may not exist).

        Raises:
            ValueError: `file_id` is not a SHA-256 hex string.
        """
        if not FILE_ID.match(file_id):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.root / file_id

    async def save(self, chunks: AsyncIterator[bytes], limit: int) -> tuple[str, int]:
        """Store a stream; returns (file_id, size). Atomic: a failed upload leaves nothing.

        Raises:
            ApiError: 413 `body_too_large` past `limit` bytes.
        """
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(413, "body_too_large", f"File larger than {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            file_id = digest.hexdigest()
            os.replace(tmp, self.root / file_id)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return file_id, size


async def serve_file(request: Request) -> Response:
    """GET/HEAD /files/{file_id}: Range (206/416), strong ETag, immutable caching."""
    return serve_blob(request, request.path_params["file_id"])


def serve_blob(request: Request, file_id: str) -> Response:
    """Answer `request` with blob `file_id` (Range, ETag, caching as `serve_file`), or 404."""
    store: BlobStore = request.app.state.server.blobs
    try:
        path = store.path(file_id)
    except ValueError:
        return ApiError(404, "not_found", "Not found").response()
    try:
        found = path.stat()
    except FileNotFoundError:
        found = None
    if found is None or not stat.S_ISREG(found.st_mode):
        return ApiError(404, "not_found", "Not found").response()
    etag = f'"{file_id}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag, "cache-control": IMMUTABLE})
    return BlobResponse(
        path,
        media_type="application/octet-stream",
        headers={"etag": etag, "cache-control": IMMUTABLE},
        stat_result=found,  # known: Starlette would ask a worker thread again
    )
