"""What the bounded parsing boundary (`agent.protocol.bounds.load_json`) costs over Python's
own decoder (its ceiling, `json.loads`), on the answers a device really gets: an /updates
offer of a signed, encrypted bundle (~1.4 KB) and a delta offer of 500 files (~185 KB).

Group `answer parsing`; compare the medians of `json.loads` and `load_json` per answer.
"""

from __future__ import annotations

import json

import pytest

from agent.protocol.bounds import load_json

ANSWERS = {
    "offer": json.dumps(
        {
            "version": "1.0.2",
            "url": "https://cdn.example.com/b/1.0.2.zip?sig=" + "a" * 400,
            "checksum": "ab" * 256,
            "session_key": "x" * 400 + ":" + "y" * 24,
        }
    ).encode(),
    "manifest-500": json.dumps(
        {
            "version": "1.0.2",
            "manifest": [
                {
                    "file_name": f"assets/f{i}.js.br",
                    "file_hash": "ab" * 32,
                    "download_url": f"https://cdn.example.com/f/{i}?sig=" + "a" * 200,
                }
                for i in range(500)
            ],
        }
    ).encode(),
}


@pytest.mark.benchmark(group="answer parsing")
@pytest.mark.parametrize("answer", sorted(ANSWERS))
@pytest.mark.parametrize("parser", ["json.loads", "load_json"])
def test_parse(benchmark, answer: str, parser: str) -> None:
    body = ANSWERS[answer]
    parse = json.loads if parser == "json.loads" else load_json
    assert benchmark(parse, body) == json.loads(body)
