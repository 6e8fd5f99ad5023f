"""Clean edges: the sans-I/O core loads no I/O module, the core's lint bans all the agent's
bans plus I/O, and the import graph of agent/, simulator/ and loadtests/ has no circle."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "simulator", "loadtests")
IO_MODULES = ("socket", "ssl", "zipfile", "shutil", "threading", "selectors", "asyncio")


def test_the_core_loads_no_io_module_even_transitively() -> None:
    core = sorted(
        "agent.core" if p.stem == "__init__" else f"agent.core.{p.stem}"
        for p in (ROOT / "agent" / "core").glob("*.py")
        if p.stem != "__init__"
    )
    probe = (
        "import importlib, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        f"print(' '.join(sorted(m for m in {IO_MODULES!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == []


def test_the_probe_sees_a_transitive_io_import() -> None:
    """The fresh-interpreter check fires: the drivers do load sockets through the protocol."""
    probe = "import sys, agent.drivers.runtime; print('socket' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"


def _bans(path: Path) -> dict[str, object]:
    config = tomllib.loads(path.read_text())
    return config["lint"]["flake8-tidy-imports"]["banned-api"]  # type: ignore[no-any-return]


def test_the_core_lint_bans_everything_the_agent_bans() -> None:
    """ruff's `extend` replaces a banned-api table rather than merging it, so the core's
    config must repeat the agent's bans."""
    agent, core = _bans(ROOT / "agent" / "ruff.toml"), _bans(ROOT / "agent" / "core" / "ruff.toml")
    assert set(agent) <= set(core), set(agent) - set(core)


def _ruff_codes(source: str, as_file: str) -> str:
    ruff = Path(sys.executable).with_name("ruff")
    out = subprocess.run(
        [str(ruff), "check", "--no-cache", "--select", "TID251", "--stdin-filename", as_file, "-"],
        cwd=ROOT,
        input=source,
        capture_output=True,
        text=True,
    )
    return out.stdout


@pytest.mark.parametrize(
    "module",
    sorted({*_bans(ROOT / "agent" / "core" / "ruff.toml")} - {"datetime.datetime.now"}),
)
def test_make_lint_refuses_each_banned_import_in_the_core(module: str) -> None:
    report = _ruff_codes(f"import {module}\n", "agent/core/probe.py")
    assert f"`{module}` is banned" in report
    # and the same import is allowed where the agent allows it (drivers may do I/O)
    if module not in _bans(ROOT / "agent" / "ruff.toml"):
        assert "banned" not in _ruff_codes(f"import {module}\n", "agent/drivers/probe.py")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every import (module level or inside a function) between our own modules."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circle() -> None:
    graph = import_graph()
    assert graph["agent.drivers.runtime"] >= {"agent.core.agent", "agent.store"}
    assert cycles(graph) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
