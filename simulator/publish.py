"""Publish a release to the reference server: zip, optionally encrypt and build the delta
manifest (with `simulator.release`, Capgo CLI compatible), upload, then point a channel at
it, or start a staged rollout. The private key never leaves this process."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from simulator import codepush_release, expo_release, release
from simulator.server.client import AdminClient, AdminError


class PublishError(Exception):
    """The release cannot be published as asked (bad source, delta from a zip, ...)."""


def _ensure_app(client: AdminClient, app_id: str) -> dict[str, Any]:
    try:
        return client.app(app_id)
    except AdminError as exc:
        if exc.status != 404:
            raise
    client.create_app(app_id)
    return client.app(app_id)


def _point_channel(
    client: AdminClient, app: dict[str, Any], channel: str, version: str, percent: float | None
) -> dict[str, Any]:
    """Make `channel` serve `version` (all devices, or a rollout of `percent`)."""
    existing = {c["name"] for c in app["channels"]}
    if channel not in existing:
        first_public = not any(c["public"] for c in app["channels"])
        client.set_channel(app["app_id"], channel, public=first_public)
    if percent is None:
        return client.set_channel(app["app_id"], channel, version=version)
    return client.set_rollout(app["app_id"], channel, version, percent)


def publish(
    client: AdminClient,
    *,
    app_id: str,
    version: str,
    channel: str,
    source: Path,
    private_pem: bytes | None = None,
    delta: bool = False,
    rollout_percent: float | None = None,
    strict: bool = False,
    counter: int | None = None,
    expires_days: float = 7.0,
) -> dict[str, Any]:
    """Upload `source` (a dist folder, or a zip) as bundle `version` and publish it on
    `channel` (created if missing; public when the app has no public channel yet).

    With `private_pem` the zip is encrypted and its checksum signed (Capgo v2); with `delta`
    a per-file manifest is uploaded too (needs a dist folder). With `rollout_percent` the
    channel keeps its version and rolls `version` out to that share of devices.

    Returns {"bundle": ..., "channel": ...} as the server answered.

    Raises:
        PublishError: unusable source or options.
        release.ReleaseError: the folder, zip or key is unusable.
        AdminError: the server refused (e.g. 409 bundle_exists) or is unreachable.
    """
    if not source.exists():
        raise PublishError(f"no such file or folder: {source}")
    if delta and not source.is_dir():
        raise PublishError("--delta needs the dist folder, not a zip")
    if strict and private_pem is None:
        raise PublishError("--strict signs the release document with --key: give one")
    app = _ensure_app(client, app_id)
    with tempfile.TemporaryDirectory(prefix="otasim-publish-") as tmp:
        work = Path(tmp)
        zip_path = source
        if source.is_dir():
            zip_path = work / "bundle.zip"
            release.zip_dist(source, zip_path)
        fields: dict[str, Any] = {"checksum": release.file_sha256(zip_path)}
        if private_pem is not None:
            sealed = release.encrypt_bundle(zip_path, private_pem, work / "bundle.encrypted.zip")
            zip_path = sealed.path
            fields = {
                "checksum": sealed.checksum,
                "session_key": sealed.session_key,
                "key_id": sealed.key_id,
                "plain_checksum": sealed.plain_checksum,
            }
        manifest = None
        if delta:
            manifest = release.build_manifest(
                source, work / "delta", private_pem, fields.get("session_key") or None
            )
        if strict:
            assert private_pem is not None
            fields["release"] = release.sign_release_document(
                private_pem,
                app_id=app_id,
                version=version,
                counter=int(time.time()) if counter is None else counter,
                expires=int(time.time() + expires_days * 86400),
                plain_checksum=fields.get("plain_checksum", ""),
                manifest=manifest,
            )
        fields.pop("plain_checksum", None)
        bundle = client.upload_bundle(
            app_id, version, zip_path=zip_path, manifest=manifest, **fields
        )
    return {
        "bundle": bundle,
        "channel": _point_channel(client, app, channel, version, rollout_percent),
    }


def publish_expo(
    client: AdminClient,
    *,
    app_id: str,
    version: str,
    channel: str,
    source: Path,
    signing_key_pem: bytes | None,
    runtime_version: str,
    rollout_percent: float | None = None,
) -> dict[str, Any]:
    """Publish the dist folder `source` as Expo update `version` on `channel`.

    The files are uploaded once and serve every dialect: the zip and the per-file manifest
    for Capgo devices, and the Expo manifest (`simulator.expo_release`), signed here with
    `signing_key_pem` when given, whose asset URLs are this server's `/files/` URLs.

    Raises:
        PublishError: `source` is not a dist folder.
        release.ReleaseError: the folder or key is unusable.
        AdminError: the server refused or is unreachable.
    """
    if not source.is_dir():
        raise PublishError("an Expo update is published from its dist folder")
    assets = expo_release.dist_assets(source, client.url + "/files/{file_id}")
    body = expo_release.build_manifest(assets, version=version, runtime_version=runtime_version)
    extra = {"expo_manifest": body.decode()}
    if signing_key_pem is not None:
        extra["expo_signature"] = expo_release.sign_manifest(body, signing_key_pem)
    app = _ensure_app(client, app_id)
    files = [
        release.DeltaFile(a.path.relative_to(source).as_posix(), a.sha256_hex, a.path)
        for a in assets
    ]
    with tempfile.TemporaryDirectory(prefix="otasim-publish-") as tmp:
        zip_path = Path(tmp) / "bundle.zip"
        checksum = release.zip_dist(source, zip_path)
        bundle = client.upload_bundle(
            app_id,
            version,
            zip_path=zip_path,
            manifest=release.DeltaManifest(files, ""),
            checksum=checksum,
            **extra,
        )
    return {
        "bundle": bundle,
        "channel": _point_channel(client, app, channel, version, rollout_percent),
    }


def publish_codepush(
    client: AdminClient,
    *,
    app_id: str,
    version: str,
    channel: str,
    source: Path,
    signing_key_pem: bytes | None,
    rollout_percent: float | None = None,
) -> dict[str, Any]:
    """Publish the dist folder `source` as CodePush release `version` (its label) on `channel`.

    The zip (`simulator.codepush_release`, with a `.codepushrelease` JWT when
    `signing_key_pem` is given) is also the bundle Capgo devices get; its package hash is
    stored beside it for the update_check answers.

    Raises:
        PublishError: `source` is not a dist folder.
        release.ReleaseError: the folder or key is unusable.
        AdminError: the server refused or is unreachable.
    """
    if not source.is_dir():
        raise PublishError("a CodePush release is published from its dist folder")
    app = _ensure_app(client, app_id)
    with tempfile.TemporaryDirectory(prefix="otasim-publish-") as tmp:
        package = codepush_release.make_package(source, Path(tmp) / "package.zip", signing_key_pem)
        bundle = client.upload_bundle(
            app_id,
            version,
            zip_path=package.zip_path,
            checksum=package.zip_checksum,
            package_hash=package.package_hash,
        )
    return {
        "bundle": bundle,
        "channel": _point_channel(client, app, channel, version, rollout_percent),
    }
