"""Publish a release to the reference server: zip, optionally encrypt and build the delta
manifest (with `simulator.release`, Capgo CLI compatible), upload, then point a channel at
it, or start a staged rollout. The private key never leaves this process.

Every bundle carries Capgo's artefacts; `dialects` adds other dialects' (a signature, a file
list ...): each dialect's publish step in `DIALECT_STEPS` makes them from the plain zip and
dist folder, uploads the files they need, and returns the data stored with the bundle
(`Bundle.dialects[name]`, checked by that dialect's `simulator.server.dialects` entry)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.protocol.registry import DEFAULT_DIALECT, DIALECTS

from simulator import release
from simulator.server.client import AdminClient, AdminError


class PublishError(Exception):
    """The release cannot be published as asked (bad source, delta from a zip, ...)."""


@dataclass(frozen=True)
class DialectSource:
    """What a dialect's publish step works from (in a temporary folder it may write to)."""

    zip_path: Path  # the plain (unencrypted) zip
    dist: Path | None  # the dist folder, None when publishing a ready zip
    private_pem: bytes | None  # the signing key, when the publisher gave one
    work: Path
    upload: Callable[[Path], str]  # uploads one file, returns its file id


DialectStep = Callable[[DialectSource], dict[str, Any]]
DIALECT_STEPS: dict[str, DialectStep] = {}
"""Each dialect beyond Capgo whose bundles need artefacts of their own, by dialect name."""


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
    dialects: Sequence[str] = (),
) -> dict[str, Any]:
    """Upload `source` (a dist folder, or a zip) as bundle `version` and publish it on
    `channel` (created if missing; public when the app has no public channel yet).

    With `private_pem` the zip is encrypted and its checksum signed (Capgo v2); with `delta`
    a per-file manifest is uploaded too (needs a dist folder). With `rollout_percent` the
    channel keeps its version and rolls `version` out to that share of devices.

    `dialects`: the bundle also carries these dialects' artefacts (`DIALECT_STEPS`).

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
    unknown = [d for d in dialects if d not in DIALECTS]
    if unknown:
        raise PublishError(f"unknown dialect {unknown[0]!r} (known: {', '.join(DIALECTS)})")
    app = _ensure_app(client, app_id)
    with tempfile.TemporaryDirectory(prefix="otasim-publish-") as tmp:
        work = Path(tmp)
        zip_path = source
        if source.is_dir():
            zip_path = work / "bundle.zip"
            release.zip_dist(source, zip_path)
        fields: dict[str, Any] = {"checksum": release.file_sha256(zip_path)}
        source_of = DialectSource(
            zip_path, source if source.is_dir() else None, private_pem, work,
            lambda path: client.upload_file(app_id, path),
        )  # fmt: skip
        fields["dialects"] = {
            name: DIALECT_STEPS[name](source_of)
            for name in dict.fromkeys(dialects)
            if name != DEFAULT_DIALECT and name in DIALECT_STEPS
        }
        if private_pem is not None:
            sealed = release.encrypt_bundle(zip_path, private_pem, work / "bundle.encrypted.zip")
            zip_path = sealed.path
            fields |= {
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
