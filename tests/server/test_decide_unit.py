"""The decision rules no admin API call can reach, checked on the pure function."""

from __future__ import annotations

from simulator.server.decide import decide, kind_of
from simulator.server.model import App, Bundle, Channel
from simulator.server.validation import DeviceInfo, parse_update_request

from .conftest import device

APP = App("com.unit.app")


def info(**overrides: object) -> DeviceInfo:
    return parse_update_request(device(APP.app_id, **overrides))


def url(file_id: str) -> str:
    return f"http://files/{file_id}"


def test_bundle_without_zip_or_manifest_is_no_bundle() -> None:
    channel = Channel(1, APP.app_id, "production", version="1.0.1", public=True)
    answer = decide(info(), APP, channel, False, Bundle(APP.app_id, "1.0.1"), url)
    assert answer.body == {"error": "no_bundle", "message": "Cannot get bundle", "kind": "failed"}
    assert (answer.stat, answer.stat_version) == ("missingBundle", "1.0.1")


def test_private_channel_without_override_is_refused() -> None:
    private = Channel(1, APP.app_id, "internal", version="1.0.1")
    bundle = Bundle(APP.app_id, "1.0.1", file_id="ab" * 32)
    answer = decide(info(defaultChannel="internal"), APP, private, False, bundle, url)
    assert answer.body["error"] == "cannot_update_via_private_channel"
    assert 'Please ensure your defaultChannel "internal"' in str(answer.body["message"])
    assert decide(info(), APP, private, True, bundle, url).body["version"] == "1.0.1"


def test_kinds() -> None:
    assert kind_of("already_on_builtin") == "up_to_date"
    assert kind_of("disable_emulator") == "blocked"
    assert kind_of("no_bundle_url") == "failed"
