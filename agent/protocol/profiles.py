"""Plugin profiles: how each `@capgo/capacitor-updater` generation speaks and reads the protocol.

A server built for an older plugin (Capgo's self-hosting docs, community servers written for
plugin 6) answers in shapes that a newer plugin reads differently. A profile names the plugin
release a simulated device reproduces and the protocol differences that matter between the 6.x,
7.x and 8.x lines, from the plugin's source, changelog and the Capgo backend's version gates
(see `../shared/reference/capgo-protocol.md` §2-§5 and docs/agent.md "Plugin profiles"):

- `stats_batched`: 8.x (since the Jan 2026 "batch statistics endpoint requests to 1 per second"
  change) POSTs a JSON array of events; 6.x and 7.x POST one event object per request.
- `reads_kind`: 8.x (>= 8.45.11) sorts an /updates answer carrying `error` by its `kind`
  (up_to_date, blocked, failed) and treats a missing or unknown `kind` as `failed`. The 6.x and
  7.x lines do not read `kind`: from 6.14.25 / 7.17.0 (the Capgo backend ignores `download_fail`
  from older plugins, which sent it for every up-to-date check) `no_new_version_available` ends
  the check quietly and every other error answer, blocks included, is a failure
  (`downloadFailed` and the stat `download_fail`).
- `channel_stored_locally`: setChannel is validated by the server and the channel kept on the
  device (>= 6.34.0 / 7.34.0, every 8.x); before that the server stores an override.
- `unset_channel_delete`: unsetChannel sends `DELETE <channelUrl>` (plugins before 7.34.0).
- `lists_channels`: listChannels (`GET <channelUrl>`) exists (>= 7.5.0).
- `accepts_manifest`: per-file (delta) manifests are understood (>= 6.25.0 / 7.0.35, 8.x).

The agent stays faithful to the chosen profile; otasim's verdicts (simulator/metrics.py) tell
apart what such a device reports from what the server caused.
"""

from __future__ import annotations

from dataclasses import dataclass

PLUGIN_VERSION = "8.51.14"
"""The newest `@capgo/capacitor-updater` release reproduced (the default profile's)."""


@dataclass(frozen=True)
class PluginProfile:
    """One plugin generation: the release reproduced and its protocol differences."""

    name: str  # the --plugin value: "plugin-6", "plugin-7", "plugin-8"
    plugin_version: str  # sent as plugin_version and in the User-Agent
    stats_batched: bool  # stats POST body: JSON array of events (else one object per POST)
    reads_kind: bool  # answers sorted by `kind` (else only no_new_version_available is quiet)
    channel_stored_locally: bool  # setChannel only validated; the device keeps the channel
    unset_channel_delete: bool  # unsetChannel sends DELETE to the channel URL
    lists_channels: bool  # listChannels (GET channel URL) exists
    accepts_manifest: bool  # delta manifests understood
    summary: str

    @property
    def line(self) -> int:
        """The plugin's major version line (6, 7, 8)."""
        return int(self.plugin_version.split(".", 1)[0])


PLUGIN_PROFILES: dict[str, PluginProfile] = {
    profile.name: profile
    for profile in (
        PluginProfile(
            name="plugin-6",
            plugin_version="6.14.28",
            stats_batched=False,
            reads_kind=False,
            channel_stored_locally=False,
            unset_channel_delete=True,
            lists_channels=False,
            accepts_manifest=False,
            summary="6.x line (6.14.28): one stats object per POST, no `kind`, "
            "server-side channel overrides, full zips only",
        ),
        PluginProfile(
            name="plugin-7",
            plugin_version="7.34.0",
            stats_batched=False,
            reads_kind=False,
            channel_stored_locally=True,
            unset_channel_delete=False,
            lists_channels=True,
            accepts_manifest=True,
            summary="7.x line (7.34.0): one stats object per POST, no `kind`, "
            "channel kept on the device",
        ),
        PluginProfile(
            name="plugin-8",
            plugin_version=PLUGIN_VERSION,
            stats_batched=True,
            reads_kind=True,
            channel_stored_locally=True,
            unset_channel_delete=False,
            lists_channels=True,
            accepts_manifest=True,
            summary=f"8.x line ({PLUGIN_VERSION}): batched stats arrays, answers sorted by "
            "`kind` (missing `kind` = failed)",
        ),
    )
}
DEFAULT_PROFILE = "plugin-8"


def get_profile(name: str | None = None) -> PluginProfile:
    """The profile called `name` (the default plugin 8 line when None).

    Raises:
        ValueError: no profile has that name.
    """
    key = DEFAULT_PROFILE if name is None else name
    try:
        return PLUGIN_PROFILES[key]
    except KeyError:
        known = ", ".join(PLUGIN_PROFILES)
        raise ValueError(f"unknown plugin profile {name!r} (known: {known})") from None


def profile_for_version(plugin_version: str) -> PluginProfile:
    """The profile of the line `plugin_version` belongs to (8.x and later: plugin-8).

    Raises:
        ValueError: a line older than 6 (no profile reproduces it).
    """
    line = int(plugin_version.split(".", 1)[0])
    if line < 6:
        raise ValueError(f"no plugin profile for {plugin_version} (oldest: plugin-6)")
    return PLUGIN_PROFILES.get(f"plugin-{line}", PLUGIN_PROFILES[DEFAULT_PROFILE])
