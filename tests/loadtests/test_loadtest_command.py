"""`otasim loadtest` argument handling and the Locust command it builds (no run here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from locust_run import Target

from simulator.cli import build_parser, main
from simulator.commands.loadtest import Trust, _given, locust_command, locustfile


def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.pem"
    assert main(["loadtest", "--server", "http://127.0.0.1:9", "--public-key", str(missing)]) == 2
    assert capsys.readouterr().err == f"otasim: error: no such file: {missing}\n"


def test_locust_gets_the_target_the_report_paths_and_the_extra_arguments(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["loadtest", "--server", "http://127.0.0.1:9", "-u", "7", "--processes", "2",
         "--report", str(tmp_path), "--", "--load-shape", "ramp"]
    )  # fmt: skip
    command = locust_command(args, args.server, Trust(Path("key.pem")))
    assert command[1:5] == ["-m", "locust", "-f", str(locustfile())]
    assert locustfile().is_file()
    joined = " ".join(command)
    assert "--host http://127.0.0.1:9 -u 7" in joined and "--headless" in command
    assert f"--csv {tmp_path / 'locust'}" in joined and "--public-key key.pem" in joined
    assert command[-4:] == ["--processes", "2", "--load-shape", "ramp"]


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [("capgo", "--public-key key.pem"), ("expo", "--code-signing expo=key.pem")],
)
def test_the_public_key_is_the_trust_material_of_the_dialect(dialect: str, expected: str) -> None:
    args = build_parser().parse_args(
        ["loadtest", "--server", "http://127.0.0.1:9", "--dialect", dialect,
         "--public-key", "key.pem"]
    )  # fmt: skip
    command = " ".join(locust_command(args, args.server, _given(args)))
    assert expected in command and command.count("key.pem") == 1


def test_a_wrong_target_is_refused_before_locust_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    out = tmp_path / "report"
    code = main(["loadtest", "--server", f"http://127.0.0.1:{port}", "--report", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(err) == 1
    assert err[0].startswith("otasim: error: pre-flight: ") and "no answer" in err[0]
    assert not (out / "locust_stats.csv").exists()


def test_a_locust_run_that_writes_no_report_never_points_at_an_older_one(
    target: Target, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    out.mkdir()
    for name in ("report.html", "locust_stats.csv"):
        (out / name).write_text("an older run")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("otasim")), "loadtest", "--server", target.server.url,
         "--public-key", str(target.public_key), "--report", str(out), "--", "--no-such-option"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout + done.stderr
    assert "report in" not in done.stdout
    assert "no report written" in done.stdout
    assert list(out.glob("*.html")) == list(out.glob("*.csv")) == []


def test_python_m_loadtests_help_lists_the_locustfile_options(tmp_path: Path) -> None:
    """Locust's own --help comes before the locustfile's options exist (locust#2917);
    `python -m loadtests` registers them first, so its help lists them with Locust's."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtests", "-f", str(locustfile()), "--help"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for option in ("--app-id", "--public-key", "--load-shape", "--plugin", "--headless"):
        assert f"  {option}" in done.stdout, option
    assert "otasim devices:" in done.stdout and done.stdout.startswith("Usage: locust")
