"""The scenario's timeline: server admin actions (publish, rollout, rollback, server down/up)
performed at their simulated times during a run.

`simulator.shards` calls `Timeline.perform_due` at each synchronisation point of the fleet
(`Fleet.sync_points`), with every device stopped, so a step lands at the same simulated time
whatever the machine or the sharding. Steps go through the embedded server's admin API
(`ServerControl`); against an external server the timeline is the user's to perform.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.protocol.registry import DEFAULT_DIALECT

from simulator.metrics import Metrics
from simulator.publish import PublishError, publish
from simulator.release import ReleaseError
from simulator.scenario import Scenario, Step
from simulator.server.client import AdminClient, AdminError


class ServerControl(Protocol):
    """The server the timeline acts on (the embedded one; None for an external server)."""

    def client(self) -> AdminClient: ...

    def down(self) -> None: ...

    def up(self) -> None: ...


@dataclass(frozen=True)
class Publication:
    dist: Path
    delta: bool


class Timeline:
    """Performs the scenario's steps at their simulated times through the admin API."""

    def __init__(
        self,
        scenario: Scenario,
        server: ServerControl,
        releases: Mapping[str, Publication],
        private_pem: bytes,
        dialects: Sequence[str] = (DEFAULT_DIALECT,),
    ) -> None:
        self.scenario = scenario
        self.server = server
        self.releases = releases
        self.private_pem = private_pem
        self.dialects = tuple(dialects)  # each publication carries these dialects' artefacts
        self.published_s: dict[str, float] = {}

    async def perform_due(self, metrics: Metrics, at_s: float) -> None:
        """Perform the steps due at simulated time `at_s` (a sync point), in order; what the
        report shows of each goes to `metrics.steps`."""
        end = self.scenario.duration_s
        for step in self.scenario.timeline:
            if max(0.0, step.at_s) == at_s and step.at_s <= end:
                metrics.steps.append(await asyncio.to_thread(self.perform, step, at_s))

    def perform(self, step: Step, at_s: float) -> dict[str, object]:
        """Do one step now (blocking); returns what the report shows of it."""
        label = " ".join(x for x in (step.action, step.version or "") if x)
        if (
            step.action in ("publish", "rollout")
            and step.percent is not None
            and step.percent < 100
        ):
            label += f" {step.percent:g}%"
        record: dict[str, object] = {
            "at_h": round(at_s / 3600, 3), "action": step.action, "version": step.version,
            "channel": step.channel, "percent": step.percent, "label": label, "error": None,
        }  # fmt: skip
        try:
            self._act(step, at_s)
        except (AdminError, PublishError, ReleaseError, OSError) as exc:
            record["error"] = str(exc)
        return record

    def _act(self, step: Step, at_s: float) -> None:
        app, channel, version = self.scenario.app_id, step.channel, step.version or ""
        if step.action == "server_down":
            return self.server.down()
        if step.action == "server_up":
            return self.server.up()
        client = self.server.client()
        if step.action == "publish":
            rel = self.releases[version]
            percent = step.percent if step.percent is not None and step.percent < 100 else None
            publish(
                client, app_id=app, version=version, channel=channel, source=rel.dist,
                private_pem=self.private_pem, delta=rel.delta, rollout_percent=percent,
                dialects=self.dialects,
            )  # fmt: skip
            self.published_s.setdefault(version, at_s)
        elif step.action == "rollout":
            client.set_rollout(app, channel, version, step.percent or 0.0)
        elif step.action == "rollback":
            client.rollback(app, channel, version)
        else:
            getattr(client, f"{step.action}_rollout")(app, channel)
        return None
