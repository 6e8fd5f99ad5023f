"""What one device is (`DeviceIdentity`) and how its updater is configured (`AgentConfig`).

Both are frozen dataclasses validated at construction. `AgentConfig` mirrors the options of
`@capgo/capacitor-updater` (`plugins.CapacitorUpdater` in the Capacitor config); each field names
the Capgo option and its default. `AgentConfig.from_capgo` reads the Capgo spelling (camelCase,
`autoUpdate: true`, the deprecated `directUpdate`), as found in a `capacitor.config.json`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from agent.protocol.profiles import PLUGIN_PROFILES
from agent.protocol.profiles import PLUGIN_VERSION as PLUGIN_VERSION  # re-exported

ApplyMode = Literal["atBackground", "atInstall", "onLaunch", "always", "onlyDownload", "off"]
Platform = Literal["ios", "android"]


DEFAULT_UPDATE_URL = "https://plugin.capgo.app/updates"
DEFAULT_STATS_URL = "https://plugin.capgo.app/stats"
DEFAULT_CHANNEL_URL = "https://plugin.capgo.app/channel_self"
MIN_PERIOD_CHECK_DELAY_S = 600
MIN_APP_READY_TIMEOUT_MS = 1000
_APP_ID = re.compile(r"^[a-z0-9]+(\.[\w-]+)+$", re.IGNORECASE)
_STRICT_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


# Capgo keys apps by a reverse-domain id; the other families by an opaque id that goes into
# URL paths (Capawesome Cloud's are UUIDs, Appflow's short hex strings).
_PATH_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def valid_app_id(app_id: str, dialect: str | None = None) -> bool:
    """Whether `app_id` is an app id of `dialect` (Capgo: com.example.app), or, with no dialect,
    of some dialect: letters, digits, `.`, `_` and `-`, safe in a URL path."""
    pattern = _APP_ID if dialect == "capgo" else _PATH_SAFE_ID
    return pattern.match(app_id) is not None


def _check_url(name: str, url: str, *, may_be_empty: bool) -> None:
    if url == "" and may_be_empty:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http:// or https:// URL, got {url!r}")


@dataclass(frozen=True)
class AgentConfig:
    """The updater options of one app (Capgo option name and default beside each field).

    Raises:
        ValueError: an option is out of range or of the wrong kind.
    """

    update_url: str = DEFAULT_UPDATE_URL  # updateUrl; "" disables update checks
    stats_url: str = DEFAULT_STATS_URL  # statsUrl; "" disables stats
    channel_url: str = DEFAULT_CHANNEL_URL  # channelUrl
    app_ready_timeout_ms: int = 10_000  # appReadyTimeout: 10000 ms, min 1000
    response_timeout_s: float = 20.0  # responseTimeout: 20 s
    auto_delete_failed: bool = True  # autoDeleteFailed: true
    auto_delete_previous: bool = True  # autoDeletePrevious: true
    auto_update: ApplyMode = "atBackground"  # autoUpdate: true (= atBackground); false = off
    reset_when_update: bool = True  # resetWhenUpdate: true
    period_check_delay_s: int = 0  # periodCheckDelay: 0 (off); lower non-zero values -> 600
    public_key: str | None = None  # publicKey: undefined (PEM text of the RSA public key)
    default_channel: str | None = None  # defaultChannel: undefined
    # otasim's own options (no Capgo equivalent):
    never_retry_failed_versions: bool = True  # a version that failed here is never re-installed
    allow_downgrade: bool = False  # install versions older than one confirmed here (plugin: yes)
    max_bundle_bytes: int = 512 * 1024 * 1024  # downloads larger than this are refused
    download_timeout_s: float = 600.0  # the plugin clears a download "in progress" after 600 s
    min_download_bytes_per_s: int = 1024  # a download slower than this over a window stops
    stall_window_s: float = 30.0  # that window (real time); 0 turns the rate check off
    transport_attempts: int = 3  # attempts per request before a transport failure is final
    exchange_timeout_s: float = 60.0  # each try of a /updates, /stats, channel_self exchange
    plugin: str = "plugin-8"  # the plugin generation reproduced (agent.protocol.profiles)
    # An artefact (version + checksum) that failed verification is never activated; it is
    # fetched again at most `artefact_retries` times within `artefact_retry_window_s` of its
    # first failure, waiting artefact_retry_backoff_s x 2^(failures - 1) between attempts.
    artefact_retries: int = 3
    artefact_retry_window_s: float = 86_400.0
    artefact_retry_backoff_s: float = 600.0
    # custom CA bundle for https (verification is always on): read by whoever makes the
    # device's HTTP port (`otasim device`, the Locust users); a driver uses the port it is given
    ca_file: str | None = None
    strict_release: bool = False  # require otasim's signed release document (needs public_key)
    # the server protocol spoken: a name in agent.protocol.registry.DIALECTS (checked when the
    # device opens: the registry imports this module)
    dialect: str = "capgo"
    # Expo: the PEM of the app's code-signing certificate; CodePush: of its public key
    code_signing_pem: str | None = None
    deployment_key: str | None = None  # CodePush: the deployment key (else appId/platform)

    def __post_init__(self) -> None:
        _check_url("update_url", self.update_url, may_be_empty=True)
        _check_url("stats_url", self.stats_url, may_be_empty=True)
        _check_url("channel_url", self.channel_url, may_be_empty=True)
        if self.app_ready_timeout_ms < MIN_APP_READY_TIMEOUT_MS:
            raise ValueError(f"app_ready_timeout_ms must be >= {MIN_APP_READY_TIMEOUT_MS}")
        if self.auto_update not in get_args(ApplyMode):
            raise ValueError(f"auto_update must be one of {get_args(ApplyMode)}")
        if self.period_check_delay_s < 0:
            raise ValueError("period_check_delay_s must be >= 0")
        if self.strict_release and not self.public_key:
            raise ValueError("strict_release needs public_key (the release document is signed)")
        if 0 < self.period_check_delay_s < MIN_PERIOD_CHECK_DELAY_S:  # as the plugin does
            object.__setattr__(self, "period_check_delay_s", MIN_PERIOD_CHECK_DELAY_S)
        for name in (
            "response_timeout_s",
            "download_timeout_s",
            "exchange_timeout_s",
            "max_bundle_bytes",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.transport_attempts < 1:
            raise ValueError("transport_attempts must be >= 1")
        if self.artefact_retries < 0:
            raise ValueError("artefact_retries must be >= 0")
        for name in ("artefact_retry_window_s", "artefact_retry_backoff_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.plugin not in PLUGIN_PROFILES:
            raise ValueError(f"plugin must be one of {', '.join(PLUGIN_PROFILES)}")

    @property
    def app_ready_timeout_s(self) -> float:
        return self.app_ready_timeout_ms / 1000.0

    @classmethod
    def from_capgo(cls, options: Mapping[str, Any], **overrides: Any) -> AgentConfig:
        """Build from Capgo option names (`appReadyTimeout`, `autoUpdate`, ...).

        Unknown Capgo options that change nothing here (splash screen, logging) are ignored;
        snake_case names of this class are accepted too.

        Raises:
            ValueError: an unknown option or an invalid value.
        """
        values: dict[str, Any] = {}
        own = {f.name for f in fields(cls)}
        for key, value in options.items():
            if key in own:
                values[key] = value
            elif key in _CAPGO_NAMES:
                values[_CAPGO_NAMES[key]] = value
            elif key == "autoUpdate":
                values["auto_update"] = _apply_mode(value)
            elif key == "directUpdate":
                if value not in (False, None):
                    values["auto_update"] = "always" if value is True else _apply_mode(value)
            elif key not in _IGNORED_CAPGO:
                raise ValueError(f"unknown updater option {key!r}")
        values.update(overrides)
        return cls(**values)


def _apply_mode(value: object) -> ApplyMode:
    if value is True:
        return "atBackground"
    if value is False:
        return "off"
    if isinstance(value, str) and value in get_args(ApplyMode):
        return value  # type: ignore[return-value]
    raise ValueError(f"autoUpdate must be true, false or one of {get_args(ApplyMode)}")


_CAPGO_NAMES = {
    "updateUrl": "update_url",
    "statsUrl": "stats_url",
    "channelUrl": "channel_url",
    "appReadyTimeout": "app_ready_timeout_ms",
    "responseTimeout": "response_timeout_s",
    "autoDeleteFailed": "auto_delete_failed",
    "autoDeletePrevious": "auto_delete_previous",
    "resetWhenUpdate": "reset_when_update",
    "periodCheckDelay": "period_check_delay_s",
    "publicKey": "public_key",
    "defaultChannel": "default_channel",
}
_IGNORED_CAPGO = {
    "autoSplashscreen",
    "autoSplashscreenLoader",
    "autoSplashscreenTimeout",
    "disableJSLogging",
    "osLogging",
    "shakeMenu",
    "shakeMenuGesture",
    "keepUrlPathAfterReload",
}


@dataclass(frozen=True)
class DeviceIdentity:
    """Who the device is: the fields of the Capgo "info object" that do not change per request.

    Raises:
        ValueError: a field the Capgo backend would refuse (bad UUID, app id, platform or
            plugin version), caught here instead of at the server.
    """

    device_id: str  # lowercase UUID, created once and kept across reinstalls
    app_id: str  # reverse-domain app id
    platform: Platform
    version_build: str  # native marketing version (CFBundleShortVersionString / versionName)
    version_code: str = "1"  # native build number (CFBundleVersion / versionCode)
    version_os: str = "17.0"
    plugin_version: str = PLUGIN_VERSION
    is_emulator: bool = False
    is_prod: bool = True
    install_source: str = ""  # app_store, testflight, google_play, ... or ""
    custom_id: str = ""

    def __post_init__(self) -> None:
        try:
            parsed = uuid.UUID(self.device_id)
        except ValueError:
            raise ValueError(f"device_id must be a UUID, got {self.device_id!r}") from None
        object.__setattr__(self, "device_id", str(parsed))
        if not valid_app_id(self.app_id):
            raise ValueError(
                f"app_id must be letters, digits, '.', '_' or '-' (e.g. com.example.app), "
                f"got {self.app_id!r}"
            )
        if self.platform not in get_args(Platform):
            raise ValueError(f"platform must be ios or android, got {self.platform!r}")
        if not self.version_build:
            raise ValueError("version_build must not be empty")
        if not _STRICT_SEMVER.match(self.plugin_version):
            raise ValueError(f"plugin_version must be x.y.z, got {self.plugin_version!r}")
        if len(self.install_source) > 64:
            raise ValueError("install_source is at most 64 characters")
