"""Results as a terminal table, JSON (`otasim.check/1`), JUnit XML (shaped like pytest's, for
CI) and a self-contained HTML page in the fleet report's style."""

from __future__ import annotations

import html
import json
import platform
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simulator.checks.model import FAMILIES, Result

SCHEMA = "otasim.check/1"
MARK = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "skip": "SKIP", "error": "ERROR"}


@dataclass(frozen=True)
class RunSummary:
    server: str
    app_id: str
    profile: str
    started_at: str
    wall_s: float
    allow_writes: bool
    devices: dict[str, str]  # synthetic device label -> id

    def exit_code(self, results: Sequence[Result]) -> int:
        """1 when an error-severity check failed (or the checker broke), else 0."""
        return 1 if any(r.status in ("fail", "error") for r in results) else 0


def verdict_line(results: Sequence[Result], run: RunSummary) -> str:
    """FAILED or passed, saying how much was not judged: a skipped check is never a pass."""
    verdict = "FAILED" if run.exit_code(results) else "passed"
    skipped = counts(results)["skip"]
    if skipped:
        verdict += f" ({skipped} of {len(results)} checks skipped: not judged, see their reasons)"
    return verdict


def counts(results: Sequence[Result]) -> dict[str, int]:
    tally = Counter(r.status for r in results)
    return {status: tally.get(status, 0) for status in MARK}


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    return textwrap.wrap(
        text, width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


def terminal(results: Sequence[Result], run: RunSummary, width: int = 100) -> str:
    """The table: one line per check, and for problems the detail and what devices suffer."""
    lines = [f"otasim check {run.server} (app {run.app_id}, {run.profile})", ""]
    for family, title in FAMILIES.items():
        rows = [r for r in results if r.check.family == family]
        if not rows:
            continue
        lines.append(title)
        for r in rows:
            lines.append(f"  {MARK[r.status]:<5} {r.check.id:<26} {r.check.title}")
            indent = " " * 34
            lines += _wrap(r.detail, width, indent, indent)
            if r.status in ("fail", "warn"):
                lines += _wrap(f"devices: {r.check.why}", width, indent, indent + "  ")
        lines.append("")
    c = counts(results)
    lines.append(", ".join(f"{n} {s}" for s, n in c.items() if n) + f" in {run.wall_s:.1f} s")
    if run.devices:
        shown = ", ".join(sorted(set(run.devices.values()))[:3])
        more = len(set(run.devices.values())) - 3
        lines.append(
            f"synthetic device ids (UUIDv5, stable per app): {shown}"
            + (f" and {more} more (all in --json)" if more > 0 else "")
        )
    lines.append("writes: " + ("allowed (--allow-writes)" if run.allow_writes else "none"))
    lines.append(f"verdict: {verdict_line(results, run)}")
    return "\n".join(lines)


def to_json(results: Sequence[Result], run: RunSummary) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "server": run.server,
        "app_id": run.app_id,
        "profile": run.profile,
        "started_at": run.started_at,
        "wall_s": round(run.wall_s, 2),
        "allow_writes": run.allow_writes,
        "passed": run.exit_code(results) == 0,
        "counts": counts(results),
        "synthetic_devices": run.devices,
        "checks": [
            {
                "id": r.check.id,
                "family": r.check.family,
                "title": r.check.title,
                "severity": r.check.severity,
                "status": r.status,
                "detail": r.detail,
                "why": r.check.why,
                "duration_s": round(r.duration_s, 3),
            }
            for r in results
        ],
    }


def junit_xml(results: Sequence[Result], run: RunSummary) -> bytes:
    """JUnit XML as pytest writes it: testsuites > testsuite > testcase with failure,
    error or skipped children; a warning is a passing case with its note in system-out."""
    c = counts(results)
    root = ET.Element("testsuites", name="otasim check")
    suite = ET.SubElement(
        root,
        "testsuite",
        name="otasim check",
        errors=str(c["error"]),
        failures=str(c["fail"]),
        skipped=str(c["skip"]),
        tests=str(len(results)),
        time=f"{run.wall_s:.3f}",
        timestamp=run.started_at,
        hostname=platform.node(),
    )
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"otasim.check.{r.check.family}",
            name=r.check.id,
            time=f"{r.duration_s:.3f}",
        )
        text = f"{r.check.title}\n{r.detail}\ndevices: {r.check.why}"
        if r.status == "fail":
            ET.SubElement(case, "failure", message=r.detail).text = text
        elif r.status == "error":
            ET.SubElement(case, "error", message=r.detail).text = text
        elif r.status == "skip":
            ET.SubElement(case, "skipped", type="otasim.skip", message=r.detail).text = r.detail
        elif r.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {text}"
    ET.indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")


def render_html(results: Sequence[Result], run: RunSummary) -> str:
    """The self-contained page: verdict, counts as cards, one table per family."""
    from simulator.report import _CSS  # the fleet report's look

    esc = html.escape
    verdict = "FAILED" if run.exit_code(results) else "passed"
    summary = verdict_line(results, run)
    cards = "".join(f"<div><b>{n}</b><span>{s}</span></div>" for s, n in counts(results).items())
    sections = []
    for family, title in FAMILIES.items():
        rows = "".join(
            f"<tr class={_ROW[r.status]}><td>{MARK[r.status]}</td><td><code>{esc(r.check.id)}"
            f"</code><br>{esc(r.check.title)}</td><td>{r.check.severity}</td>"
            f"<td>{esc(r.detail)}</td><td>{esc(r.check.why)}</td></tr>"
            for r in results
            if r.check.family == family
        )
        if rows:
            sections.append(
                f"<section><h2>{esc(title)}</h2><table><tr><th></th><th>check</th>"
                f"<th>severity</th><th>result</th><th>why it matters for devices</th></tr>"
                f"{rows}</table></section>"
            )
    ids = ", ".join(sorted(set(run.devices.values())))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>otasim check — {esc(run.server)} — {verdict}</title>
<style>{_CSS}tr.warn td{{background:#fff8e6}}tr.skip td{{color:#667}}</style></head><body>
<header><h1>otasim check <span class="verdict {verdict.lower()}">{verdict}</span></h1>
<p class="meta">server {esc(run.server)} · app {esc(run.app_id)} · {esc(run.profile)}
· {esc(run.started_at)} · {run.wall_s:.1f} s · writes
{"allowed" if run.allow_writes else "none"}</p>
<p class="meta">verdict: {esc(summary)}</p></header>
<section class="cards">{cards}</section>
{"".join(sections)}
<p class="meta">A skipped check could not run with what was given (its reason says what it
needs): it is not a pass. Synthetic device ids used: {esc(ids) or "none"}.</p>
</body></html>
"""


_ROW = {"pass": "ok", "fail": "bad", "error": "bad", "warn": "warn", "skip": "skip"}


def dump_json(results: Sequence[Result], run: RunSummary) -> str:
    return json.dumps(to_json(results, run), indent=2) + "\n"
