"""The CodePush device endpoints: update_check and the two report_status calls.

The same apps, channels, rollouts and rollbacks as the Capgo endpoints. A deployment key here
is `<appId>/<platform>[/<channel>]` (CodePush keys one deployment of one platform's app; with
no channel the app's public channel answers). The query is read as a Capgo device description
(`app_version` as the native build, `client_unique_id` as the device id, `label` as the running
version) and decided by `device_api.check`. An offer points at the bundle's CodePush zip with
its `package_hash`; a bundle without them is not offered to CodePush devices. A channel at
builtin answers `should_run_binary_version`. Reports are counted as the Capgo actions they
mean: `download_complete`, `set` (with the installs count) for `DeploymentSucceeded`,
`update_fail` for `DeploymentFailed`, so the rollout auto-pause reads CodePush devices too.

The artefacts `otasim publish --dialect codepush` stores: `{file_id, package_hash}` (the
package zip, with its `.codepushrelease` when signed, apart from Capgo's possibly encrypted one).
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.server.device_api import after_stats, bad_request, base_url, check, unknown_app
from simulator.server.dialects.decision import offered, to_builtin
from simulator.server.model import BUILTIN
from simulator.server.state import ServerState
from simulator.server.validation import DEVICE_ID, BadRequest, parse_update_request
from simulator.server.web import JSONResponse, read_json

PREFIX: Final = "/v0.1/public/codepush"
HEX64: Final = re.compile(r"[0-9a-f]{64}")
PLUGIN_VERSION: Final = "8.0.0"
_DEVICE_IDS: Final = uuid.UUID("9f1c2b3a-5d6e-4f70-8a91-b2c3d4e5f601")


def artefacts(data: Any) -> tuple[dict[str, Any], list[str]]:
    """Check what the CodePush publish step stores: the package zip's file id and its package
    hash (SHA-256 hex of the unzipped files).

    Raises:
        ValueError: a malformed record.
    """
    if not isinstance(data, dict) or set(data) != {"file_id", "package_hash"}:
        raise ValueError("expected {file_id, package_hash}")
    file_id, package_hash = data["file_id"], data["package_hash"]
    for name, value in (("file_id", file_id), ("package_hash", package_hash)):
        if not isinstance(value, str) or not HEX64.fullmatch(value.lower()):
            raise ValueError(f"{name} must be a SHA-256 hex digest")
    return {"file_id": file_id.lower(), "package_hash": package_hash.lower()}, [file_id.lower()]


def routes() -> list[Route]:
    return [
        Route(f"{PREFIX}/update_check", update_check, methods=["GET"]),
        Route(f"{PREFIX}/report_status/deploy", report_deploy, methods=["POST"]),
        Route(f"{PREFIX}/report_status/download", report_download, methods=["POST"]),
    ]


def parse_deployment_key(key: str) -> tuple[str, str, str]:
    """(app id, platform, channel or "") of a reference-server deployment key.

    Raises:
        BadRequest: `invalid_deployment_key`.
    """
    parts = key.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise BadRequest(
            "invalid_deployment_key", "Deployment key is <appId>/<platform>[/<channel>]"
        )
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def device_id(client_unique_id: str) -> str:
    """The device id: the client's id when it is a UUID, else a UUID derived from it."""
    lowered = client_unique_id.lower()
    return lowered if DEVICE_ID.match(lowered) else str(uuid.uuid5(_DEVICE_IDS, client_unique_id))


def _no_update(**flags: bool) -> JSONResponse:
    info = {"is_available": False, "update_app_version": False, "should_run_binary_version": False}
    return JSONResponse({"update_info": info | flags})


async def update_check(request: Request) -> Response:
    """GET update_check: the package for this device, or why none (module docstring)."""
    state: ServerState = request.app.state.server
    query = request.query_params
    try:
        app_id, platform, channel_name = parse_deployment_key(query.get("deployment_key", ""))
        label = query.get("label", "")
        known = label and state.catalog.bundle(app_id, label) is not None
        info = parse_update_request(
            {
                "app_id": app_id,
                "device_id": device_id(query.get("client_unique_id", "")),
                "platform": platform,
                "version_build": query.get("app_version", ""),
                "version_name": label if known else BUILTIN,
                "plugin_version": PLUGIN_VERSION,
                "defaultChannel": channel_name,
            }
        )
    except BadRequest as exc:
        return bad_request(exc)
    decision = check(request, state, info)
    if isinstance(decision, Response):
        return decision
    answer, bundle = decision
    stored = offered(answer, bundle, "codepush")
    if stored is not None and bundle is not None:
        file_id = str(stored["file_id"])
        update: dict[str, Any] = {
            "is_available": True,
            "download_url": f"{base_url(request, state)}/files/{file_id}",
            "package_hash": stored["package_hash"],
            "label": bundle.name,
            "package_size": state.blobs.path(file_id).stat().st_size,
            "app_version": info.version_build,
            "target_binary_range": info.version_build,
            "description": bundle.comment or "",
            "is_mandatory": False,
            "update_app_version": False,
            "should_run_binary_version": False,
        }
        return JSONResponse({"update_info": update})
    if to_builtin(answer):
        return _no_update(should_run_binary_version=True)
    return _no_update()


async def _report(request: Request, actions: dict[str, str]) -> Response:
    state: ServerState = request.app.state.server
    body = await read_json(request)
    if not isinstance(body, dict):
        return JSONResponse({"error": "invalid_json_body"}, 400)
    try:
        app_id, _, _ = parse_deployment_key(str(body.get("deployment_key", "")))
    except BadRequest as exc:
        return bad_request(exc)
    if state.catalog.app(app_id) is None:
        return unknown_app(request, state)
    label, status = body.get("label"), str(body.get("status", "download"))
    if not isinstance(label, str) or status not in actions:
        return JSONResponse({"error": "invalid_report"}, 400)
    if state.catalog.bundle(app_id, label) is not None:
        action = actions[status]
        state.recorder.count(app_id, label, action)
        if action == "set":
            state.recorder.count(app_id, label, "install")
        after_stats(state, app_id)
    return Response(status_code=200)


async def report_deploy(request: Request) -> Response:
    return await _report(request, {"DeploymentSucceeded": "set", "DeploymentFailed": "update_fail"})


async def report_download(request: Request) -> Response:
    return await _report(request, {"download": "download_complete"})
