"""A blocking client for the reference server's admin API (used by `otasim publish`,
`otasim admin`, the simulator and the tests)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

if TYPE_CHECKING:
    from simulator.release import DeltaManifest


class AdminError(Exception):
    """The admin API refused a call (`status` 0 when the server could not be reached)."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}" if status else f"{error}: {message}")
        self.status = status
        self.error = error
        self.message = message


class AdminClient:
    """Admin API calls; each returns the server's JSON answer.

    Raises (every method):
        AdminError: an HTTP error answer (with the server's `error` code), or a network
            failure (`status` 0, error `unreachable`).
    """

    def __init__(self, url: str, api_key: str, *, verify: bool | ssl.SSLContext = True) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(60.0, connect=10.0),
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AdminError(0, "unreachable", f"{self.url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            if isinstance(body, dict):
                raise AdminError(
                    response.status_code, str(body.get("error")), str(body.get("message"))
                )
            raise AdminError(response.status_code, "http_error", response.text[:200])
        return body

    @staticmethod
    def _app(app_id: str) -> str:
        return f"/api/apps/{quote(app_id, safe='')}"

    def _channel(self, app_id: str, channel: str) -> str:
        return f"{self._app(app_id)}/channels/{quote(channel, safe='')}"

    def list_apps(self) -> list[str]:
        return list(self._call("GET", "/api/apps")["apps"])

    def create_app(self, app_id: str, **options: bool) -> dict[str, Any]:
        """Options: expose_metadata, allow_device_custom_id. 409 `app_exists` if present."""
        return dict(self._call("POST", "/api/apps", json={"app_id": app_id, **options}))

    def app(self, app_id: str) -> dict[str, Any]:
        return dict(self._call("GET", self._app(app_id)))

    def set_signing_key(self, app_id: str, dialect: str, private_pem: bytes) -> dict[str, Any]:
        """Give the server the app's key for `dialect` (Expo: it then signs its answers)."""
        path = f"{self._app(app_id)}/signing-keys/{quote(dialect, safe='')}"
        return dict(self._call("PUT", path, json={"private_pem": private_pem.decode()}))

    def upload_file(self, app_id: str, path: Path) -> str:
        """Upload one file (streamed); returns its file id (SHA-256 of the bytes)."""
        with path.open("rb") as stream:
            answer = self._call("PUT", f"{self._app(app_id)}/files", content=stream)
        return str(answer["file_id"])

    def upload_bundle(
        self,
        app_id: str,
        version: str,
        *,
        zip_path: Path | None,
        manifest: DeltaManifest | None = None,
        checksum: str,
        session_key: str = "",
        key_id: str | None = None,
        release: dict[str, str] | None = None,
        dialects: Mapping[str, Mapping[str, Any]] | None = None,
        **extra: str,
    ) -> dict[str, Any]:
        """Upload the zip and/or delta files, then register the bundle.

        `checksum`, `session_key` and `key_id` come from the publisher (encrypted or not);
        `dialects` carries other dialects' artefacts (their files uploaded first, see
        `simulator.publish`); `extra` may set min_update_version, link, comment.
        """
        body: dict[str, Any] = {"version": version, "checksum": checksum, **extra}
        if session_key:
            body["session_key"] = session_key
        if key_id:
            body["key_id"] = key_id
        if release:
            body["release"] = release
        if dialects:
            body["dialects"] = {name: dict(data) for name, data in dialects.items()}
        if zip_path is not None:
            body["file_id"] = self.upload_file(app_id, zip_path)
        if manifest is not None:
            body["manifest"] = [
                {
                    "file_name": f.file_name,
                    "file_hash": f.file_hash,
                    "file_id": self.upload_file(app_id, f.path),
                }
                for f in manifest.files
            ]
        return dict(self._call("POST", f"{self._app(app_id)}/bundles", json=body))

    def bundles(self, app_id: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{self._app(app_id)}/bundles")["bundles"])

    def release(self, app_id: str, version: str) -> dict[str, str]:
        """The signed release document (strict mode) the server holds for a bundle."""
        answer = self._call("GET", self._release_path(app_id, version))
        return dict(answer["release"])

    def _release_path(self, app_id: str, version: str) -> str:
        return f"{self._app(app_id)}/bundles/{quote(version, safe='')}/release"

    def replace_release(self, app_id: str, version: str, release: dict[str, str]) -> dict[str, Any]:
        """Replace a bundle's release document by a re-signed one (only its expiry differs)."""
        path = self._release_path(app_id, version)
        return dict(self._call("PUT", path, json={"release": release}))

    def set_channel(
        self,
        app_id: str,
        channel: str,
        *,
        version: str | None = None,
        public: bool | None = None,
        **policy: Any,
    ) -> dict[str, Any]:
        """Create or update a channel. `policy`: allow_device_self_set, ios, android,
        electron, disable_auto_update, disable_auto_update_under_native, allow_prod,
        allow_dev, allow_device, allow_emulator."""
        body = {
            k: v
            for k, v in {"version": version, "public": public, **policy}.items()
            if v is not None
        }
        return dict(self._call("PUT", self._channel(app_id, channel), json=body))

    def set_rollout(
        self,
        app_id: str,
        channel: str,
        version: str,
        percent: float,
        *,
        auto_pause_fail_ratio: float | None = None,
        auto_pause_min_samples: int | None = None,
    ) -> dict[str, Any]:
        """Send `percent` % of the channel's devices (sticky draw) to `version`."""
        body: dict[str, Any] = {"version": version, "percent": percent}
        if auto_pause_fail_ratio is not None:
            body["auto_pause_fail_ratio"] = auto_pause_fail_ratio
        if auto_pause_min_samples is not None:
            body["auto_pause_min_samples"] = auto_pause_min_samples
        return dict(self._call("POST", f"{self._channel(app_id, channel)}/rollout", json=body))

    def pause_rollout(self, app_id: str, channel: str) -> dict[str, Any]:
        return dict(self._call("POST", f"{self._channel(app_id, channel)}/rollout/pause"))

    def resume_rollout(self, app_id: str, channel: str) -> dict[str, Any]:
        return dict(self._call("POST", f"{self._channel(app_id, channel)}/rollout/resume"))

    def complete_rollout(self, app_id: str, channel: str) -> dict[str, Any]:
        return dict(self._call("POST", f"{self._channel(app_id, channel)}/rollout/complete"))

    def rollback(self, app_id: str, channel: str, version: str) -> dict[str, Any]:
        """Point the whole channel at `version` (an earlier bundle or "builtin")."""
        path = f"{self._channel(app_id, channel)}/rollback"
        return dict(self._call("POST", path, json={"version": version}))

    def set_device_channel(
        self, app_id: str, device_id: str, channel: str | None
    ) -> dict[str, Any]:
        """Pin a device to a channel (override); None removes the pin."""
        path = f"{self._app(app_id)}/devices/{quote(device_id, safe='')}"
        if channel is None:
            return dict(self._call("DELETE", path))
        return dict(self._call("PUT", path, json={"channel": channel}))

    def device_channels(self, app_id: str) -> list[dict[str, str]]:
        """The pinned devices: [{device_id, channel}]."""
        return list(self._call("GET", f"{self._app(app_id)}/devices")["overrides"])

    def stats(self, app_id: str, version: str | None = None) -> dict[str, Any]:
        params = {"version": version} if version is not None else None
        return dict(self._call("GET", f"{self._app(app_id)}/stats", params=params))

    def create_key(self, name: str, role: str) -> dict[str, Any]:
        """Returns {id, name, role, key}; the key is shown only here."""
        return dict(self._call("POST", "/api/keys", json={"name": name, "role": role}))

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/keys")["keys"])

    def revoke_key(self, key_id: int) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/api/keys/{key_id}"))

    def audit(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/audit")["audit"])
