"""Packaging: `pip install otasim` is the agent and its CLI tools; the extras bring the rest,
every imported third-party package is declared, and a command missing its extra says which."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from simulator import cli

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = {"agent", "simulator", "loadtests"}
# The agent modules allowed to import an extra's package: the HTTP backends, imported only
# when asked for (agent.drivers.backends).
AGENT_BACKENDS = {
    "agent.drivers.http_aiohttp",
    "agent.drivers.http_gevent",
    "agent.drivers.http_streams",
}
# Scripts run by another program's Python, never imported by otasim: mitmdump loads the
# attacker's addon in mitmproxy's own venv (`make mitm`).
FOREIGN = {"simulator.prove.mitm_addon"}
DISTRIBUTION = {"jwt": "pyjwt"}
"""Import names that differ from the distribution that provides them."""


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirements, with `otasim[x]` expanded to extra x."""
    names: set[str] = set()
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        if name == "otasim":
            extras = re.search(r"\[(.*)\]", requirement).group(1)
            for extra in extras.split(","):
                names |= _names(PROJECT["optional-dependencies"][extra.strip()])
        else:
            names.add(name)
    return names


BASE = _names(PROJECT["dependencies"])
EXTRA = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}


def third_party_imports() -> dict[str, set[str]]:
    """module -> the top-level third-party packages it imports (anywhere in the module)."""
    found: dict[str, set[str]] = {}
    for package in sorted(OWN):
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            if module in FOREIGN:
                continue
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
            found[module] = {
                DISTRIBUTION.get(n, n)
                for n in names
                if n not in sys.stdlib_module_names and n not in OWN
            }
    return found


def test_the_cli_knows_each_extra_as_pyproject_declares_it() -> None:
    for extra, modules in cli.EXTRAS.items():
        assert set(modules) == EXTRA[extra], extra
    assert EXTRA["all"] == set().union(*(EXTRA[e] for e in cli.EXTRAS))


def test_every_imported_third_party_package_is_declared() -> None:
    imports = third_party_imports()
    declared = BASE | EXTRA["all"]
    used = set().union(*imports.values())
    assert used - declared == set()
    assert {"gevent", "geventhttpclient", "semver"} <= used  # the scan sees them


def test_the_agent_needs_only_the_base_install() -> None:
    beyond = {m: names - BASE for m, names in imports_of("agent").items() if names - BASE}
    assert set(beyond) <= AGENT_BACKENDS, beyond


def imports_of(package: str) -> dict[str, set[str]]:
    return {m: n for m, n in third_party_imports().items() if m.split(".")[0] == package}


def test_a_command_without_its_extra_says_which_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.EXTRAS, "server", ("starlette", "otasim_no_such_module"))
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "otasim: error: otasim serve needs the [server] extra (otasim_no_such_module not "
        "installed): pip install 'otasim[server]'\n"
    )


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.slow
def test_pip_install_without_extras_gives_the_agent_and_its_tools(tmp_path: Path) -> None:
    """A fresh venv, `pip install .` (pip's own cache), then the device and bundle tools."""
    venv = tmp_path / "venv"
    try:
        _check_fresh_install(venv, tmp_path / "work")
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~100 MB: not left for pytest's tmp retention


def _check_fresh_install(venv: Path, work: Path) -> None:
    assert _run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    pip = _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)],
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    otasim = str(venv / "bin" / "otasim")
    (work / "dist").mkdir(parents=True)
    (work / "dist" / "index.html").write_text("<html>hello</html>")

    def ok(*argv: str) -> str:
        out = _run([otasim, *argv], cwd=work)
        assert out.returncode == 0, (argv, out.stderr)
        return out.stdout

    installed = _run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"])
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert not names & {"starlette", "aiohttp", "locust", "matplotlib", "gevent"}, names
    assert "usage: otasim device" in ok("device", "--help")
    assert "usage: otasim bundle" in ok("bundle", "--help")
    ok("keys", "create", "--out", "keys")
    ok("bundle", "zip", "dist", "--out", "b.zip")
    enc = json.loads(ok("bundle", "encrypt", "b.zip", "--key", "keys/private.pem", "--json"))
    ok(
        "bundle", "verify", enc["file"], "--checksum", enc["checksum"],
        "--session-key", enc["session_key"], "--public-key", "keys/public.pem", "--unpack", "out",
    )  # fmt: skip
    assert (work / "out" / "index.html").read_text() == "<html>hello</html>"
    serve = _run([otasim, "serve"], cwd=work)
    assert serve.returncode == 2
    assert serve.stderr.startswith("otasim: error: otasim serve needs the [server] extra (")
    assert serve.stderr.endswith("pip install 'otasim[server]'\n")
    assert serve.stderr.count("\n") == 1
