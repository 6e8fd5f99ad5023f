"""The /updates decision, as a pure function of the request and the resolved channel.

It follows the order of Capgo's `updateWithPG()` (reference §3.3) from step 4 on: plugin and
build checks, channel found, bundle present, key id, "no new version", the channel policy
checks in Capgo's order, the builtin target, then the offer. Bodies, messages and `kind`s are
Capgo's. Channel resolution (override, named, first public) and the rollout draw happen before
this function; I/O (recording stats, the device row) after it.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.protocol.answers import kind_of
from agent.protocol.base import RELEASE_FIELD

from simulator.server import semver
from simulator.server.model import BUILTIN, Answer, App, Bundle, Channel
from simulator.server.validation import DeviceInfo

MANIFEST_MIN = {5: "5.10.0", 6: "6.25.0", 7: "7.0.35", 8: "8.0.0"}
METADATA_MIN = {5: "5.35.0", 6: "6.35.0", 7: "7.35.0", 8: "8.35.0"}


def refusal(
    code: str,
    message: str,
    stat: str | None = None,
    stat_version: str | None = None,
    **extra: object,
) -> Answer:
    """An HTTP 200 `{error, message, ...extra, kind}` answer recording backend stat `stat`."""
    body: dict[str, object] = {"error": code, "message": message, **extra, "kind": kind_of(code)}
    return Answer(200, body, stat, stat_version)


def decide(
    info: DeviceInfo,
    app: App,
    channel: Channel | None,
    overridden: bool,
    bundle: Bundle | None,
    file_url: Callable[[str], str],
) -> Answer:
    """Answer an update check.

    `channel` is the resolved channel (None when none matched), `overridden` whether it came
    from a device override, `bundle` the target the rollout picked (None = builtin), and
    `file_url(file_id)` builds a download URL.
    """
    early = _check_device(info)
    if early is not None:
        return early
    if channel is None:
        return refusal("no_channel", "no default channel or override", "NoChannelOrOverride")
    name = bundle.name if bundle is not None else BUILTIN
    if bundle is not None and bundle.file_id is None and not bundle.manifest:
        return refusal("no_bundle", "Cannot get bundle", "missingBundle", name)
    if bundle is not None and _key_mismatch(info, bundle):
        return refusal(
            "key_id_mismatch",
            "Device encryption key does not match bundle encryption key. The device may have "
            "a different public key than the one used to encrypt this bundle.",
            "keyMismatch",
            name,
            deviceKeyId=info.key_id,
            bundleKeyId=bundle.key_id,
        )
    if info.version_name == name:
        fresh = {RELEASE_FIELD: bundle.release} if bundle.release else {}
        return refusal(
            "no_new_version_available", "No new version available", "noNew", name, **fresh
        )
    blocked = check_policy(info, channel, overridden, bundle)
    if blocked is not None:
        return blocked
    if bundle is None:
        return _builtin(info)
    return _offer(info, app, bundle, file_url)


def _check_device(info: DeviceInfo) -> Answer | None:
    if info.version_build == "unknown":
        return refusal(
            "unknown_version_build", "Version build is unknown, cannot proceed with update"
        )
    plugin = semver.parse(info.plugin_version)
    if plugin is not None and plugin.major == 4:
        return refusal(
            "unsupported_plugin_version",
            f"Plugin version {info.plugin_version} (v4) is no longer supported. "
            "Please upgrade to v5.10.0 or later.",
            "backend_refusal",
        )
    return None


def _key_mismatch(info: DeviceInfo, bundle: Bundle) -> bool:
    return (
        bool(info.key_id)
        and bool(bundle.key_id)
        and info.key_id != bundle.key_id
        and semver.less_than("8.40.7", info.plugin_version)
    )


def _version_blocks(info: DeviceInfo, channel: Channel, bundle: Bundle) -> Answer | None:
    """The major/minor/patch/version_number/under-native checks (not for builtin)."""
    target, native = semver.parse(bundle.name), semver.parse(info.version_build)
    if target is None or native is None:
        return None
    mode, name = channel.disable_auto_update, bundle.name
    major = {"major": True, "version": name, "old": info.version_build}
    if mode == "minor" and (target.major, target.minor) != (native.major, native.minor):
        return refusal(
            "disable_auto_update_to_minor",
            "Cannot upgrade minor version",
            "disableAutoUpdateToMinor",
            name,
            **major,
        )
    same_patch = (target.major, target.minor, target.patch) == (
        native.major,
        native.minor,
        native.patch,
    )
    if mode == "patch" and not same_patch:
        return refusal(
            "disable_auto_update_to_patch",
            "Cannot upgrade patch version",
            "disableAutoUpdateToPatch",
            name,
            **major,
        )
    if mode == "version_number":
        if bundle.min_update_version is None:
            return refusal(
                "misconfigured_channel",
                f"Channel {channel.name} is misconfigured",
                "channelMisconfigured",
                name,
                version=name,
                old=info.version_build,
            )
        if semver.less_than(info.version_build, bundle.min_update_version):
            return refusal(
                "disable_auto_update_to_metadata",
                "Cannot upgrade version, min update version > current version",
                "disableAutoUpdateMetadata",
                name,
                **major,
            )
    if channel.disable_auto_update_under_native and target < native:
        return refusal(
            "disable_auto_update_under_native",
            "Cannot revert under native version",
            "disableAutoUpdateUnderNative",
            name,
            version=name,
            old=info.version_name,
        )
    return None


def check_policy(
    info: DeviceInfo, channel: Channel, overridden: bool, bundle: Bundle | None
) -> Answer | None:
    """Capgo step 10: the channel policy checks, in Capgo's order; None when all pass."""
    name = bundle.name if bundle is not None else BUILTIN
    old = {"version": name, "old": info.version_name}
    platform = info.platform
    if not channel.allows_platform(platform):
        label = "ios it's" if platform == "ios" else f"{platform} is"
        return refusal(
            f"disabled_platform_{platform}",
            f"Cannot update, {label} disabled",
            f"disablePlatform{platform.capitalize()}",
            name,
            **old,
        )
    target, native = semver.parse(name), semver.parse(info.version_build)
    if (
        bundle is not None
        and channel.disable_auto_update == "major"
        and target is not None
        and native is not None
        and target.major > native.major
    ):
        return refusal(
            "disable_auto_update_to_major",
            "Cannot upgrade major version",
            "disableAutoUpdateToMajor",
            name,
            major=True,
            version=name,
            old=info.version_build,
        )
    if not channel.allow_device_self_set and not channel.public and not overridden:
        return refusal(
            "cannot_update_via_private_channel",
            _private_message(channel.name, info.default_channel),
            "cannotUpdateViaPrivateChannel",
            name,
        )
    if bundle is not None:
        blocked = _version_blocks(info, channel, bundle)
        if blocked is not None:
            return blocked
    return _build_blocks(info, channel, name)


def _private_message(channel: str, default_channel: str) -> str:
    head = (
        f'Cannot update via a private channel. The channel "{channel}" does not allow device '
        "self-assignment."
    )
    allow = '"Allow devices to self dissociate/associate"'
    if default_channel:
        return (
            f'{head} Please ensure your defaultChannel "{default_channel}" has {allow} set to true.'
        )
    return f"{head} Please set a defaultChannel with {allow} enabled."


def _build_blocks(info: DeviceInfo, channel: Channel, name: str) -> Answer | None:
    old = {"version": name, "old": info.version_name}
    prod, emulator = info.is_prod, info.is_emulator
    rules = (
        (prod and not channel.allow_prod, "disable_prod_build", "prod build", "disableProdBuild"),
        (not prod and not channel.allow_dev, "disable_dev_build", "dev build", "disableDevBuild"),
        (not emulator and not channel.allow_device, "disable_device", "device", "disableDevice"),
        (
            emulator and not channel.allow_emulator,
            "disable_emulator",
            "emulator",
            "disableEmulator",
        ),
    )
    for hit, code, what, stat in rules:
        if hit:
            return refusal(code, f"Cannot update, {what} is disabled", stat, name, **old)
    return None


def _builtin(info: DeviceInfo) -> Answer:
    if semver.less_than(info.plugin_version, "6.2.0"):
        return refusal(
            "revert_to_builtin_plugin_version_too_old",
            "revert_to_builtin used, but plugin version is too old",
        )
    if info.raw_version_name == BUILTIN:
        return refusal("already_on_builtin", "Already on builtin")
    return refusal("already_on_builtin", "Already on builtin", version=BUILTIN)


def _offer(info: DeviceInfo, app: App, bundle: Bundle, file_url: Callable[[str], str]) -> Answer:
    manifest_ok = semver.at_least(info.plugin_version, MANIFEST_MIN)
    manifest = [
        {"file_name": f.file_name, "file_hash": f.file_hash, "download_url": file_url(f.file_id)}
        for f in (bundle.manifest if manifest_ok else ())
    ]
    if bundle.file_id is None and not manifest:
        return refusal("no_bundle_url", "Cannot get bundle url", "cannotGetBundle", bundle.name)
    url = file_url(bundle.file_id) if bundle.file_id is not None else file_url("no.zip")
    body: dict[str, object] = {
        "version": bundle.name,
        "url": url,
        "session_key": bundle.session_key,
        "checksum": bundle.checksum,
    }
    if manifest:
        body["manifest"] = manifest
    if bundle.release:
        body[RELEASE_FIELD] = bundle.release
    if app.expose_metadata and semver.at_least(info.plugin_version, METADATA_MIN):
        body.update({k: v for k, v in (("link", bundle.link), ("comment", bundle.comment)) if v})
    return Answer(200, body, "get", bundle.name)
