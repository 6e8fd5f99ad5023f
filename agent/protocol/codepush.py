"""The CodePush dialect (`react-native-code-push` against Microsoft's or a compatible server).

The check is `GET <updateUrl>?deployment_key=&app_version=&package_hash=&is_companion=&label=
&client_unique_id=` (`updateUrl` ends in `/v0.1/public/codepush/update_check`). The answer
`{"update_info": {...}}` (snake_case; the legacy camelCase `updateInfo` is read too) offers
the package at `download_url` when `is_available`; `update_app_version` means only a store
update can help (blocked), `should_run_binary_version` with nothing available sends the device
back to the binary. The package is a zip checked after unzipping against `package_hash`
(`agent.security.codepush`), and with the app's code-signing key against its
`.codepushrelease` JWT; its label is the release label.

Reports (to `<statsUrl>/download` and `<statsUrl>/deploy`, the stats URL ending in
`/v0.1/public/codepush/report_status`): `download_complete` goes to `download`; a package's
first confirmed boot (`update_confirmed`: the app called notifyAppReady on the start that runs
it, when the SDK's `getNewStatusReport` reports it) as `DeploymentSucceeded`, with the package
it replaced as the previous label, and a failed one (`update_fail`) as `DeploymentFailed` to
`deploy`, each for the deployment key; activation alone reports nothing; other events are not
even queued (`reported_actions`: the SDK has no such report). The deployment key is
`AgentConfig.deployment_key`, else the reference server's convention
`<appId>/<platform>[/<channel>]`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric import rsa

from agent.config import AgentConfig
from agent.errors import ProtocolError
from agent.protocol.base import (
    UPDATE_CONFIRMED,
    CheckResult,
    DeviceInfo,
    NoUpdate,
    OutgoingRequest,
    RateLimitHint,
    RevertToBuiltin,
    StatEvent,
    StatsOutcome,
    UpdateOffer,
    WithoutListing,
)
from agent.protocol.bounds import check_label, load_json, load_json_lenient, url_problem
from agent.protocol.capgo import retry_hint, stats_outcome
from agent.protocol.nochannel import NoChannelApi
from agent.security.codepush import load_signing_key, verify_package

_SHA256_HEX_CHARS: Final = 64
REPORTED_ACTIONS: Final = frozenset({"download_complete", UPDATE_CONFIRMED, "update_fail"})
"""The events CodePush reports; the core queues no other (the SDK has no report for them)."""
_CAMEL: Final = {
    "download_url": "downloadURL",
    "is_available": "isAvailable",
    "is_mandatory": "isMandatory",
    "package_hash": "packageHash",
    "package_size": "packageSize",
    "update_app_version": "updateAppVersion",
    "should_run_binary_version": "shouldRunBinaryVersion",
    "is_disabled": "isDisabled",
}


class CodePushDialect(NoChannelApi, WithoutListing):
    """Builders and parsers for the CodePush update protocol. Pure; see `Dialect`."""

    name = "codepush"
    stats_batch_size = 1
    stores_channel_locally = True
    no_channel_api = "CodePush has no channel API: the deployment key names the deployment"
    reported_actions = REPORTED_ACTIONS

    def __init__(self, signing_key: rsa.RSAPublicKey | None = None) -> None:
        self.signing_key = signing_key

    @classmethod
    def from_config(cls, config: AgentConfig) -> CodePushDialect:
        """The dialect for an app's options (its code-signing public key, if any).

        Raises:
            SigningKeyError: the configured key is unusable.
        """
        pem = config.code_signing_pem
        return cls(load_signing_key(pem) if pem else None)

    def deployment_key(self, info: DeviceInfo) -> str:
        if info.config.deployment_key:
            return info.config.deployment_key
        ident = info.identity
        channel = f"/{info.channel}" if info.channel else ""
        return f"{ident.app_id}/{ident.platform}{channel}"

    def check_request(self, info: DeviceInfo) -> OutgoingRequest:
        ident = info.identity
        running = info.current_content is not None
        query = {
            "deployment_key": self.deployment_key(info),
            "app_version": ident.version_build,
            "package_hash": info.current_content or "",
            "is_companion": "false",
            "label": info.version_name if running else "",
            "client_unique_id": ident.device_id,
        }
        url = f"{info.config.update_url}?{urlencode(query)}"
        return OutgoingRequest("/updates", "GET", url, {"accept": "application/json"})

    def parse_check(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> CheckResult:
        """Classify an update_check answer.

        Raises:
            ProtocolError: a 200 answer without an `update_info` object, or an available
                update with missing or mistyped fields.
        """
        if status == 429:
            return RateLimitHint("too_many_requests", retry_hint(headers, None, now))
        if status != 200:
            data = load_json_lenient(body)
            error = data.get("error") if isinstance(data, dict) else None
            return NoUpdate("failed", str(error or f"http_{status}")[:64], status=status)
        data = load_json(body)
        info = data.get("update_info", data.get("updateInfo")) if isinstance(data, dict) else None
        if not isinstance(info, dict):
            raise ProtocolError("an update_check answer needs an update_info object")
        if _field(info, "is_disabled") is True:
            return NoUpdate("blocked", "update_disabled")
        if _field(info, "update_app_version") is True:
            return NoUpdate("blocked", "update_app_version", "a newer binary is required")
        if _field(info, "is_available") is not True:
            if _field(info, "should_run_binary_version") is True:
                return RevertToBuiltin()
            return NoUpdate("up_to_date", "no_update_available")
        return _offer(info)

    def check_unpacked(self, offer: UpdateOffer, folder: Path) -> None:
        """Check an unzipped package (`agent.security.codepush.verify_package`).

        Raises:
            VerificationError: the package does not verify.
        """
        assert offer.package_hash is not None
        verify_package(folder, offer.package_hash, self.signing_key)

    def stats_request(self, info: DeviceInfo, events: Sequence[StatEvent]) -> OutgoingRequest:
        """The report of one event (the core queues only `reported_actions`).

        Raises:
            ValueError: more than one event (CodePush reports one status per request), or an
                action CodePush has no report for.
        """
        if len(events) != 1 or events[0].action not in REPORTED_ACTIONS:
            raise ValueError("CodePush reports one download or deploy event per request")
        event = events[0]
        base = {
            "deployment_key": self.deployment_key(info),
            "label": event.version_name,
            "client_unique_id": info.identity.device_id,
        }
        if event.action == "download_complete":
            return _report(info, "download", base)
        succeeded = event.action == UPDATE_CONFIRMED
        body = base | {
            "app_version": info.identity.version_build,
            "status": "DeploymentSucceeded" if succeeded else "DeploymentFailed",
        }
        if succeeded:
            body["previous_label_or_app_version"] = event.old_version_name or ""
            body["previous_deployment_key"] = base["deployment_key"]
        return _report(info, "deploy", body)

    def parse_stats(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> tuple[StatsOutcome, float | None]:
        return stats_outcome(status, headers, body, now)


def _field(info: Mapping[str, Any], name: str) -> Any:
    return info.get(name, info.get(_CAMEL.get(name, name)))


def _report(info: DeviceInfo, kind: str, body: Mapping[str, str]) -> OutgoingRequest:
    """POST a report to `<statsUrl>/<kind>` (the stats URL ends in `report_status`)."""
    url = f"{info.config.stats_url.rstrip('/')}/{kind}"
    headers = {"content-type": "application/json"}
    return OutgoingRequest("/stats", "POST", url, headers, json.dumps(body).encode())


def _offer(info: Mapping[str, Any]) -> UpdateOffer:
    label = check_label(str(info.get("label") or ""), "an update's label")
    url = _field(info, "download_url")
    if not isinstance(url, str) or url_problem(url):
        raise ProtocolError(f"update {label!r}: download_url {url_problem(str(url))}")
    package_hash = _field(info, "package_hash")
    if not isinstance(package_hash, str) or len(package_hash) != _SHA256_HEX_CHARS:
        raise ProtocolError(f"update {label!r}: package_hash is not a SHA-256 hex digest")
    try:
        bytes.fromhex(package_hash)
    except ValueError:
        raise ProtocolError(f"update {label!r}: package_hash is not hex") from None
    description = info.get("description")
    return UpdateOffer(
        version=label,
        url=url,
        checksum=None,
        session_key="",
        message=description if isinstance(description, str) else None,
        package_hash=package_hash.lower(),
    )
