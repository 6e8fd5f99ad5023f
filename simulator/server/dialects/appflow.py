"""Ionic Appflow Deploy: `POST /apps/{app_id}/channels/check-device`, each snapshot's
`pro-manifest.json` and its files (docs/dialects.md).

Artefacts (`otasim publish --dialect appflow`): the dist folder's files, each uploaded as a
blob, listed as `{href, size, integrity (SRI sha256), file_id}`. The check answers in the
plugin's `{data, meta}` shape: `available` with the snapshot and the URL of its file list, or
not (with `incompatibleUpdateAvailable` when the channel's policy holds the device back for a
native update). Files are served under the snapshot's URL, so relative hrefs resolve there.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.server.blobs import serve_blob
from simulator.server.dialects.common import decide_for, offered
from simulator.server.state import ServerState
from simulator.server.web import ApiError, JSONResponse, read_json

NAME = "appflow"
META = {"status": 200, "version": "2.0.0-otasim"}
NATIVE_UPDATE_ERRORS = frozenset(
    {"disable_auto_update_to_major", "disable_auto_update_under_native", "semver_error"}
)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_FILES = 20_000


def _integrity(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("sha256-"):
        raise ValueError("integrity must be an SRI sha256 hash")
    try:
        digest = base64.b64decode(value.removeprefix("sha256-"), validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError("integrity must be base64 of a SHA-256 digest")
    return value


def artefacts(data: Any) -> tuple[dict[str, Any], list[str]]:
    """Check `{files: [{href, size, integrity, file_id}]}`.

    Raises:
        ValueError: a field missing or malformed, or an href listed twice.
    """
    files = data.get("files") if isinstance(data, dict) and set(data) == {"files"} else None
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise ValueError(f"expected {{files: [1 to {MAX_FILES} files]}}")
    kept = []
    for item in files:
        if not isinstance(item, dict) or set(item) != {"href", "size", "integrity", "file_id"}:
            raise ValueError("each file is {href, size, integrity, file_id}")
        href, size, file_id = item["href"], item["size"], item["file_id"]
        if not isinstance(href, str) or not 0 < len(href) <= 1024 or href.startswith("/"):
            raise ValueError("href must be a relative path")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("size must be a non-negative integer")
        if not isinstance(file_id, str) or not _SHA256_HEX.fullmatch(file_id):
            raise ValueError("file_id must be an uploaded file's id")
        kept.append({"href": href, "size": size, "integrity": _integrity(item["integrity"]),
                     "file_id": file_id})  # fmt: skip
    if len({f["href"] for f in kept}) != len(kept):
        raise ValueError("an href is listed twice")
    return {"files": kept}, [f["file_id"] for f in kept]


def _snapshot_url(base: str, app_id: str, version: str) -> str:
    return f"{base}/apps/{quote(app_id, safe='')}/snapshots/{quote(version, safe='')}/"


async def check_device(request: Request) -> Response:
    body = await read_json(request)
    device = body.get("device") if isinstance(body, dict) else None
    if not isinstance(device, dict):
        raise ApiError(400, "invalid_request", "body must be {channel_name, device: {...}}")

    def text(value: object) -> str:
        return value if isinstance(value, str) else ""

    decision = decide_for(
        request,
        app_id=request.path_params["app_id"],
        device_id=text(device.get("device_id")),
        platform=text(device.get("platform")),
        running=text(device.get("snapshot")) or None,
        native_version=text(device.get("binary_version")),
        os_version=text(device.get("platform_version")),
        channel=text(body.get("channel_name")),
    )
    if isinstance(decision, Response):
        return decision
    answer, bundle, base = decision
    data = offered(answer, bundle, NAME)
    if data is None or bundle is None:
        held = answer.body.get("error") in NATIVE_UPDATE_ERRORS
        return JSONResponse({"data": {
            "available": False, "compatible": not held, "partial": False, "snapshot": None,
            "build": None, "url": None, "incompatibleUpdateAvailable": held,
        }, "meta": META})  # fmt: skip
    url = _snapshot_url(base, bundle.app_id, bundle.name) + "pro-manifest.json"
    return JSONResponse({"data": {
        "available": True, "compatible": True, "partial": False, "snapshot": bundle.name,
        "build": None, "url": url, "incompatibleUpdateAvailable": False,
    }, "meta": META})  # fmt: skip


def _files(request: Request) -> list[dict[str, Any]]:
    state: ServerState = request.app.state.server
    params = request.path_params
    bundle = state.catalog.bundle(params["app_id"], params["version"])
    data = bundle.dialects.get(NAME) if bundle is not None else None
    if data is None:
        raise ApiError(404, "not_found", "No such snapshot")
    return list(data["files"])


async def file_list(request: Request) -> Response:
    """GET the snapshot's `pro-manifest.json`."""
    listing = [{k: f[k] for k in ("href", "size", "integrity")} for f in _files(request)]
    return JSONResponse(listing)


async def snapshot_file(request: Request) -> Response:
    """GET one file of the snapshot, by its href."""
    href = request.path_params["href"]
    for item in _files(request):
        if item["href"] == href:
            return serve_blob(request, item["file_id"])
    raise ApiError(404, "not_found", "No such file in this snapshot")


def routes() -> list[Route]:
    return [
        Route("/apps/{app_id}/channels/check-device", check_device, methods=["POST"]),
        Route("/apps/{app_id}/snapshots/{version}/pro-manifest.json", file_list, methods=["GET"]),
        Route("/apps/{app_id}/snapshots/{version}/{href:path}", snapshot_file, methods=["GET"]),
    ]
