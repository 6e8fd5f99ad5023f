"""One small scenario per non-Capgo dialect, end to end on the embedded reference server: a
release that crashes on boot everywhere is rolled back on every device, never fetched again,
and the fixed release is adopted (50 devices, 24 simulated hours)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.runner import RunOptions, simulate

DEVICES = 50


@pytest.mark.parametrize("dialect", ["expo", "codepush"])
def test_bad_release_is_rolled_back_and_the_fix_adopted(tmp_path: Path, dialect: str) -> None:
    report, _ = simulate(
        RunOptions(
            scenario="bad-release-rollback",
            devices=DEVICES,
            seed=5,
            report_dir=tmp_path / "report",
            progress=False,
            dialect=dialect,
        )
    )
    failed = [r for r in report["expectations"] if r["ok"] is not True]
    assert not failed, failed
    assert report["run"]["dialects"] == {dialect: DEVICES}
    assert report["adoption"]["final"]["1.0.2"] >= 0.95
    assert report["updates"]["tampered_activated"] == 0
    lost = report["stats"]["sent"] - report["stats"]["server_received"]
    assert lost == 0 if dialect == "codepush" else report["stats"]["sent"] == 0


def test_signed_expo_fleet_follows_channel_rollbacks(tmp_path: Path) -> None:
    """The embedded server holds the run's Expo key (as `otasim run` registers it): a channel
    rolled back to an older release, then to builtin, is followed by signed devices (publish-
    time signing alone: the older manifest is a replay, the directive unsigned)."""
    report, _ = simulate(
        RunOptions(
            scenario=str(Path(__file__).with_name("expo_rollbacks.toml")),
            seed=3,
            report_dir=tmp_path / "report",
            progress=False,
        )
    )
    failed = [r for r in report["expectations"] if r["ok"] is not True]
    assert not failed, failed
    assert report["updates"]["tampered_activated"] == 0
