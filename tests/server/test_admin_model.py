"""A random sequence of admin calls keeps the server equal to a simple model of channels and
rollouts, refuses what the model refuses, and leaves the database consistent."""

from __future__ import annotations

import hashlib
import itertools
import zipfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from simulator.server.client import AdminClient, AdminError
from simulator.server.embedded import RunningServer

from .test_bad_input import assert_consistent

VERSIONS = st.sampled_from(["1.0.0", "1.0.1", "1.1.0", "2.0.0", "builtin"])
CHANNELS = st.sampled_from(["production", "beta"])
_apps = itertools.count()


class AdminModel(RuleBasedStateMachine):
    server: RunningServer
    admin: AdminClient
    file_id: str

    def __init__(self) -> None:
        super().__init__()
        self.app = f"com.model.app{next(_apps)}"
        self.admin.create_app(self.app)
        self.bundles: set[str] = set()
        self.channels: dict[str, dict[str, Any]] = {}

    def expect(self, status: int | None, call: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an admin call; `status` None means it must succeed."""
        try:
            answer = call(*args, **kwargs)
        except AdminError as exc:
            assert exc.status == status, exc
            return None
        assert status is None, f"expected {status}, got {answer}"
        return answer

    @initialize()
    def start_with_two_bundles_on_production(self) -> None:
        for version in ("1.0.0", "1.1.0", "1.0.0"):  # the second 1.0.0 is a 409
            self.add_bundle(version)
        self.set_channel("production", "1.0.0", public=True)

    def missing(self, version: str) -> bool:
        return version != "builtin" and version not in self.bundles

    @precondition(lambda self: len(self.bundles) < 4)
    @rule(version=VERSIONS.filter(lambda v: v != "builtin"))
    def add_bundle(self, version: str) -> None:
        status = 409 if version in self.bundles else None
        body = {"version": version, "checksum": "0" * 64, "file_id": self.file_id}
        self.expect(status, self.admin._call, "POST", f"/api/apps/{self.app}/bundles", json=body)
        self.bundles.add(version)

    @rule(channel=CHANNELS, version=VERSIONS, public=st.booleans())
    def set_channel(self, channel: str, version: str, public: bool) -> None:
        if self.missing(version):
            self.expect(
                404, self.admin.set_channel, self.app, channel, version=version, public=public
            )
            return
        self.expect(None, self.admin.set_channel, self.app, channel, version=version, public=public)
        state = self.channels.setdefault(channel, {"rollout": None, "bps": 0, "paused": False})
        state.update(version=version, public=public)

    @rule(channel=CHANNELS, version=VERSIONS, percent=st.sampled_from([0, 10, 33.33, 100, 150]))
    def rollout(self, channel: str, version: str, percent: float) -> None:
        if percent > 100:
            status: int | None = 400
        elif channel not in self.channels or self.missing(version):
            status = 404
        elif version == "builtin":
            status = 400
        else:
            status = None
        self.expect(status, self.admin.set_rollout, self.app, channel, version, percent)
        if status is None:
            self.channels[channel].update(rollout=version, bps=round(percent * 100), paused=False)

    @rule(channel=CHANNELS, action=st.sampled_from(["pause", "resume", "complete"]))
    def rollout_action(self, channel: str, action: str) -> None:
        state = self.channels.get(channel)
        status = 404 if state is None else 409 if state["rollout"] is None else None
        self.expect(status, getattr(self.admin, f"{action}_rollout"), self.app, channel)
        if status is None and state is not None:
            if action == "complete":
                state.update(version=state["rollout"], rollout=None, bps=0, paused=False)
            else:
                state["paused"] = action == "pause"

    @rule(channel=CHANNELS, version=VERSIONS)
    def rollback(self, channel: str, version: str) -> None:
        status = 404 if channel not in self.channels or self.missing(version) else None
        self.expect(status, self.admin.rollback, self.app, channel, version)
        if status is None:
            self.channels[channel].update(version=version, rollout=None, bps=0, paused=False)

    @invariant()
    def server_matches_model(self) -> None:
        seen = {c["name"]: c for c in self.admin.app(self.app)["channels"]}
        assert set(seen) == set(self.channels)
        for name, state in self.channels.items():
            got = seen[name]
            assert (got["version"], got["public"]) == (state["version"], state["public"])
            assert (got["rollout_version"], got["rollout_bps"]) == (state["rollout"], state["bps"])
            assert got["rollout_paused"] == state["paused"]


def test_admin_calls_follow_the_model(
    server: RunningServer, admin: AdminClient, tmp_path: Path
) -> None:
    admin.create_app("com.model.files")
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("index.html", "<html></html>")
    AdminModel.server, AdminModel.admin = server, admin
    AdminModel.file_id = admin.upload_file("com.model.files", path)
    assert AdminModel.file_id == hashlib.sha256(path.read_bytes()).hexdigest()
    case = AdminModel.TestCase
    case.settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    case().runTest()
    assert_consistent(server.data_dir)
