"""The malformed requests the fuzz check sends: bounded, the same every run, and malformed."""

from __future__ import annotations

import json

from simulator.checks.fuzz import malformed_requests

TEMPLATE = {"app_id": "com.example.app", "device_id": "0e4c0000-0000-4000-8000-000000000000",
            "platform": "android", "version_name": "builtin", "is_prod": True}  # fmt: skip
TARGETS = [("/updates", "POST", "http://x/updates"), ("/channel_self", "PUT", "http://x/cs")]


def _decoded(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return "<not json>"


def test_bounded_deterministic_and_never_the_valid_body() -> None:
    first = malformed_requests(TEMPLATE, TARGETS, 30)
    assert first == malformed_requests(TEMPLATE, TARGETS, 30)
    assert 0 < len(first) <= 30
    bodies = [_decoded(body) for *_, body in first]
    assert TEMPLATE not in bodies
    assert "<not json>" in bodies  # raw bytes
    assert any(not isinstance(b, dict) for b in bodies if b != "<not json>")  # other JSON values
    assert any(isinstance(b, dict) and b.keys() != TEMPLATE.keys() for b in bodies)  # fields gone
    assert {name for name, *_ in first} == {"/updates", "/channel_self"}
