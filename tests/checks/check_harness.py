"""Shared by the checker tests: the apps the servers publish, running `otasim check` in
this process and reading its JSON back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from defect_server import DefectLayer

from simulator.cli import main

APP = "com.example.app"
SIGNED, PLAIN, ROLLOUT = "com.check.signed", "com.check.plain", "com.check.rollout"
DOWNGRADE, EVIL, ZIP = "com.check.downgrade", "com.check.evil", "com.check.zip"
PRIVATE_CHANNEL, BETA = "internal", "beta"


@dataclass(frozen=True)
class Checked:
    code: int
    report: dict[str, Any]
    out: str

    def status(self, check_id: str) -> str:
        return next(c["status"] for c in self.report["checks"] if c["id"] == check_id)

    def not_passing(self) -> dict[str, str]:
        """check id -> status, for every check that neither passed nor skipped."""
        return {
            c["id"]: c["status"]
            for c in self.report["checks"]
            if c["status"] not in ("pass", "skip")
        }


def run_check(tmp: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Checked:
    """`otasim check ARGS --json FILE` in this process.

    The latency budget is the plugin's 20 s responseTimeout unless ARGS sets one: a shared,
    noisy machine must not decide the suite (the `slow` defect case sets a tight one)."""
    out = tmp / "check.json"
    out.unlink(missing_ok=True)
    code = main(["check", "--max-p99-ms", "20000", *args, "--json", str(out)])
    printed = capsys.readouterr().out
    return Checked(code, json.loads(out.read_text()) if out.exists() else {}, printed)


@dataclass(frozen=True)
class Defective:
    url: str
    ca_file: Path
    layer: DefectLayer
