"""What every check works with: the options, synthetic devices, the HTTP port and a log.

Requests are built by the agent's own dialect (`agent.protocol.capgo`) for the chosen plugin
profile and sent through the agent's HTTP port (`agent.drivers.http`), so the checker speaks
exactly as a device does. Every exchange is logged: the kind, flag and secrets checks read the
whole conversation, not one answer.

Device ids are synthetic and stable (UUIDv5 of the app id and a label), so repeated runs reuse
the same few identities on the server instead of adding devices; `device_ids` lists them for
the output.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agent.config import AgentConfig, DeviceIdentity
from agent.core import versions
from agent.drivers.backends import make_sync_port
from agent.drivers.http import HttpRequest, HttpResponse, SyncHttpPort
from agent.errors import ProtocolError
from agent.protocol.base import (
    CheckResult,
    DeviceInfo,
    NoUpdate,
    OutgoingRequest,
    RateLimitHint,
    UpdateOffer,
)
from agent.protocol.capgo import CapgoDialect
from agent.security.keys import PublicKey

from simulator.checks.errors import Skip

if TYPE_CHECKING:
    from agent.protocol.profiles import PluginProfile

DEVICE_NAMESPACE = uuid.UUID("6f7461c0-c4ec-4000-8000-00000000c4ec")  # "otasim check"
VERSION_BLOCKS = frozenset(
    {
        "disable_auto_update_to_major",
        "disable_auto_update_to_minor",
        "disable_auto_update_to_patch",
        "disable_auto_update_under_native",
    }
)


@dataclass(frozen=True)
class CheckOptions:
    """What the user asked for (`otasim check --help` documents each)."""

    server: str
    app_id: str
    profile: PluginProfile
    public_key: PublicKey | None = None
    channel: str | None = None
    updates_url: str = ""
    stats_url: str = ""
    channel_url: str = ""
    devices: int = 20
    allow_writes: bool = False
    native_version: str = "1.0.0"
    expect_rollout: float | None = None
    max_p99_ms: float = 2000.0
    fuzz_examples: int = 40
    ca_file: str | None = None
    timeout_s: float = 20.0

    def __post_init__(self) -> None:
        base = self.server.rstrip("/")
        for name, path in (("updates_url", "updates"), ("stats_url", "stats")):
            if not getattr(self, name):
                object.__setattr__(self, name, f"{base}/{path}")
        if not self.channel_url:
            object.__setattr__(self, "channel_url", f"{base}/channel_self")


@dataclass(frozen=True)
class Exchange:
    """One request the checker sent and what came back (status 0: no answer)."""

    name: str
    method: str
    url: str
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_ms: float

    @classmethod
    def answered(cls, request: OutgoingRequest, response: HttpResponse, started: float) -> Exchange:
        """The exchange of `request`, answered by `response`, sent at perf_counter `started`."""
        elapsed_ms = (time.perf_counter() - started) * 1000
        return cls(
            request.name, request.method, request.url, response.status, dict(response.headers),
            response.body, elapsed_ms,
        )  # fmt: skip

    @property
    def app_not_served(self) -> bool:
        """Capgo's HTTP 429 `on_premise_app`: "this app is not served here" (not a rate limit)."""
        data = self.json()
        return (
            self.status == 429 and isinstance(data, dict) and data.get("error") == "on_premise_app"
        )

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class Answer:
    """An /updates answer: the exchange and how the plugin reads it (or why it cannot)."""

    exchange: Exchange
    result: CheckResult | None
    problem: str | None = None  # the ProtocolError a device would hit

    @property
    def data(self) -> Any:
        return self.exchange.json()

    @property
    def offer(self) -> UpdateOffer | None:
        return self.result if isinstance(self.result, UpdateOffer) else None

    def describe(self) -> str:
        if self.problem:
            return f"HTTP {self.exchange.status}, unreadable: {self.problem}"
        if isinstance(self.result, UpdateOffer):
            return f"offer {self.result.version}"
        if isinstance(self.result, NoUpdate | RateLimitHint):
            return f"HTTP {self.exchange.status} {self.result.error}"
        return f"HTTP {self.exchange.status} {type(self.result).__name__}"


@dataclass(frozen=True)
class Baseline:
    """The device shape that the server answers with an offer (or the last answer got)."""

    device: DeviceInfo
    answer: Answer


@dataclass
class CheckContext:
    """Shared by the checks of one run. Close it (or use it as a context manager)."""

    options: CheckOptions
    port: SyncHttpPort = field(init=False)
    log: list[Exchange] = field(default_factory=list)
    device_ids: dict[str, str] = field(default_factory=dict)  # label -> id
    dialect: CapgoDialect = field(default_factory=CapgoDialect)
    _memo: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = make_sync_port("httpx", verify=self.options.ca_file or True)
        self.config = AgentConfig(
            update_url=self.options.updates_url,
            stats_url=self.options.stats_url,
            channel_url=self.options.channel_url,
            public_key=self.options.public_key.pem if self.options.public_key else None,
        )

    def __enter__(self) -> CheckContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.port.close()

    # -- devices ----------------------------------------------------------------------

    def device_id(self, label: str) -> str:
        ident = str(uuid.uuid5(DEVICE_NAMESPACE, f"{self.options.app_id}/{label}"))
        self.device_ids[label] = ident
        return ident

    def device(
        self,
        label: str,
        *,
        version_name: str = "builtin",
        channel: str | None = None,
        app_id: str | None = None,
        **identity: Any,
    ) -> DeviceInfo:
        """A synthetic device of the chosen plugin profile (android, production build)."""
        values: dict[str, Any] = {
            "device_id": self.device_id(label),
            "app_id": app_id or self.options.app_id,
            "platform": "android",
            "version_build": self.options.native_version,
            "version_os": "14",
            "plugin_version": self.options.profile.plugin_version,
        }
        values.update(identity)
        key = self.options.public_key
        return DeviceInfo(
            identity=DeviceIdentity(**values),
            config=self.config,
            version_name=version_name,
            channel=channel if channel is not None else self.options.channel,
            key_id=key.key_id if key else None,
        )

    # -- exchanges ----------------------------------------------------------------------

    def send(self, request: OutgoingRequest, *, timeout_s: float | None = None) -> Exchange:
        """Send and log one request.

        Raises:
            TransportError: no answer (refused, reset, timeout, TLS failure).
        """
        started = time.perf_counter()
        http = HttpRequest(
            request.method,
            request.url,
            dict(request.headers),
            request.body,
            timeout_s=timeout_s or self.options.timeout_s,
        )
        exchange = Exchange.answered(request, self.port.send(http), started)
        self.log.append(exchange)
        return exchange

    def post_json(self, name: str, url: str, body: bytes, method: str = "POST") -> Exchange:
        """Send raw bytes as a JSON body (malformed requests, single stats events)."""
        headers = {"content-type": "application/json", "accept": "application/json"}
        return self.send(OutgoingRequest(name, method, url, headers, body))

    def ask(self, device: DeviceInfo) -> Answer:
        """An update check as this device, read as the plugin reads it."""
        exchange = self.send(self.dialect.check_request(device))
        try:
            result = self.dialect.parse_check(
                exchange.status, exchange.headers, exchange.body, time.time()
            )
        except ProtocolError as exc:
            return Answer(exchange, None, str(exc))
        return Answer(exchange, result)

    # -- what several checks need once --------------------------------------------------

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` the first time `key` is asked for in this run, then the same value."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @functools.cached_property
    def baseline(self) -> Baseline:
        """Find a device shape the server answers with an offer.

        It asks as a device on builtin of `native_version`; when the answer is a version
        block naming the target (major, minor, patch, under native), it asks again as a
        device whose native version fits that target.
        """
        device = self.device("baseline")
        answer = self.ask(device)
        target = _block_target(answer)
        if target is not None:
            native, version_name = _native_for(target)
            device = self.device("baseline", version_name=version_name, version_build=native)
            answer = self.ask(device)
        return Baseline(device, answer)

    def require_app(self) -> None:
        """Raises Skip when the server answered the baseline check with Capgo's "app not
        served here" (HTTP 429 `on_premise_app`)."""
        if self.baseline.answer.exchange.app_not_served:
            raise Skip(
                f"the server does not serve {self.options.app_id} (HTTP 429 "
                "on_premise_app): publish a release for it first"
            )

    def require_offer(self) -> tuple[DeviceInfo, UpdateOffer]:
        """The baseline device and the bundle offered to it.

        Raises:
            Skip: the app is not served, or nothing is offered to the device shapes tried.
        """
        self.require_app()
        base = self.baseline
        if base.answer.offer is None:
            raise Skip(
                f"the server offers no bundle to a {self.options.profile.name} device "
                f"(answer: {base.answer.describe()}); publish a release to the channel "
                "devices get, or give --native-version/--channel"
            )
        return base.device, base.answer.offer

    def require_writes(self, what: str) -> None:
        """Raises Skip unless --allow-writes was given."""
        if not self.options.allow_writes:
            raise Skip(f"{what} writes to the server: give --allow-writes (synthetic device ids)")

    @property
    def https(self) -> bool:
        return urlsplit(self.options.updates_url).scheme == "https"

    def fetch(
        self, url: str, headers: dict[str, str] | None = None, *, cap: int | None = None
    ) -> Exchange:
        """GET a file through the port's streaming call (raw bytes, no decoding), logged.

        Raises:
            TransportError: no answer.
            Skip: the body passes `cap` bytes (default: the agent's bundle cap).
        """
        limit = cap or self.config.max_bundle_bytes
        started = time.perf_counter()
        request = HttpRequest("GET", url, headers or {}, timeout_s=self.options.timeout_s)
        chunks: list[bytes] = []
        size = 0
        with self.port.stream(request) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise Skip(f"{url} is larger than {limit} bytes")
                chunks.append(chunk)
            answer = HttpResponse(response.status, response.headers, b"".join(chunks))
            exchange = Exchange.answered(OutgoingRequest("bundle", "GET", url, {}), answer, started)
        self.log.append(replace(exchange, body=exchange.body[:4096]))
        return exchange


def _block_target(answer: Answer) -> str | None:
    data = answer.data
    if not isinstance(data, dict) or data.get("error") not in VERSION_BLOCKS:
        return None
    version = data.get("version")
    return version if isinstance(version, str) and versions.parse(version) else None


def _native_for(target: str) -> tuple[str, str]:
    """(native version, running version name) of a device the target is an update for."""
    parsed = versions.parse(target)
    assert parsed is not None
    native = f"{parsed.major}.0.0"
    if native != target:
        return native, "builtin"
    return native, "0.0.0"
