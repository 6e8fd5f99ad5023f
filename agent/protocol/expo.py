"""The Expo Updates dialect (protocol v1, `expo-updates`): one GET, a manifest or a directive.

The check is `GET <updateUrl>` with the protocol's `expo-*` headers (the runtime version is
the app's native build, the channel goes as `expo-channel-name`, the running update's id as
`expo-current-update-id`, the app id as `otasim-app-id`). The answer is a `multipart/mixed`
body with `manifest`, `extensions` and `directive` parts, or a bare JSON manifest; zero parts
or HTTP 204 mean no update. With a code-signing certificate (`AgentConfig.code_signing_pem`),
a manifest or `rollBackToEmbedded` directive must carry a valid `expo-signature` (on the
part, or for a JSON answer in the response headers); an unsigned `noUpdateAvailable` is
taken, since it installs nothing. Asset hashes must be base64url SHA-256
(`agent.security.expo`).

A manifest becomes an `UpdateOffer` whose files are its launch asset and assets, each stored
as `<key><fileExtension>` and checked against its hash by the shared manifest download. Its
label is `metadata.version` when the server gives one (the reference server does), else the
update id; its content identity (`checksum`) is the update id. Its `runtimeVersion` (required)
must be the app's native build (`expo-runtime-version`), else the core refuses it
(`runtime_mismatch`): expo-updates never launches an update made for another runtime. A signed
manifest also carries a `ReleaseDocument` whose counter is `createdAt` in milliseconds: the
core then refuses any manifest older than one accepted here (a replay), as expo-updates only
loads newer updates.
A signed `rollBackToEmbedded` is ordered the same way by its `commitTime`: one older than an
update accepted here is refused (`release_replayed`), as expo-updates applies the directive
only when it is newer than the running update. Expo has no report or channel API: no stats are
queued (`reported_actions` is empty) and the channel calls raise `ProtocolError`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from agent.config import AgentConfig
from agent.errors import ProtocolError, VerificationError
from agent.protocol.base import (
    CheckResult,
    DeviceInfo,
    ManifestEntry,
    NoUpdate,
    OutgoingRequest,
    RateLimitHint,
    ReleaseDocument,
    RevertToBuiltin,
    StatEvent,
    StatsOutcome,
    UpdateOffer,
    WithoutListing,
)
from agent.protocol.bounds import MAX_ANSWER_BYTES, label_problem, load_json, url_problem
from agent.protocol.capgo import retry_hint, stats_outcome
from agent.protocol.multipart import Part, boundary_of, parse_multipart, part_name
from agent.protocol.nochannel import NoChannelApi
from agent.security.expo import (
    ALGORITHM,
    CodeSigningCertificate,
    asset_hash_hex,
    created_at_ms,
    load_certificate,
    verify_part,
)

PROTOCOL_VERSION: Final = "1"
ACCEPT: Final = "multipart/mixed, application/expo+json, application/json"
NEVER_EXPIRES: Final = 2**62
"""A signed Expo manifest has no expiry; the release document it yields never goes stale."""
NO_UPDATE: Final = "no_update_available"
APP_HEADER: Final = "otasim-app-id"
"""Names the app to a server that serves several (the reference server): one of the app's
configured `requestHeaders`, as Expo apps send them; other servers ignore it."""


@dataclass(frozen=True)
class _Signed:
    """A manifest or directive body and the signature header that came with it."""

    body: bytes
    signature: str | None


class ExpoDialect(NoChannelApi, WithoutListing):
    """Builders and parsers for Expo Updates protocol v1. Pure; see `Dialect`."""

    name = "expo"
    stats_batch_size = 1
    reported_actions: frozenset[str] = frozenset()  # no report API: the core queues nothing
    stores_channel_locally = True
    no_channel_api = (
        "Expo Updates has no channel API: the channel is the app's expo-channel-name header"
    )

    def __init__(self, certificate: CodeSigningCertificate | None = None) -> None:
        self.certificate = certificate
        # signed manifests carry a verified ReleaseDocument: the core orders them (anti-replay)
        self.verifies_releases = certificate is not None

    @classmethod
    def from_config(cls, config: AgentConfig) -> ExpoDialect:
        """The dialect for an app's options (its code-signing certificate, if any).

        Raises:
            CertificateError: the configured certificate is unusable.
        """
        pem = config.code_signing_pem
        return cls(load_certificate(pem) if pem else None)

    def check_request(self, info: DeviceInfo) -> OutgoingRequest:
        ident = info.identity
        headers = {
            "expo-protocol-version": PROTOCOL_VERSION,
            "expo-platform": ident.platform,
            "expo-runtime-version": ident.version_build,
            "accept": ACCEPT,
            "expo-embedded-update-id": str(embedded_update_id(ident.app_id, ident.version_build)),
            "eas-client-id": ident.device_id,
            APP_HEADER: ident.app_id,
        }
        if info.current_content:
            headers["expo-current-update-id"] = info.current_content
        if info.channel:
            headers["expo-channel-name"] = info.channel
        if self.certificate is not None:
            headers["expo-expect-signature"] = (
                f'sig, keyid="{self.certificate.key_id}", alg="{ALGORITHM}"'
            )
        return OutgoingRequest("/updates", "GET", info.config.update_url, headers)

    def parse_check(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> CheckResult:
        """Classify an Expo answer; a refused signature or hash is a `failed` NoUpdate whose
        error is the verification action (`signature_fail`, `checksum_fail`, ...).

        Raises:
            ProtocolError: a malformed answer (not JSON, bad multipart, missing fields).
        """
        if status == 429:
            return RateLimitHint("too_many_requests", retry_hint(headers, None, now))
        if status == 204:
            return NoUpdate("up_to_date", NO_UPDATE, status=204)
        if status != 200:
            return NoUpdate("failed", f"http_{status}", status=status)
        version = headers.get("expo-protocol-version")
        if version is not None and version.strip() != PROTOCOL_VERSION:
            return NoUpdate("failed", "unsupported_protocol", f"expo-protocol-version {version}")
        if len(body) > MAX_ANSWER_BYTES:
            raise ProtocolError(f"answer is {len(body)} bytes, over {MAX_ANSWER_BYTES}")
        try:
            return self._classify(headers, body, now)
        except VerificationError as exc:
            return NoUpdate("failed", exc.action, exc.reason)

    def _classify(self, headers: Mapping[str, str], body: bytes, now: float) -> CheckResult:
        boundary = boundary_of(headers.get("content-type", ""))
        if boundary is None:  # a bare JSON manifest, signed in the response headers
            return self._manifest(_Signed(body, headers.get("expo-signature")), now)
        named: dict[str, Part] = {}
        for part in parse_multipart(body, boundary):
            name = part_name(part)
            if name in ("manifest", "directive") and name in named:
                raise ProtocolError(f"multipart answer has two {name} parts")
            if name is not None:
                named.setdefault(name, part)
        manifest, directive = named.get("manifest"), named.get("directive")
        if manifest is not None and directive is not None:
            raise ProtocolError("multipart answer has both a manifest and a directive")
        if manifest is not None:
            signature = manifest.headers.get("expo-signature") or headers.get("expo-signature")
            extensions = named.get("extensions")
            asked = _asset_headers(extensions.body) if extensions is not None else {}
            return self._manifest(_Signed(manifest.body, signature), now, asked)
        if directive is not None:
            signature = directive.headers.get("expo-signature")
            return self._directive(_Signed(directive.body, signature), now)
        return NoUpdate("up_to_date", NO_UPDATE)

    def _directive(self, signed: _Signed, now: float) -> CheckResult:
        data = _object(signed.body, "directive")
        kind = data.get("type")
        if kind == "noUpdateAvailable":
            if self.certificate is not None and signed.signature:
                verify_part(signed.body, signed.signature, self.certificate, now)
            return NoUpdate("up_to_date", NO_UPDATE)
        if kind != "rollBackToEmbedded":
            raise ProtocolError(f"unknown directive type {str(kind)[:40]!r}")
        if self.certificate is not None:
            verify_part(signed.body, signed.signature, self.certificate, now)
        parameters = data.get("parameters")
        commit_time = parameters.get("commitTime") if isinstance(parameters, dict) else None
        committed = _created_at(commit_time, "rollBackToEmbedded commitTime")
        # signed: the core orders it against the updates accepted here (a replayed revert)
        return RevertToBuiltin(committed if self.certificate is not None else None)

    def _manifest(
        self, signed: _Signed, now: float, asked: Mapping[str, Mapping[str, str]] | None = None
    ) -> UpdateOffer:
        if self.certificate is not None:
            verify_part(signed.body, signed.signature, self.certificate, now)
        data = _object(signed.body, "manifest")
        update_id = _update_id(data.get("id"))
        created = _created_at(data.get("createdAt"), "manifest createdAt")
        runtime = data.get("runtimeVersion")
        if not isinstance(runtime, str) or not runtime or len(runtime) > 255:
            raise ProtocolError("a manifest needs a runtimeVersion string")
        launch = data.get("launchAsset")
        assets = data.get("assets", [])
        if not isinstance(launch, dict) or not isinstance(assets, list):
            raise ProtocolError("a manifest needs a launchAsset object and an assets list")
        entries = tuple(
            _entry(item, index, asked or {}) for index, item in enumerate([launch, *assets])
        )
        metadata = data.get("metadata")
        named = metadata.get("version") if isinstance(metadata, dict) else None
        label = named if isinstance(named, str) and not label_problem(named) else update_id
        release = None
        if self.certificate is not None:  # everything above was signed: the order is trusted
            release = ReleaseDocument("", label, created, NEVER_EXPIRES, update_id)
        return UpdateOffer(
            version=label,
            url="",
            checksum=update_id,
            session_key="",
            manifest=entries,
            release=release,
            native_build=runtime,
        )

    def stats_request(self, info: DeviceInfo, events: Sequence[StatEvent]) -> OutgoingRequest:
        """Raises ValueError: Expo Updates has no report API (`reported_actions` is empty, so
        the core queues nothing to send)."""
        raise ValueError("Expo Updates has no report API")

    def parse_stats(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> tuple[StatsOutcome, float | None]:
        return stats_outcome(status, headers, body, now)


_EMBEDDED: Final = uuid.UUID("5b0b3c7e-8a57-4d51-9a3c-0f7e2d0c1a11")


def embedded_update_id(app_id: str, runtime_version: str) -> uuid.UUID:
    """The id of the update shipped in the binary (stable per app and native build)."""
    return uuid.uuid5(_EMBEDDED, f"{app_id}/{runtime_version}")


def _object(body: bytes, what: str) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict):
        raise ProtocolError(f"an Expo {what} must be a JSON object")
    return data


def _update_id(value: object) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise ProtocolError("a manifest id must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ProtocolError("a manifest id must be a UUID") from None


def _created_at(value: object, what: str) -> int:
    try:
        return created_at_ms(value)
    except (ValueError, OverflowError):
        raise ProtocolError(f"{what} is not an ISO 8601 date") from None


def _asset_headers(body: bytes) -> dict[str, dict[str, str]]:
    """The extensions part's `assetRequestHeaders` ({asset key: {header: value}}), keeping
    only headers that cannot change where or how a file is fetched (the part is unsigned: the
    asset hashes, which are, still decide what is installed).

    Raises:
        ProtocolError: the part is not a JSON object, or the headers are malformed.
    """
    data = _object(body, "extensions part")
    asked = data.get("assetRequestHeaders", {})
    if not isinstance(asked, dict):
        raise ProtocolError("assetRequestHeaders must be an object")
    kept: dict[str, dict[str, str]] = {}
    for key, headers in asked.items():
        if not isinstance(headers, dict):
            raise ProtocolError("each assetRequestHeaders entry must be an object")
        kept[key] = {
            name.lower(): value
            for name, value in headers.items()
            if isinstance(value, str)
            and _HEADER_NAME.fullmatch(name)
            and name.lower() not in _FETCH_HEADERS
            and value.isprintable()
            and len(value) <= 4096
        }
    return kept


_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_FETCH_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "range", "accept-encoding",
     "te", "upgrade", "proxy-authorization", "expect", "cookie"}
)  # fmt: skip


def _entry(item: object, index: int, asked: Mapping[str, Mapping[str, str]]) -> ManifestEntry:
    """One asset as a manifest file: `<key><fileExtension>`, its hash as SHA-256 hex, and the
    headers the extensions part asks to send with it."""
    if not isinstance(item, dict):
        raise ProtocolError(f"asset {index} is not an object")
    key, url, extension = item.get("key"), item.get("url"), item.get("fileExtension", "")
    if not isinstance(key, str) or not key or not isinstance(extension, str):
        raise ProtocolError(f"asset {index} needs a string key (and fileExtension)")
    if not isinstance(url, str) or url_problem(url):
        raise ProtocolError(f"asset {index} url: {url_problem(str(url))}")
    if "hash" not in item:
        raise VerificationError("checksum_required", f"asset {key[:40]!r} has no hash")
    if extension and not extension.startswith("."):
        extension = "." + extension
    if (key + extension).endswith(".br"):  # the shared download would un-brotli it
        raise ProtocolError(f"asset {index}: names ending in .br are not supported")
    return ManifestEntry(
        key + extension, asset_hash_hex(item["hash"]), url, dict(asked.get(key, {}))
    )
