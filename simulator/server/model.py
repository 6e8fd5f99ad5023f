"""The server's domain records, as the decision logic sees them (frozen, DB-independent)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BUILTIN = "builtin"
DISABLE_AUTO_UPDATE = ("none", "major", "minor", "patch", "version_number")


@dataclass(frozen=True)
class App:
    app_id: str
    expose_metadata: bool = False
    allow_device_custom_id: bool = True


@dataclass(frozen=True)
class Channel:
    """A channel and its policy, with Capgo's column names and defaults."""

    id: int
    app_id: str
    name: str
    version: str | None = None  # bundle name; None = the builtin pseudo-bundle
    public: bool = False
    allow_device_self_set: bool = False
    ios: bool = True
    android: bool = True
    electron: bool = True
    disable_auto_update: str = "major"
    disable_auto_update_under_native: bool = True
    allow_prod: bool = True
    allow_dev: bool = True
    allow_device: bool = True
    allow_emulator: bool = True
    rollout_version: str | None = None
    rollout_bps: int = 0  # 0..10000 basis points
    rollout_paused: bool = False
    auto_pause_fail_ratio: float | None = None  # e.g. 0.2; None = off
    auto_pause_min_samples: int = 20

    def allows_platform(self, platform: str) -> bool:
        return bool(getattr(self, platform, False))

    def to_json(self) -> dict[str, object]:
        """The admin API's view: every field, `version` "builtin" for None, the percentage."""
        info: dict[str, object] = {k: getattr(self, k) for k in self.__dataclass_fields__}
        info["version"] = self.version or BUILTIN
        info["rollout_percent"] = self.rollout_bps / 100
        return info


@dataclass(frozen=True)
class ManifestFile:
    file_name: str  # keeps ".br"
    file_hash: str  # plain SHA-256 hex, or RSA-processed when encrypted
    file_id: str  # sha256 of the stored bytes: the blob served at /files/<file_id>


@dataclass(frozen=True)
class Bundle:
    app_id: str
    name: str
    checksum: str | None = None
    session_key: str = ""
    key_id: str | None = None
    file_id: str | None = None  # the zip blob, if any
    manifest: tuple[ManifestFile, ...] = ()
    min_update_version: str | None = None
    link: str | None = None
    comment: str | None = None
    release: dict[str, str] | None = None  # signed release document (strict mode), as served
    # other dialects' artefacts, by dialect name (simulator.server.dialects checks them)
    dialects: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """What a device endpoint replies, and the backend stats action it records (if any)."""

    status: int
    body: dict[str, object]
    stat: str | None = None
    stat_version: str | None = None
