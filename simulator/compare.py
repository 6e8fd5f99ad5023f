"""`otasim compare`: what changed between two runs' report.json, and whether it regressed.

A run is compared with a baseline (the last release's run, say) on the figures a release
decision rests on: adoption of each run's newest release at its milestones (1, 6, 24 h after
publication), update success, rollbacks, unbootable and tampered devices, stuck devices,
failures per cause (per device, so fleets of different sizes compare) and request latency.
Each figure has a threshold (`Thresholds`); beyond it, the row is a regression. A figure
either run could not measure is `unknown`: never a regression, never a pass.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.results import MILESTONES_H


class CompareError(ValueError):
    """A folder that holds no readable otasim report."""


@dataclass(frozen=True)
class Thresholds:
    adoption_drop: float = 0.05  # share of the fleet, at each milestone
    success_drop: float = 0.02  # update success rate
    rollback_rise: float = 0.01  # share of devices rolled back
    stuck_rise: float = 0.05  # share of devices not on the newest release at the end
    failure_rise: float = 0.01  # failures of one cause per device
    latency_rise: float = 1.0  # relative: 1.0 = twice as slow (real ms: noisy machines)
    latency_floor_ms: float = 50.0  # and by at least this much


@dataclass(frozen=True)
class Row:
    figure: str
    baseline: float | None
    run: float | None
    limit: str  # the threshold, in words
    regressed: bool | None  # None: unknown (not measured in one of the runs)

    @property
    def verdict(self) -> str:
        return {True: "REGRESSED", False: "ok", None: "unknown"}[self.regressed]


def load(folder: Path) -> dict[str, Any]:
    """The report.json of a run folder.

    Raises:
        CompareError: no report.json, not JSON, or not an otasim report of this schema.
    """
    from simulator.report import SCHEMA  # matplotlib: only when a comparison runs

    path = folder / "report.json" if folder.is_dir() else folder
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CompareError(f"{path}: cannot read the report: {exc.strerror or exc}") from None
    except ValueError:
        raise CompareError(f"{path}: not JSON") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise CompareError(f"{path}: not an otasim report ({SCHEMA})")
    return report


def compare(base: dict[str, Any], run: dict[str, Any], limits: Thresholds) -> list[Row]:
    """The rows of the comparison, in the order they are shown."""
    rows = []
    b_target, r_target = _target(base), _target(run)
    for h in MILESTONES_H:
        b, r = _milestone(base, b_target, h), _milestone(run, r_target, h)
        rows.append(_lower(f"adoption of the newest release {h} h after publication", b, r,
                           limits.adoption_drop))  # fmt: skip
    rows.append(_lower("update success rate", base["updates"]["success_rate"],
                       run["updates"]["success_rate"], limits.success_drop))  # fmt: skip
    rows.append(_higher("devices rolled back (share)", _share(base, "devices_rolled_back"),
                        _share(run, "devices_rolled_back"), limits.rollback_rise))  # fmt: skip
    for name in ("unbootable", "tampered_activated", "downgraded"):
        b, r = base["updates"].get(name), run["updates"].get(name)
        rows.append(_higher(f"devices {name.replace('_', ' ')}", b, r, 0.0))
    rows.append(_higher("devices stuck (share)", _stuck(base), _stuck(run), limits.stuck_rise))
    for cause in sorted({*base["failures"], *run["failures"]}):
        b, r = _per_device(base, cause), _per_device(run, cause)
        rows.append(_higher(f"failures {cause} per device", b, r, limits.failure_rise))
    for endpoint in sorted(set(base["requests"]) & set(run["requests"])):
        for q in ("p50", "p90", "p99"):
            b = base["requests"][endpoint]["latency_ms"].get(q)
            r = run["requests"][endpoint]["latency_ms"].get(q)
            rows.append(_slower(f"latency {endpoint} {q} ms", b, r, limits))
    return rows


def comparison(base: Mapping[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """What report.json says of a run compared with a baseline (`otasim run --baseline`),
    with the default thresholds: the rows, and the regressions."""
    rows = compare(dict(base), run, Thresholds())
    return {
        "baseline": f"{base['scenario']['name']}, {base['run']['devices']:,} devices, "
        f"seed {base['run']['seed']}, {base['run']['started_at']}",
        "regressions": [r.figure for r in rows if r.regressed],
        "rows": [
            {"figure": r.figure, "baseline": r.baseline, "run": r.run, "limit": r.limit,
             "verdict": r.verdict}
            for r in rows
        ],
    }  # fmt: skip


def _target(report: dict[str, Any]) -> str | None:
    target: str | None = report["adoption"].get("target")
    return target


def _milestone(report: dict[str, Any], version: str | None, h: int) -> float | None:
    if version is None:
        return None
    share: float | None = report["adoption"]["milestones"].get(version, {}).get(f"{h}h")
    return share


def _share(report: dict[str, Any], key: str) -> float:
    return round(report["updates"][key] / max(report["run"]["devices"], 1), 4)


def _stuck(report: dict[str, Any]) -> float | None:
    if not report["stuck"]["target"]:
        return None
    return round(report["stuck"]["devices"] / max(report["run"]["devices"], 1), 4)


def _per_device(report: dict[str, Any], cause: str) -> float:
    return round(report["failures"].get(cause, 0) / max(report["run"]["devices"], 1), 4)


def _lower(figure: str, b: float | None, r: float | None, drop: float) -> Row:
    """A figure that regresses when it falls by more than `drop`."""
    regressed = None if b is None or r is None else r < b - drop - 1e-9
    return Row(figure, b, r, f"falls by more than {drop:g}", regressed)


def _higher(figure: str, b: float | None, r: float | None, rise: float) -> Row:
    """A figure that regresses when it rises by more than `rise`."""
    regressed = None if b is None or r is None else r > b + rise + 1e-9
    return Row(figure, b, r, f"rises by more than {rise:g}" if rise else "rises", regressed)


def _slower(figure: str, b: float | None, r: float | None, limits: Thresholds) -> Row:
    """A latency that regresses when it grows beyond (1 + latency_rise) times the baseline
    and by more than latency_floor_ms."""
    rise, floor = limits.latency_rise, limits.latency_floor_ms
    regressed = None if b is None or r is None else r > b * (1 + rise) and r - b > floor
    return Row(figure, b, r, f"over {1 + rise:g}× the baseline and +{floor:g} ms", regressed)


def render_text(rows: list[Row], base: Path, run: Path) -> str:
    """The table `otasim compare` prints."""
    width = max(len(r.figure) for r in rows) if rows else 10
    lines = [f"baseline {base}  vs  run {run}", ""]
    lines.append(f"{'':9} {'figure':{width}}  {'baseline':>10}  {'run':>10}  regression when")
    for r in rows:
        lines.append(
            f"{r.verdict:9} {r.figure:{width}}  {_fmt(r.baseline):>10}  {_fmt(r.run):>10}  "
            f"{r.limit}"
        )
    regressed = [r for r in rows if r.regressed]
    lines += ["", f"{len(regressed)} regression(s)" if regressed else "no regression"]
    return "\n".join(lines) + "\n"


def render_html(rows: list[Row], base: Path, run: Path) -> str:
    """The same comparison as a self-contained page, regressions first."""
    esc = html.escape
    ordered = sorted(rows, key=lambda r: (r.regressed is not True, r.regressed is None))
    body = "".join(
        f'<tr class="{r.verdict.lower()}"><td>{r.verdict}</td><td>{esc(r.figure)}</td>'
        f"<td>{_fmt(r.baseline)}</td><td>{_fmt(r.run)}</td><td>{esc(r.limit)}</td></tr>"
        for r in ordered
    )
    n = sum(bool(r.regressed) for r in rows)
    verdict = f"{n} regression(s)" if n else "no regression"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>otasim compare — {verdict}</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:1000px;margin:0 auto;padding:24px}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #e3e6ec;
padding:5px 8px;text-align:left}}tr.regressed td{{background:#fff1f1;color:#9b1c1c}}
tr.unknown td{{color:#a16207}}</style></head><body>
<h1>otasim compare: {verdict}</h1>
<p>baseline <code>{esc(str(base))}</code> · run <code>{esc(str(run))}</code></p>
<table><tr><th></th><th>figure</th><th>baseline</th><th>run</th><th>regression when</th></tr>
{body}</table></body></html>
"""


def _fmt(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"
