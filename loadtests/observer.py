"""Turns what a device's agent does into Locust `request` events.

- every HTTP attempt, under the agent's stable names (`/updates`, `/stats`, `/channel_self`,
  `bundle`, `delta file`), with its time and length; a failure carries the agent's typed
  error, or `HttpStatusError` for a 4xx/5xx answer;
- every update outcome as an entry of its own, method `UPDATE`: `installed` (a bundle was
  made current), `rolled back` (its boot never confirmed), `verification failure` (the
  artefact was refused; never retried). The latter two are failures, with the action.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from locust.event import Events

from agent.drivers.api import AgentObserver
from agent.errors import AgentError

UPDATE = "UPDATE"
INSTALLED, ROLLED_BACK, VERIFICATION_FAILURE = "installed", "rolled back", "verification failure"
VERIFICATION_ACTIONS = frozenset(
    {
        "checksum_fail",
        "checksum_required",
        "decrypt_fail",
        "unzip_fail",
        "windows_path_fail",
        "canonical_path_fail",
        "directory_path_fail",
        "download_manifest_checksum_fail",
        "download_manifest_brotli_fail",
        "manifest_path_fail",
    }
)


class HttpStatusError(Exception):
    """The server answered with an error status (the agent handles it; Locust counts it)."""


class UpdateFailed(Exception):
    """An update outcome that is a failure: rolled back, or refused by verification."""


class LocustObserver(AgentObserver):
    """The `AgentObserver` of one device user: fires Locust events, tells the user of reloads."""

    def __init__(
        self, events: Events, device_id: str, on_reload: Callable[[int, str], None]
    ) -> None:
        self._events = events
        self._context = {"device_id": device_id}
        self._on_reload = on_reload

    def on_request(
        self,
        name: str,
        method: str,
        url: str,
        status: int | None,
        elapsed_s: float,
        response_bytes: int,
        error: AgentError | None,
    ) -> None:
        exception: Exception | None = error
        if exception is None and status is not None and status >= 400:
            exception = HttpStatusError(f"HTTP {status}")
        self._events.request.fire(
            request_type=method,
            name=name,
            response_time=elapsed_s * 1000.0,
            response_length=response_bytes,
            exception=exception,
            context=self._context,
            url=url,
        )

    def on_stat(self, action: str, version_name: str) -> None:
        if action == "set" and version_name != "builtin":
            self._outcome(INSTALLED, None)
        elif action == "update_fail":
            self._outcome(ROLLED_BACK, UpdateFailed(f"update_fail {version_name}"))
        elif action in VERIFICATION_ACTIONS:
            self._outcome(VERIFICATION_FAILURE, UpdateFailed(f"{action} {version_name}"))

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        if name == "appReloaded":
            self._on_reload(int(payload["boot_id"]), str(payload["bundle"]))

    def _outcome(self, name: str, exception: Exception | None) -> None:
        self._events.request.fire(
            request_type=UPDATE,
            name=name,
            response_time=0.0,
            response_length=0,
            exception=exception,
            context=self._context,
        )
