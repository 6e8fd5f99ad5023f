"""Where devices talk, and whether a run there is worth starting: checked in seconds, first.

`endpoints()` turns `--server` (the shortcut) and `--updates-url` / `--stats-url` /
`--channel-url` (as a plugin's `updateUrl`, `statsUrl`, `channelUrl`) into the three URLs.
`preflight()` refuses a run that would only waste time: a folder it cannot write, a URL that
does not answer /updates like a Capgo server for this app, or a public key that does not open
what the server offers. It sends one update check, from a new device id, as the chosen plugin.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from agent.config import AgentConfig, DeviceIdentity
from agent.errors import ProtocolError, VerificationError
from agent.protocol.base import DeviceInfo, NoUpdate, RateLimitHint, UpdateOffer
from agent.protocol.capgo import CapgoDialect
from agent.protocol.profiles import get_profile
from agent.protocol.registry import DEFAULT_DIALECT, dialect_spec
from agent.security.keys import load_public_key
from agent.security.session import is_session_key, recover_session_key

PREFLIGHT_TIMEOUT_S = 5.0


class PreflightError(Exception):
    """The run would be wasted: the message names the problem in one line. `server`: the
    problem is the server's answer (or its absence), not a local folder."""

    def __init__(self, message: str, *, server: bool = True) -> None:
        super().__init__(message)
        self.server = server


@dataclass(frozen=True)
class Endpoints:
    updates: str
    stats: str
    channel: str

    def describe(self) -> str:
        """One string for reports: the base when the three share it, else all three."""
        base = self.updates.removesuffix("/updates")
        if (self.stats, self.channel) == (f"{base}/stats", f"{base}/channel_self"):
            return base
        return f"updates {self.updates} · stats {self.stats} · channel {self.channel}"


def endpoints(
    server: str | None,
    updates_url: str | None = None,
    stats_url: str | None = None,
    channel_url: str | None = None,
    dialect: str = DEFAULT_DIALECT,
) -> Endpoints:
    """The three URLs: each given one, else derived from `server` as `dialect` places them
    (Capgo: `<server>/updates`, `/stats`, `/channel_self`; see `agent.protocol.registry`).

    Raises:
        ValueError: a URL is missing (no --server to derive it from) or not http(s), or an
            unknown dialect.
    """
    spec = dialect_spec(dialect)
    derived = spec.urls(server) if server else (None, None, None)
    chosen = {}
    for name, given, default, path in zip(
        ("updates", "stats", "channel"),
        (updates_url, stats_url, channel_url),
        derived,
        spec.paths,
        strict=True,
    ):
        url = given if given else default
        if url is None and path:
            raise ValueError(f"no {name} URL: give --server or --{name}-url")
        chosen[name] = url or ""
    result = Endpoints(**chosen)
    AgentConfig(update_url=result.updates, stats_url=result.stats, channel_url=result.channel)
    return result


def check_writable(folders: Iterable[Path]) -> None:
    """Each folder exists or can be created, and a file can be written in it.

    Raises:
        PreflightError: naming the folder and why.
    """
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".otasim-probe-"):
                pass
        except OSError as exc:
            raise PreflightError(
                f"{folder}: not writable ({exc.strerror or exc})", server=False
            ) from None


def probe_updates(
    urls: Endpoints,
    app_id: str,
    plugin: str,
    public_pem: str | None,
    *,
    channel: str | None = None,
    ca_file: str | None = None,
) -> str:
    """Send one update check as a new `plugin` device; return what it answered, in words.

    Raises:
        PreflightError: no answer, an answer no Capgo server gives (HTML, 404, 501, not
            JSON), the app unknown to the server, or an encrypted offer the key cannot open.
    """
    profile = get_profile(plugin)
    ident = DeviceIdentity(
        str(uuid.uuid4()), app_id, "android", "1.0.0", plugin_version=profile.plugin_version
    )
    config = AgentConfig(
        update_url=urls.updates, stats_url="", channel_url=urls.channel,
        public_key=public_pem or None, default_channel=channel, plugin=plugin,
    )  # fmt: skip
    key = load_public_key(public_pem) if public_pem else None
    dialect = CapgoDialect(profile)
    request = dialect.check_request(
        DeviceInfo(ident, config, "1.0.0", channel, key.key_id if key else None)
    )
    try:
        with httpx.Client(timeout=PREFLIGHT_TIMEOUT_S, verify=ca_file or True) as client:
            response = client.request(
                request.method, request.url, headers=dict(request.headers), content=request.body
            )
    except httpx.HTTPError as exc:
        raise PreflightError(f"{urls.updates}: no answer ({_reason(exc)})") from None
    where = f"POST {urls.updates}"
    if response.status_code == 429:
        error = _error(response.content) or "too_many_requests"
        if error == "on_premise_app":
            raise PreflightError(f"{where}: the server does not know app {app_id} (429 {error})")
        return f"rate limited (429 {error}): the run may see the same"
    if response.status_code >= 300 and _error(response.content) is None:
        raise PreflightError(
            f"{where}: HTTP {response.status_code} with no Capgo error body: "
            "not a Capgo-compatible updates endpoint"
        )
    try:
        result = dialect.parse_check(
            response.status_code, dict(response.headers), response.content, 0.0
        )
    except ProtocolError as exc:
        raise PreflightError(f"{where}: not a Capgo answer ({exc})") from None
    if isinstance(result, NoUpdate):
        if response.status_code != 200:
            raise PreflightError(f"{where}: HTTP {response.status_code} {result.error}")
        if result.error == "key_id_mismatch":
            raise PreflightError(f"{where}: the public key does not match the app's bundles "
                                 f"(the server answered {result.error})")  # fmt: skip
        return f"no update for a new device ({result.error})"
    if isinstance(result, RateLimitHint):  # pragma: no cover - 429 is handled above
        return "rate limited"
    if isinstance(result, UpdateOffer):
        _check_key(result, key, where)
        return f"offers {result.version}"
    return "reverts to builtin"


def probe_channel_flags(
    urls: Endpoints, app_id: str, plugin: str, *, ca_file: str | None = None
) -> str | None:
    """The finding when the server lists channels with flags that are not JSON booleans.

    The plugin reads `public` / `allow_self_set` as booleans (Android's `optBoolean`): an
    integer `1` is false on the device. Only for profiles that list channels; a listing that
    fails or is not a list is no finding (the run does not need it).
    """
    profile = get_profile(plugin)
    if not profile.lists_channels:
        return None
    ident = DeviceIdentity(
        str(uuid.uuid4()), app_id, "android", "1.0.0", plugin_version=profile.plugin_version
    )
    config = AgentConfig(update_url=urls.updates, channel_url=urls.channel, plugin=plugin)
    request = CapgoDialect(profile).channel_list_request(
        DeviceInfo(ident, config, "1.0.0", None, None)
    )
    try:
        with httpx.Client(timeout=PREFLIGHT_TIMEOUT_S, verify=ca_file or True) as client:
            response = client.get(request.url, headers=dict(request.headers))
        listing = json.loads(response.content) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(listing, list):
        return None
    odd = sorted(
        {
            f"{flag}: {json.dumps(item[flag])}"
            for item in listing
            if isinstance(item, dict)
            for flag in ("public", "allow_self_set")
            if flag in item and not isinstance(item[flag], bool)
        }
    )
    if not odd:
        return None
    return (
        f"your server lists channels with flags that are not JSON booleans ({', '.join(odd)}): "
        f"{profile.name} devices read them as false (listChannels shows every channel as "
        "private and not self-assignable)"
    )


def _check_key(offer: UpdateOffer, key: object, where: str) -> None:
    encrypted = is_session_key(offer.session_key)
    if encrypted and key is None:
        raise PreflightError(
            f"{where}: offers {offer.version} encrypted, but no public key was given (--public-key)"
        )
    if encrypted:
        try:
            recover_session_key(offer.session_key, key)  # type: ignore[arg-type]
        except VerificationError as exc:
            raise PreflightError(
                f"{where}: the public key does not match {offer.version}: {exc}"
            ) from None


def _error(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) and error else None


def _reason(exc: httpx.HTTPError) -> str:
    cause: BaseException = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    text = getattr(cause, "strerror", None) or str(cause) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {PREFLIGHT_TIMEOUT_S:g} s"
    return str(text)
