"""The CLI contract for bad input, as a user meets it: the installed `otasim`, a fresh process
per case. Each bad command exits 2, ends its stderr with one `otasim: error: ...` line, prints
nothing on stdout (nothing started) and never shows a traceback. Only 127.0.0.1 is named, and
only where a refused port (9) or an address without a scheme must be refused before any request.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.cli import build_parser

OTASIM = str(Path(sys.executable).with_name("otasim"))
REFUSED = "http://127.0.0.1:9"
DEVICE = ["--app-id", "com.example.app", "--platform", "ios"]
APP = ["--app-id"]  # followed by a bad one
IOS = ["--platform", "ios", "--version-build", "1.0.0"]
RELEASE = ["--version", "1.0.1", "--channel", "production"]

BAD_ARGUMENTS: list[list[str]] = [
    ["nope"],
    ["run", "--server", "127.0.0.1:8787"],
    ["run", "--devices", "abc"],
    ["run", "--devices", "0"],
    ["run", "--time-scale", "-1"],
    ["run", "--processes", "many"],
    ["run", "--scenario", "no-such-scenario"],
    ["run", "--expect-release", "1.0.1", "--server", REFUSED],
    ["run", "--http", "curl"],
    ["run", "--junit", "/proc/otasim/junit.xml"],
    ["run", "--baseline", "no-such-run"],
    ["run", "--server", REFUSED, "--public-key", "{aside}/garbage.pem", "--report", "{aside}/r"],
    ["loadtest", "-t", "forever"],
    ["loadtest", "-u", "0"],
    ["loadtest", "-r", "fast"],
    ["loadtest", "--processes", "0"],
    ["loadtest", "--release", "banana"],
    ["loadtest", "--server", "127.0.0.1:9"],
    ["serve", "--port", "99999"],
    ["serve", "--port", "abc"],
    [
        "serve",
        "--port",
        "0",
        "--tls-cert",
        "{aside}/garbage.pem",
        "--tls-key",
        "{aside}/garbage.pem",
    ],
    ["publish"],
    ["admin"],
    ["admin", "--server", REFUSED, "--api-key", "k", "rollout", "a", "c", "1.0.0", "150"],
    ["admin", "--server", REFUSED, "--api-key", "k", "key-revoke", "one"],
    ["device"],
    ["device", "init", "dev", "--server", REFUSED, *DEVICE, "--version-build", "banana"],
    ["device", "init", "dev", "--server", "127.0.0.1:9", *DEVICE, "--version-build", "1.0.0"],
    ["device", "init", "dev", "--server", REFUSED, *APP, "myapp", *IOS],
    ["device", "init", "dev", "--server", REFUSED, "--dialect", "capawesome", *APP, "a/b", *IOS],
    ["device", "status", "absent"],
    ["keys", "create"],
    ["bundle", "verify", "absent.zip"],
    ["check", "--devices", "abc"],
    ["check", "--expect-rollout", "150", "--server", REFUSED, "--app-id", "com.example.app"],
    ["check", "--server", "127.0.0.1:9", "--app-id", "com.example.app"],
    ["check", "--server", REFUSED, "--app-id", "myapp"],
    ["publish", "{aside}", "--server", REFUSED, "--api-key", "k", *APP, "my app", *RELEASE],
    ["compare", "absent"],
    ["compare", "absent", "also-absent"],
    ["compare", "absent", "also-absent", "--max-adoption-drop", "-1"],
    ["prove", "--cases", "0"],
    ["prove", "--seed", "x"],
]


def otasim(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTASIM_")}
    return subprocess.run(
        [OTASIM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=" ".join)
def test_bad_arguments_exit_2_with_one_error_line_and_start_nothing(
    args: list[str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    aside = tmp_path_factory.mktemp("aside")  # files a case reads, outside its working folder
    (aside / "garbage.pem").write_text("not a key\n")
    done = otasim([arg.format(aside=aside) for arg in args], tmp_path)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    last = done.stderr.rstrip("\n").splitlines()[-1]
    assert last.startswith("otasim: error: "), done.stderr
    assert "invalid _" not in last, last  # argparse naming a private function
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == [], "created before failing"


# Every command that talks to a server, pointed at a closed port: exit 3, one line.
UNREACHABLE: list[list[str]] = [
    ["publish", "{aside}", "--server", REFUSED, "--api-key", "k", "--app-id", "com.example.app",
     "--version", "1.0.1", "--channel", "production"],
    ["admin", "--server", REFUSED, "--api-key", "k", "apps"],
    ["check", "--server", REFUSED, "--app-id", "com.example.app"],
    ["run", "--server", REFUSED, "--report", "{aside}/r", "--no-progress"],
    ["loadtest", "--server", REFUSED, "--report", "{aside}/o"],
]  # fmt: skip


@pytest.mark.parametrize("args", UNREACHABLE, ids=lambda a: a[0])
def test_an_unreachable_server_exits_3_for_every_command(
    args: list[str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    aside = tmp_path_factory.mktemp("aside")
    (aside / "index.html").write_text("<!doctype html>")
    done = otasim([arg.format(aside=aside) for arg in args], tmp_path)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 3, done.stderr
    (last,) = done.stderr.splitlines()
    assert last.startswith("otasim: error: "), done.stderr


def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    done = otasim(["--version"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"otasim {importlib.metadata.version('otasim')}\n"


def test_a_closed_output_pipe_exits_1_without_a_traceback() -> None:
    # `otasim ... | head` where head has gone: the reading end is closed before otasim writes.
    with subprocess.Popen(
        [OTASIM, "check", "--list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert code == 1, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """`parser` and every (sub)command parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


@pytest.mark.parametrize("parser", list(_parsers(build_parser())), ids=lambda p: p.prog)
def test_every_help_lists_its_exit_codes_with_2_for_a_usage_error(
    parser: argparse.ArgumentParser,
) -> None:
    text = parser.format_help()
    block = text[text.index("\nexit codes:\n") :].splitlines()[2:]
    codes = {int(line.split()[0]): line.split(None, 1)[1] for line in block if line[2:3].isdigit()}
    assert codes[2].startswith("usage error"), text
    # one code for a server unreachable or refusing, in every command that talks to one
    talks = parser.prog.split()[1:2] in (["publish"], ["admin"], ["check"], ["run"],
                                         ["loadtest"], ["device"])  # fmt: skip
    if talks:
        assert "server unreachable" in codes[3], text
    assert all("server unreachable" not in t for c, t in codes.items() if c != 3), text
    assert "exit status" not in text  # one wording across commands


def test_one_option_name_per_concept_across_commands() -> None:
    """The OTA server's base URL is --server and a report folder --report in every command
    (serve's --host is the address it binds, another concept; Locust's own --host stays)."""
    options = {
        p.prog: {s for a in p._actions for s in a.option_strings} for p in _parsers(build_parser())
    }
    for prog in ("run", "loadtest", "check", "publish", "admin", "device init"):
        assert "--server" in options[f"otasim {prog}"], prog
    assert all("--host" not in opts for prog, opts in options.items() if prog != "otasim serve")
    assert "--report" in options["otasim run"] and "--report" in options["otasim loadtest"]
    assert all("--out" not in options[f"otasim {p}"] for p in ("run", "loadtest", "check"))
