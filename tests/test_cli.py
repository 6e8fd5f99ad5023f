import subprocess
import sys

from simulator.cli import COMMAND_MODULES, build_parser


def test_every_command_module_registers_a_subcommand() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(m.replace("_", "-") for m in COMMAND_MODULES)


def test_help_runs_in_a_fresh_process() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "usage: otasim" in out.stdout
