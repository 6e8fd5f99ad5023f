"""Publish a release to the reference server: zip, optionally encrypt and build the delta
manifest (with `simulator.release`, Capgo CLI compatible), upload, then point a channel at
it, or start a staged rollout. The private key never leaves this process.

Every bundle carries Capgo's artefacts; `dialects` adds other dialects' (a signature, a file
list ...): each dialect's publish step in `DIALECT_STEPS` makes them from the plain zip and
dist folder, uploads the files they need, and returns the data stored with the bundle
(`Bundle.dialects[name]`, checked by that dialect's `simulator.server.dialects` entry)."""

from __future__ import annotations

import base64
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agent.bundles.unzip import safe_unzip
from agent.errors import AgentError, VerificationError
from agent.protocol.registry import DEFAULT_DIALECT, DIALECTS
from agent.security.keys import load_public_key
from agent.security.release import open_release, sign_release

from simulator import codepush_release, expo_release, release
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
    version: str  # the bundle's version (a dialect's label)
    file_url: str  # where the server serves an uploaded file: `.format(file_id=...)`


DialectStep = Callable[[DialectSource], dict[str, Any]]


def _capawesome(source: DialectSource) -> dict[str, Any]:
    """The plain zip, its SHA-256 and, with a key, the SHA256withRSA signature over it."""
    checksum = release.file_sha256(source.zip_path)
    data = {"file_id": source.upload(source.zip_path), "checksum": checksum}
    if source.private_pem is not None:
        data["signature"] = release.sign_file_digest(source.private_pem, checksum)
    return data


def _appflow(source: DialectSource) -> dict[str, Any]:
    """Every file of the dist folder (unpacked from the zip when given a zip), uploaded, with
    its size and SRI sha256 hash: the snapshot's `pro-manifest.json`."""
    dist = _dist_of(source)
    files = []
    for path in release.dist_files(dist):
        digest = base64.b64encode(bytes.fromhex(release.file_sha256(path))).decode()
        files.append({
            "href": path.relative_to(dist).as_posix(), "size": path.stat().st_size,
            "integrity": f"sha256-{digest}", "file_id": source.upload(path),
        })  # fmt: skip
    return {"files": files}


def _dist_of(source: DialectSource) -> Path:
    """The dist folder of the release (the plain zip unpacked, when a zip was published)."""
    if source.dist is not None:
        return source.dist
    unpacked = source.work / "dist"
    try:
        safe_unzip(source.zip_path, unpacked)
    except (OSError, AgentError) as exc:
        raise PublishError(f"cannot unpack {source.zip_path}: {exc}") from None
    return unpacked


def _expo_step(source: DialectSource) -> dict[str, Any]:
    """The Expo manifest of the release, its assets uploaded, signed with the key if given."""
    assets = expo_release.dist_assets(_dist_of(source), source.file_url)
    for asset in assets:
        source.upload(asset.path)
    body = expo_release.build_manifest(
        assets, version=source.version, runtime_version=expo_release.RUNTIME_VERSION
    )
    signature = None
    if source.private_pem is not None:
        signature = expo_release.sign_manifest(body, source.private_pem)
    return {"manifest": body.decode(), "signature": signature}


def _codepush_step(source: DialectSource) -> dict[str, Any]:
    """The CodePush package of the release (signed with the key if given), uploaded."""
    package = codepush_release.make_package(
        _dist_of(source), source.work / "codepush.zip", source.private_pem
    )
    return {"file_id": source.upload(package.zip_path), "package_hash": package.package_hash}


DIALECT_STEPS: dict[str, DialectStep] = {
    "expo": _expo_step,
    "codepush": _codepush_step,
    "capawesome": _capawesome,
    "appflow": _appflow,
}
"""Each dialect beyond Capgo whose bundles need artefacts of their own, by dialect name."""

DIALECT_TRUST: dict[str, Callable[[bytes], str]] = {
    "expo": expo_release.certificate_for,
    "codepush": codepush_release.public_pem_for,
}
"""What an app of each dialect beyond Capgo embeds to verify releases signed with a private
key: Expo a code-signing certificate, CodePush the public key."""


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
            lambda path: client.upload_file(app_id, path), version,
            client.url + "/files/{file_id}",
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


def refresh(
    client: AdminClient, *, app_id: str, version: str, private_pem: bytes, expires_days: float
) -> dict[str, Any]:
    """Re-sign the strict release document of a published `version` with a new expiry (now +
    `expires_days`), everything else kept (its counter too: a refresh is not a new release),
    and hand it to the server. Strict devices that hold the old one take the fresher one
    from their next "no new version" answer and stop reporting a freeze.

    Returns the server's answer ({"app_id", "version", "expires"}).

    Raises:
        PublishError: the server's document does not verify with this key, or is for another
            app or version.
        release.ReleaseError: bad private key.
        AdminError: no such bundle, no document (published without --strict), unreachable.
    """
    private = release.load_private_key(private_pem)
    public = load_public_key(release.public_pem_of(private).decode())
    try:
        document = open_release(client.release(app_id, version), public)
    except VerificationError as exc:
        raise PublishError(
            f"{app_id} {version}: the server's release document does not verify with this key "
            f"({exc.reason})"
        ) from None
    if (document.app_id, document.version) != (app_id, version):
        raise PublishError(
            f"{app_id} {version}: the server's document is for {document.app_id} {document.version}"
        )
    fresh = replace(document, expires=int(time.time() + expires_days * 86400))
    return client.replace_release(app_id, version, sign_release(fresh, private))
