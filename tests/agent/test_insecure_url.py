"""An answer from an https update URL never sends the download over plain http (`insecure_url`),
the same rule as a refused redirect from https; over an http update URL nothing changes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from core_harness import Harness, answer
from core_harness import config as make_config

from agent.core.effects import DownloadBundle
from agent.core.events import AppReady, AppStarted, MovedToBackground, MovedToForeground


def _offer(url: str, manifest_url: str | None = None) -> tuple[int, dict[str, str], bytes]:
    body: dict[str, object] = {"version": "1.0.1", "url": url, "checksum": "ab" * 32}
    if manifest_url is not None:
        body["manifest"] = [
            {"file_name": "index.html", "file_hash": "cd" * 32, "download_url": manifest_url}
        ]
    return answer(body)


def _check(h: Harness, reply: tuple[int, dict[str, str], bytes]) -> None:
    h.run(AppStarted())
    h.run(AppReady())
    h.updates.append(reply)
    h.run(MovedToForeground())
    h.run(MovedToBackground())


@pytest.mark.parametrize(
    ("bundle_url", "file_url"),
    [
        ("http://ota.test/1.0.1.zip", None),
        ("HTTP://ota.test/1.0.1.zip", None),
        ("https://ota.test/1.0.1.zip", "http://cdn.test/index.html"),
    ],
)
def test_an_https_update_server_cannot_send_the_download_over_http(
    bundle_url: str, file_url: str | None
) -> None:
    h = Harness()
    _check(h, _offer(bundle_url, file_url))
    assert not [e for e in h.effects if isinstance(e, DownloadBundle)]  # nothing fetched
    failed = [p for n, p in h.emitted if n == "updateCheckResult" and p["kind"] == "failed"]
    assert [p["error"] for p in failed] == ["insecure_url"]
    assert "plain http" in failed[0]["message"]
    assert ("download_fail", "1.0.1") in h.reported
    assert h.current_version() == "1.0.0"


@pytest.mark.parametrize(
    ("update_url", "bundle_url"),
    [
        ("https://ota.test/updates", "https://ota.test/1.0.1.zip"),
        ("http://ota.test/updates", "http://ota.test/1.0.1.zip"),  # http all along: its choice
    ],
)
def test_a_download_on_the_update_urls_own_footing_goes_ahead(
    update_url: str, bundle_url: str
) -> None:
    h = Harness(config=replace(make_config(), update_url=update_url))
    _check(h, _offer(bundle_url))
    downloads = [e for e in h.effects if isinstance(e, DownloadBundle)]
    assert [d.offer.url for d in downloads] == [bundle_url]
    assert "insecure_url" not in json.dumps(h.emitted)
