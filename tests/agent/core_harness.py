"""An in-memory device for core tests: performs the core's effects against scripted answers.

The "disk" is the last committed state and stats plus the set of installed bundle folders;
`restart()` rebuilds the agent from it, as a killed process would on its next start.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent.config import AgentConfig, DeviceIdentity
from agent.core.agent import Agent
from agent.core.effects import (
    CommitState,
    CommitStats,
    DeleteBundle,
    DownloadBundle,
    Effect,
    EmitEvent,
    ReloadApp,
    ReportStat,
    SendRequest,
)
from agent.core.events import (
    DownloadFailed,
    DownloadFinished,
    DownloadProgressed,
    Event,
    ResponseReceived,
)
from agent.core.lifecycle import BUILTIN, DeviceState, reconcile
from agent.errors import AgentError
from agent.protocol.base import StatEvent
from agent.protocol.capgo import CapgoDialect
from agent.protocol.profiles import get_profile

IDENTITY = DeviceIdentity(str(uuid.UUID(int=1)), "com.example.app", "ios", "1.0.0")
BASE = "https://ota.test"


def config(**overrides: Any) -> AgentConfig:
    return AgentConfig(
        update_url=f"{BASE}/updates",
        stats_url=f"{BASE}/stats",
        channel_url=f"{BASE}/channel_self",
        **overrides,
    )


def offer(version: str, checksum: str | None = None) -> tuple[int, dict[str, str], bytes]:
    body = {
        "version": version,
        "url": f"{BASE}/{version}.zip",
        "checksum": checksum or version.replace(".", "").ljust(64, "a"),
        "session_key": "",
    }
    return 200, {}, json.dumps(body).encode()


def answer(
    body: dict[str, Any], status: int = 200, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    return status, headers, json.dumps(body).encode()


UP_TO_DATE = answer({"error": "no_new_version_available", "kind": "up_to_date"})


class Crash(BaseException):
    """The process dies in the middle of performing effects."""


@dataclass
class Harness:
    config: AgentConfig = field(default_factory=config)
    identity: DeviceIdentity = IDENTITY
    now: float = 1_000.0
    disk_state: DeviceState = field(default_factory=DeviceState)
    disk_stats: list[StatEvent] = field(default_factory=list)
    disk_bundles: set[str] = field(default_factory=set)
    updates: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    stats_answers: deque[int] = field(default_factory=deque)
    downloads: deque[AgentError | None] = field(default_factory=deque)  # None: success
    crash_after: int | None = None  # effects performed before a Crash
    sent: list[Any] = field(default_factory=list)
    posted_stats: list[str] = field(default_factory=list)
    emitted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    reported: list[tuple[str, str]] = field(default_factory=list)
    reloads: list[ReloadApp] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    restarts: int = 0
    violations: list[str] = field(default_factory=list)  # effects the committed state forbids
    agent: Agent = field(init=False)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """A new process: the agent starts from what was committed."""
        state = reconcile(self.disk_state, self.disk_bundles)
        self.restarts += 1  # each process draws its own random bundle ids
        self.rng = random.Random(self.restarts)
        self.rebuild(state)

    def rebuild(self, state: DeviceState | None = None) -> None:
        """The agent again from what was committed, in the same process (same random stream)."""
        self.agent = Agent(
            self.config,
            self.identity,
            self.disk_state if state is None else state,
            self.disk_stats,
            rng=self.rng,
            dialect=CapgoDialect(get_profile(self.config.plugin)),
        )

    def run(self, event: Event) -> None:
        queue: deque[Event] = deque([event])
        while queue:
            for effect in self.agent.handle(queue.popleft(), self.now):
                if self.crash_after is not None:
                    if self.crash_after == 0:
                        self.crash_after = None
                        raise Crash
                    self.crash_after -= 1
                self.effects.append(effect)
                queue.extend(self.perform(effect))

    def perform(self, effect: Effect) -> list[Event]:
        if isinstance(effect, SendRequest):
            return [self._answer(effect)]
        if isinstance(effect, DownloadBundle):
            error = self.downloads.popleft() if self.downloads else None
            if error is not None:
                return [DownloadFailed(effect.bundle_id, error)]
            self.disk_bundles.add(effect.bundle_id)
            return [DownloadProgressed(effect.bundle_id, 70), DownloadFinished(effect.bundle_id)]
        if isinstance(effect, CommitState):
            self.disk_state = effect.state
        elif isinstance(effect, CommitStats):
            self.disk_stats = list(effect.events)
        elif isinstance(effect, DeleteBundle):
            slots = (self.disk_state.current, self.disk_state.next, self.disk_state.fallback)
            if effect.bundle_id in slots or effect.bundle_id in self.disk_state.bundles:
                self.violations.append(f"deleted {effect.bundle_id} the committed state names")
            self.disk_bundles.discard(effect.bundle_id)
        elif isinstance(effect, ReloadApp):
            if effect.bundle_id != BUILTIN and effect.bundle_id not in self.disk_bundles:
                self.violations.append(f"reloaded {effect.bundle_id}, which is not on disk")
            if self.disk_state.boot is None or self.disk_state.boot.id != effect.boot_id:
                self.violations.append(f"reloaded boot {effect.boot_id} before committing it")
            self.reloads.append(effect)
        elif isinstance(effect, EmitEvent):
            self.emitted.append((effect.name, dict(effect.payload)))
        elif isinstance(effect, ReportStat):
            self.reported.append((effect.action, effect.version_name))
        return []

    def _answer(self, effect: SendRequest) -> ResponseReceived:
        request = effect.request
        self.sent.append(request)
        if request.name == "/stats":
            body = json.loads(request.body or b"[]")
            events = body if isinstance(body, list) else [body]  # plugins 6 and 7: one object
            self.posted_stats.extend(e["action"] for e in events)
            status = self.stats_answers.popleft() if self.stats_answers else 200
            if status != 200:
                self.posted_stats = self.posted_stats[: -len(events)]
            return ResponseReceived("/stats", status, {}, b'{"status":"ok"}')
        status, headers, body = self.updates.popleft() if self.updates else UP_TO_DATE
        return ResponseReceived("/updates", status, headers, body)

    def tick(self, seconds: float) -> None:
        """Let time pass and fire the timers that fall due, in order."""
        end = self.now + seconds
        while (deadline := self.agent.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            from agent.core.events import TimerFired

            self.run(TimerFired())
        self.now = end

    def actions(self) -> list[str]:
        return [action for action, _ in self.reported]

    def event_names(self) -> list[str]:
        return [name for name, _ in self.emitted]

    def current_version(self) -> str:
        state = self.agent.state
        return state.version_of(state.current, self.identity.version_build)
