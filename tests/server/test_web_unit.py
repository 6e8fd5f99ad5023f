"""Units: the shared JSON decoder and encoder answer as `json.loads` and Starlette did."""

import json

import pytest
from starlette import responses

from simulator.server.web import ApiError, JSONResponse, parse_json


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": [1, 2.5, null, true], "b": "\xc3\xa9"}',
        '{"a": "é"}'.encode("utf-16"),
        '{"a": "é"}'.encode("utf-8-sig"),
        b"[]",
    ],
)
def test_parse_json_reads_what_json_loads_reads(raw: bytes) -> None:
    assert parse_json(raw) == json.loads(raw)


@pytest.mark.parametrize("raw", [b"NaN", b'{"a": Infinity}', b"[-Infinity]", b"{", b"\xff\xfe\xff"])
def test_parse_json_refuses_constants_and_bad_bytes(raw: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json(raw)
    assert refused.value.code == "invalid_json_parse_body"


def test_json_response_has_starlettes_bytes() -> None:
    content = {"status": "ok", "é": [1, 2.5, None], "nested": {"x": "\u2028"}}
    assert JSONResponse(content).body == responses.JSONResponse(content).body
    with pytest.raises(ValueError):
        JSONResponse({"x": float("nan")})
