"""Turns what a device's agent does into Locust `request` events and otasim's own counts.

- every HTTP exchange, under the agent's stable names (`/updates`, `/stats`, `/channel_self`,
  `bundle`, `delta file`), with its time and length; a failure carries the agent's typed
  error, or `HttpStatusError` for a 4xx/5xx answer. An attempt the agent retried within the
  same exchange is no request of its own: the exchange counts once, with its last attempt,
  and the retry is counted apart (`loadtests.outcomes`, kind `retry`);
- every update outcome, counted apart too (kind `update`): `installed` (a bundle was made
  current), `rolled back` (its boot never confirmed), `verification failure` (the artefact
  was refused). They stay out of Locust's request table and its Aggregated row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from locust.env import Environment

from agent.drivers.api import AgentObserver
from agent.errors import AgentError
from loadtests.outcomes import INSTALLED, RETRY, ROLLED_BACK, UPDATE, VERIFICATION_FAILURE, count

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


class LocustObserver(AgentObserver):
    """The `AgentObserver` of one device user: fires Locust events, tells the user of reloads.

    A failed attempt is held until the agent says whether it retries it (`on_retry`, called
    before the next attempt) or anything else happens (then it was the exchange's last).
    """

    def __init__(
        self, environment: Environment, device_id: str, on_reload: Callable[[int, str], None]
    ) -> None:
        self._environment = environment
        self._context = {"device_id": device_id}
        self._on_reload = on_reload
        self._held: dict[str, Any] | None = None  # a failed attempt, maybe retried

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
        self.flush()
        exception: Exception | None = error
        if exception is None and status is not None and status >= 400:
            exception = HttpStatusError(f"HTTP {status}")
        attempt = {
            "request_type": method,
            "name": name,
            "response_time": elapsed_s * 1000.0,
            "response_length": response_bytes,
            "exception": exception,
            "context": self._context,
            "url": url,
        }
        if exception is None:
            self._environment.events.request.fire(**attempt)
        else:
            self._held = attempt

    def on_retry(self, error: AgentError, delay_s: float) -> None:
        held, self._held = self._held, None
        if held is not None:
            count(self._environment, RETRY, f"{held['request_type']} {held['name']}")

    def flush(self) -> None:
        """Fire a held failed attempt: nothing retried it, so the exchange failed."""
        held, self._held = self._held, None
        if held is not None:
            self._environment.events.request.fire(**held)

    def on_stat(self, action: str, version_name: str) -> None:
        self.flush()
        if action == "set" and version_name != "builtin":
            count(self._environment, UPDATE, INSTALLED)
        elif action == "update_fail":
            count(self._environment, UPDATE, ROLLED_BACK)
        elif action in VERIFICATION_ACTIONS:
            count(self._environment, UPDATE, VERIFICATION_FAILURE)

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        self.flush()
        if name == "appReloaded":
            self._on_reload(int(payload["boot_id"]), str(payload["bundle"]))
