"""HTTP helpers shared by the device and admin endpoints: capped bodies, strict JSON,
error answers that never become a 500."""

from __future__ import annotations

import json
from typing import Any

from starlette import responses
from starlette.requests import Request

DEVICE_BODY_LIMIT = 1 << 20  # 1 MiB: a stats batch of 200 events is ~100 KiB


class ApiError(Exception):
    """An HTTP error answered as `{"error": code, "message": message}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "message": self.message}, self.status)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# One encoder and one decoder for every request: `json.dumps`/`json.loads` with options build
# a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class JSONResponse(responses.JSONResponse):
    """Starlette's JSON answer (same bytes), rendered by the shared encoder."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


def refuse_declared_excess(request: Request, limit: int) -> None:
    """Refuse early when Content-Length already says the body is too large.

    Raises:
        ApiError: 413 `body_too_large`.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"Body larger than {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, refused past `limit` bytes.

    Raises:
        ApiError: 413 `body_too_large`.
    """
    refuse_declared_excess(request, limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "body_too_large", f"Body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """Strict JSON (no NaN/Infinity).

    Raises:
        ApiError: 400 `invalid_json_parse_body`.
    """
    try:
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json_parse_body", "Invalid JSON body") from exc


async def read_json(request: Request, limit: int = DEVICE_BODY_LIMIT) -> Any:
    """Read and parse a JSON body under a size cap.

    Raises:
        ApiError: 413 `body_too_large`, 400 `invalid_json_parse_body`.
    """
    return parse_json(await read_body(request, limit))
