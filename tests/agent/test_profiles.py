"""The plugin profile registry: names, defaults and the differences each line carries."""

from __future__ import annotations

import dataclasses

import pytest

from agent.config import PLUGIN_VERSION, DeviceIdentity
from agent.protocol.profiles import (
    DEFAULT_PROFILE,
    PLUGIN_PROFILES,
    get_profile,
    profile_for_version,
)


def test_default_is_the_plugin_8_line() -> None:
    profile = get_profile()
    assert profile.name == DEFAULT_PROFILE == "plugin-8"
    assert profile.plugin_version == PLUGIN_VERSION
    assert profile.line == 8
    assert profile.stats_batched and profile.reads_kind


def test_older_lines_send_single_stats_and_ignore_kind() -> None:
    for name in ("plugin-6", "plugin-7"):
        profile = get_profile(name)
        assert not profile.stats_batched
        assert not profile.reads_kind
    assert get_profile("plugin-6").unset_channel_delete
    assert not get_profile("plugin-6").channel_stored_locally
    assert not get_profile("plugin-6").accepts_manifest
    assert get_profile("plugin-7").channel_stored_locally


def test_every_profile_version_is_a_valid_identity_version() -> None:
    for profile in PLUGIN_PROFILES.values():
        ident = DeviceIdentity(
            "00000000-0000-4000-8000-000000000001",
            "com.example.app",
            "android",
            "1.0.0",
            plugin_version=profile.plugin_version,
        )
        assert ident.plugin_version.startswith(f"{profile.line}.")
        assert profile.name == f"plugin-{profile.line}"


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown plugin profile 'plugin-5'.*plugin-6"):
        get_profile("plugin-5")


def test_profiles_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_profile().reads_kind = False  # type: ignore[misc]


def test_profile_for_version() -> None:
    assert profile_for_version("6.2.0").name == "plugin-6"
    assert profile_for_version("7.0.1").name == "plugin-7"
    assert profile_for_version("9.0.0").name == "plugin-8"
    with pytest.raises(ValueError, match="oldest"):
        profile_for_version("5.10.0")
