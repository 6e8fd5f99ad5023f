"""The other dialects' device routes on the reference server: bad requests are 4xx answers
(never a 500), and every route answers from the one admin model."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from simulator.publish import publish
from simulator.server.client import AdminClient


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/apps/{app}/bundles/latest", None),  # no device id, no platform
        ("GET", "/v1/apps/{app}/bundles/latest?deviceId=x&platform=0&appVersionName=1", None),
        ("GET", "/v1/apps/{app}/bundles/latest?deviceId={dev}&platform=7&appVersionName=1", None),
        ("POST", "/apps/{app}/channels/check-device", b"not json"),
        ("POST", "/apps/{app}/channels/check-device", b"[]"),
        ("POST", "/apps/{app}/channels/check-device", b'{"device": 3}'),
        ("POST", "/apps/{app}/channels/check-device", b'{"device": {"device_id": "x"}}'),
        ("GET", "/apps/{app}/snapshots/9.9.9/pro-manifest.json", None),
        ("GET", "/apps/{app}/snapshots/9.9.9/../../files/x", None),
    ],
)
def test_bad_requests_are_client_errors(
    http: httpx.Client, app_id: str, method: str, path: str, body: bytes | None
) -> None:
    url = path.format(app=app_id, dev=uuid.uuid4())
    answer = http.request(method, url, content=body)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)


def test_an_unknown_app_is_refused_as_for_capgo_devices(http: httpx.Client) -> None:
    query = f"deviceId={uuid.uuid4()}&platform=1&appVersionName=1.0.0"
    answer = http.get(f"/v1/apps/com.unknown.app/bundles/latest?{query}")
    assert answer.status_code == 429 and answer.json()["error"] == "on_premise_app"


def test_a_release_without_the_dialects_artefacts_is_no_update_for_it(
    http: httpx.Client, admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    """Published for Capgo only: Capawesome and Appflow devices hear "nothing for you"
    (never an offer they could not verify), while the decision itself was an offer."""
    (tmp_path / "index.html").write_text("<html>x</html>")
    publish(admin, app_id=app_id, version="1.0.1", channel="production", source=tmp_path)
    device = str(uuid.uuid4())
    query = f"deviceId={device}&platform=0&appVersionName=1.0.0"
    assert http.get(f"/v1/apps/{app_id}/bundles/latest?{query}").status_code == 404
    check = {"channel_name": "production", "device": {
        "device_id": device, "platform": "android", "binary_version": "1.0.0"}}  # fmt: skip
    data = http.post(f"/apps/{app_id}/channels/check-device", json=check).json()["data"]
    assert data["available"] is False and data["url"] is None
    publish(admin, app_id=app_id, version="1.0.2", channel="production", source=tmp_path,
            dialects=["capawesome", "appflow"])  # fmt: skip
    offer = http.get(f"/v1/apps/{app_id}/bundles/latest?{query}").json()
    assert offer["bundleId"] == "1.0.2" and offer["artifactType"] == "zip"
    data = http.post(f"/apps/{app_id}/channels/check-device", json=check).json()["data"]
    assert data["available"] is True and data["snapshot"] == "1.0.2"
    files = http.get(data["url"]).json()
    assert [f["href"] for f in files] == ["index.html"]
    assert http.get(data["url"].replace("pro-manifest.json", "index.html")).text == "<html>x</html>"
