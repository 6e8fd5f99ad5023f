"""The CodePush device endpoints: update_check and the two report_status calls.

The same apps, channels, rollouts and rollbacks as the Capgo endpoints. A deployment key here
is `<appId>/<platform>[/<channel>]` (CodePush keys one deployment of one platform's app; with
no channel the app's public channel answers). The query is read as a Capgo info object
(`app_version` as the native build, `client_unique_id` as the device id, `label` as the
running version) and decided by the same `decide()`. An offer points at the bundle's zip with
its `package_hash` (published by `otasim publish --dialect codepush`); a bundle without one is
not offered to CodePush devices. A channel at builtin answers `should_run_binary_version`.
Reports are counted as the Capgo actions they mean: `download_complete`, `set` (with the
installs count) for `DeploymentSucceeded`, `update_fail` for `DeploymentFailed`, so the
rollout auto-pause reads CodePush devices too.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulator.server import rollout
from simulator.server.decide import decide
from simulator.server.device_api import after_stats, bad_request, base_url, unknown_app
from simulator.server.model import BUILTIN, Bundle
from simulator.server.state import ServerState
from simulator.server.validation import DEVICE_ID, BadRequest, parse_update_request
from simulator.server.web import read_json

PREFIX: Final = "/v0.1/public/codepush"
PLUGIN_VERSION: Final = "8.0.0"
_DEVICE_IDS: Final = uuid.UUID("9f1c2b3a-5d6e-4f70-8a91-b2c3d4e5f601")


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
    app = state.catalog.app(app_id)
    if app is None:
        return unknown_app(request, state)
    channel, overridden = state.catalog.resolve(info)
    bundle: Bundle | None = None
    if channel is not None:
        target = rollout.target_version(channel, info.device_id, info.version_name)
        if target is not None:
            bundle = state.catalog.bundle(app_id, target) or Bundle(app_id, target)
    prefix = f"{base_url(request, state)}/files/"
    answer = decide(info, app, channel, overridden, bundle, lambda file_id: prefix + file_id)
    state.recorder.device_seen(info, info.version_name, app.allow_device_custom_id)
    offered = answer.body.get("url") is not None and bundle is not None
    stat = answer.stat
    if offered and bundle is not None and (bundle.package_hash is None or bundle.file_id is None):
        offered, stat = False, "missingBundle"  # not published for CodePush
    if stat is not None:
        state.recorder.count(app_id, answer.stat_version or info.version_name, stat)
    if offered and bundle is not None and bundle.file_id is not None:
        size = state.blobs.path(bundle.file_id).stat().st_size
        update: dict[str, Any] = {
            "is_available": True,
            "download_url": prefix + bundle.file_id,
            "package_hash": bundle.package_hash,
            "label": bundle.name,
            "package_size": size,
            "app_version": info.version_build,
            "target_binary_range": info.version_build,
            "description": bundle.comment or "",
            "is_mandatory": False,
            "update_app_version": False,
            "should_run_binary_version": False,
        }
        return JSONResponse({"update_info": update})
    if answer.body.get("error") == "already_on_builtin" and answer.body.get("version") == BUILTIN:
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
