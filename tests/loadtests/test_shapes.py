"""Load shape plans and option checks (pure: no Locust in this process)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import settings as settings_module
from loadtests.settings import LoadtestSettings, add_options
from loadtests.shapes import (
    DiurnalShape,
    RampShape,
    ReleaseDayShape,
    SteadyShape,
    plan_from_options,
)

ROOT = Path(__file__).resolve().parents[2]


def _options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("-u", dest="num_users", type=int, default=None)
    parser.add_argument("-r", dest="spawn_rate", type=float, default=None)
    parser.add_argument("-t", dest="run_time", type=float, default=None)
    real_add = parser.add_argument

    def add_argument(*args: object, include_in_web_ui: bool = True, **kwargs: object) -> object:
        return real_add(*args, **kwargs)  # type: ignore[arg-type]

    parser.add_argument = add_argument  # type: ignore[method-assign]
    add_options(parser)
    return parser.parse_args(argv)


def test_release_day_is_steady_then_a_herd_within_the_window() -> None:
    shape = ReleaseDayShape(100, 0.2, release_at_s=60, herd_window_s=20, hold_s=30)
    assert shape.users_at(0) == (20, 20.0)
    assert shape.users_at(59.9) == (20, 20.0)
    users, rate = shape.users_at(60)  # type: ignore[misc]
    assert users == 100 and rate * 20 == pytest.approx(80)  # the other 80 arrive within 20 s
    assert shape.users_at(109.9) == (100, 4.0)
    assert shape.users_at(110) is None


def test_diurnal_follows_a_day_between_night_and_peak() -> None:
    shape = DiurnalShape(100, 0.2, period_s=600, cycles=2)
    levels = [shape.users_at(t)[0] for t in range(0, 1200, 30)]  # type: ignore[index]
    assert min(levels) == 20 and max(levels) == 100
    assert shape.users_at(300)[0] == 100 and shape.users_at(600)[0] == 20  # type: ignore[index]
    assert shape.users_at(1200) is None


def test_ramp_and_steady() -> None:
    assert RampShape(50, ramp_s=10, hold_s=5).users_at(3) == (50, 5.0)
    assert RampShape(50, ramp_s=10, hold_s=5).users_at(15) is None
    assert SteadyShape(10, 2.0, None).users_at(1e9) == (10, 2.0)
    assert SteadyShape(10, 2.0, 30.0).users_at(30.0) is None


def test_shape_is_chosen_by_option() -> None:
    assert isinstance(plan_from_options(_options("-u", "9", "--load-shape", "ramp")), RampShape)
    plan = plan_from_options(_options("-u", "9", "--load-shape", "release-day"))
    assert isinstance(plan, ReleaseDayShape) and plan.users == 9
    assert plan_from_options(_options("-u", "9", "-r", "3", "-t", "5")) == SteadyShape(9, 3.0, 5)
    with pytest.raises(ValueError, match="steady-share"):
        plan_from_options(_options("--load-shape", "release-day", "--steady-share", "2"))


def test_settings_refuse_bad_options(tmp_path: Path) -> None:
    good = _options("--fleet-mix", "steady-rollout", "--device-root", str(tmp_path))
    settings = LoadtestSettings.from_options(good)
    assert settings.http_backend == "geventhttpclient" and settings.public_key is None
    with pytest.raises(ValueError, match="max-devices-per-worker"):
        LoadtestSettings.from_options(_options("--max-devices-per-worker", "0"))
    with pytest.raises(ValueError, match="no such scenario"):
        LoadtestSettings.from_options(_options("--fleet-mix", "no-such-mix"))


def test_refused_options_make_no_device_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    monkeypatch.setattr(settings_module, "_process_device_root", lambda: made.append(1) or "x")
    with pytest.raises(ValueError, match="no such scenario"):
        LoadtestSettings.from_options(_options("--fleet-mix", "no-such-mix"))
    assert made == []
    LoadtestSettings.from_options(_options())
    assert made == [1]


def test_the_default_device_root_is_removed_when_the_process_exits() -> None:
    probe = (
        "import sys; sys.path.insert(0, 'tests/loadtests')\n"
        "from test_shapes import _options\n"
        "from loadtests.settings import LoadtestSettings\n"
        "root = LoadtestSettings.from_options(_options()).device_root\n"
        "(root / 'device-1').mkdir()\n"
        "print(root, root.is_dir())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    root, existed = out.stdout.split()
    assert existed == "True" and Path(root).name.startswith("otasim-locust-")
    assert not Path(root).exists()


def test_the_folder_of_a_killed_process_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """A Locust process killed outright leaves its devices' folder (named after its PID); the
    next one removes it (its PID no longer runs), keeps a live process's, and says where its
    own devices are."""
    import os
    import tempfile

    where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = Path(where) / f"otasim-locust-{gone.pid}-test"
    live = Path(where) / f"otasim-locust-{os.getpid()}-test"
    for folder in (dead, live):
        (folder / "device").mkdir(parents=True)
    probe = (
        "import sys; sys.path.insert(0, 'tests/loadtests')\n"
        "from test_shapes import _options\n"
        "from loadtests.settings import LoadtestSettings\n"
        "print(LoadtestSettings.from_options(_options()).device_root)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
        )
        assert not dead.exists() and live.is_dir()
        root = out.stdout.strip()
        assert Path(root).name.startswith("otasim-locust-") and root in out.stderr
    finally:
        for folder in (dead, live):
            shutil.rmtree(folder, ignore_errors=True)
