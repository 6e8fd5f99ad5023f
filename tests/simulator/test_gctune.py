"""A fleet process collects garbage in batches while its fleet runs, and only then."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from simulator.gctune import THRESHOLDS, batched_collection
from simulator.runner import RunOptions, simulate

SCENARIO = """
duration_h = 1
[[fleet]]
network = "lan"
behaviour = "heavy"
[[releases]]
version = "1.0.1"
size_kb = 10
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
"""


def test_the_thresholds_hold_inside_the_block_and_come_back_after_it() -> None:
    before = gc.get_threshold()
    assert before != THRESHOLDS
    with pytest.raises(KeyError), batched_collection():
        assert gc.get_threshold() == THRESHOLDS
        raise KeyError("a failed run")
    assert gc.get_threshold() == before


def test_a_fleet_runs_with_batched_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, ...]] = []
    real = gc.set_threshold

    def spy(*values: Any) -> None:
        seen.append(values)
        real(*values)

    monkeypatch.setattr(gc, "set_threshold", spy)
    before = gc.get_threshold()
    path = tmp_path / "tiny.toml"
    path.write_text(SCENARIO)
    simulate(RunOptions(str(path), devices=3, seed=1, report_dir=tmp_path / "out", progress=False))
    assert seen == [THRESHOLDS, before]
    assert gc.get_threshold() == before
