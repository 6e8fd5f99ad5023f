"""Capawesome Live Update: `GET /v1/apps/{app_id}/bundles/latest` (docs/dialects.md).

Artefacts (`otasim publish --dialect capawesome`): the plain zip's blob, its SHA-256 hex and,
when the publisher signed it, the base64 SHA256withRSA signature over the zip. The answer is
`{bundleId, url, checksum, signature?, artifactType: "zip"}`; 404 when there is no bundle for
the device (including every refusal of the decision, with its Capgo error code in the body).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.server.dialects.common import decide_for, offered
from simulator.server.web import JSONResponse

NAME = "capawesome"
PLATFORMS = {"0": "android", "1": "ios"}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def artefacts(data: Any) -> tuple[dict[str, Any], list[str]]:
    """Check `{file_id, checksum, signature?}`.

    Raises:
        ValueError: a field missing or malformed.
    """
    if not isinstance(data, dict) or not set(data) <= {"file_id", "checksum", "signature"}:
        raise ValueError("expected {file_id, checksum, signature?}")
    file_id, checksum = data.get("file_id"), data.get("checksum")
    if not isinstance(file_id, str) or not _SHA256_HEX.fullmatch(file_id):
        raise ValueError("file_id must be an uploaded file's id")
    if not isinstance(checksum, str) or not _SHA256_HEX.fullmatch(checksum):
        raise ValueError("checksum must be the zip's SHA-256 (lower-case hex)")
    signature = data.get("signature")
    if signature is not None and (
        not isinstance(signature, str) or len(signature) > 1024 or not _BASE64.fullmatch(signature)
    ):
        raise ValueError("signature must be base64")
    return dict(data), [file_id]


async def latest(request: Request) -> Response:
    query = request.query_params
    device_id = query.get("deviceId") or request.headers.get("x-capawesome-device-id", "")
    decision = decide_for(
        request,
        app_id=request.path_params["app_id"],
        device_id=device_id,
        platform=PLATFORMS.get(query.get("platform", ""), ""),
        running=query.get("bundleId") or None,
        native_version=query.get("appVersionName", ""),
        os_version=query.get("osVersion", ""),
        channel=query.get("channelName", ""),
        custom_id=query.get("customId") or None,
    )
    if isinstance(decision, Response):
        return decision
    answer, bundle, base = decision
    data = offered(answer, bundle, NAME)
    if data is None or bundle is None:
        error = answer.body.get("error") or "no_bundle"
        return JSONResponse({"error": error, "message": answer.body.get("message", "")}, 404)
    body = {
        "bundleId": bundle.name,
        "url": f"{base}/files/{data['file_id']}",
        "checksum": data["checksum"],
        "artifactType": "zip",
    }
    if data.get("signature"):
        body["signature"] = data["signature"]
    return JSONResponse(body)


def routes() -> list[Route]:
    return [Route("/v1/apps/{app_id}/bundles/latest", latest, methods=["GET"])]
