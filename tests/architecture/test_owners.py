"""One owner per record: a fleet device's `DeviceOutcome` is written only by `Metrics`
(simulator/metrics.py); the virtual device and the fleet call its methods.

Outside its owner an outcome is held under a name ending in `outcome` (`self.outcome`,
`outcome`); the scan looks for writes of its recorded fields through such names (other
records have fields of the same names: a server's `running`, a MITM's `tampered`)."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

from simulator.metrics import DeviceOutcome

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "simulator" / "metrics.py"
# what a device's outcome records as the run goes (its identity is given when it is made)
RECORDED = frozenset(f.name for f in fields(DeviceOutcome)) - {
    "index", "device_id", "platform", "os", "network", "behaviour", "channel", "mitm",
    "disk_full", "dialect",
}  # fmt: skip
MUTATORS = frozenset({"add", "append", "update", "clear", "discard", "pop", "extend", "remove"})


def writes(source: str) -> list[str]:
    """`...outcome.<recorded field>` assigned, augmented, subscripted-assigned or mutated in
    place."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in MUTATORS
        ):
            targets = [node.func.value]
        while targets:
            leaf = targets.pop()
            if isinstance(leaf, (ast.Tuple, ast.List)):
                targets.extend(leaf.elts)
                continue
            while isinstance(leaf, ast.Subscript):
                leaf = leaf.value
            if (
                isinstance(leaf, ast.Attribute)
                and leaf.attr in RECORDED
                and ast.unparse(leaf.value).endswith("outcome")
            ):
                found.append(f"{node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return found


def test_only_metrics_writes_a_device_outcome() -> None:
    others = {
        path.relative_to(ROOT).as_posix(): writes(path.read_text())
        for path in sorted((ROOT / "simulator").rglob("*.py"))
        if path != OWNER
    }
    assert {path: lines for path, lines in others.items() if lines} == {}


def test_the_scan_sees_each_kind_of_write() -> None:
    source = (
        "self.outcome.crashes += 1\noutcome.downloads['x'] += 1\nself.outcome.unbootable = True\n"
        "outcome.booted.add('1')\noutcome.running.append((0, 'v'))\n"
        "a, outcome.tampered = 1, 2\n"
    )
    assert {"crashes", "downloads", "unbootable", "booted", "running", "tampered"} <= RECORDED
    assert len(writes(source)) == 6
    untouched = "outcome.crashes\nx = outcome.downloads['a']\nm.ran(outcome, 'v', 0.0)\n"
    assert writes(untouched) == []
    assert writes("mitm.tampered['flip'] += 1\nself.running = None\n") == []
