"""The run report: report.json (schema in docs/simulator.md), devices.csv, timeline.csv and a
self-contained report.html whose charts are matplotlib SVG inlined in the page.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from simulator.metrics import BUILTIN, CRASHED, METRICS, Metrics
from simulator.results import MILESTONES_H, DeviceRecord, breakdowns, records, target_version
from simulator.scenario import Scenario

SCHEMA = "otasim.report/1"


@dataclass(frozen=True)
class RunInfo:
    """How the run was set up, and what only the fleet knows (publication times, server)."""

    scenario: Scenario
    devices: int
    seed: int
    time_scale: float | None  # the cap, None when uncapped
    server_url: str
    embedded: bool
    started_at: str
    wall_s: float
    published_s: dict[str, float]  # version -> simulated time it was published
    server_received: int | None  # stats events the server recorded (None: not our server)
    notes: tuple[str, ...] = ()
    plugin: str = "plugin-8"  # the plugin profile the devices reproduced
    dialects: dict[str, int] = field(default_factory=dict)  # dialect spoken -> devices
    expected_versions: tuple[str, ...] = ()  # releases given with --expect-release
    server_findings: tuple[str, ...] = ()  # found before the run (pre-flight)
    wall: dict[str, object] | None = None  # where the wall time went (fleet, server CPU)
    device_logs: Path | None = None  # --workdir's devices/ (absolute): every event log there


def _dialects_line(run: dict[str, Any]) -> str:
    """What the devices spoke: the Capgo plugin generation, or each dialect and its share."""
    dialects = run.get("dialects") or {"capgo": run["devices"]}
    if set(dialects) == {"capgo"}:
        return str(run["plugin"])
    return " + ".join(f"{n} {name}" for name, n in dialects.items())


def unknowns(metrics: Metrics, info: RunInfo, stats_missing: int | None) -> dict[str, str]:
    """Figures this run cannot measure against this server: {figure: why}. `stats_missing`:
    events sent minus events the server recorded (None: its records are not readable)."""
    out = {}
    unchecked = metrics.unchecked_versions()
    if unchecked:
        out["tampered_activated"] = (
            f"devices booted {', '.join(unchecked)} but the published files of "
            f"{'that release' if len(unchecked) == 1 else 'those releases'} are not known here: "
            "give --expect-release VERSION=DIR_OR_ZIP"
        )
    if stats_missing is None:
        out["stats_lost"] = (
            "the server's own records cannot be read from here (only the embedded server's can)"
        )
    elif stats_missing < 0:  # repeats: a loss would hide among them
        out["stats_lost"] = (
            f"the server recorded {-stats_missing:,} more stats events than the devices sent: a "
            "batch sent again because its answer came too late is recorded twice, so lost "
            "events cannot be told from repeated ones"
        )
    return out


def findings(metrics: Metrics, info: RunInfo) -> list[dict[str, Any]]:
    """Findings about the server: what it did, and how many device reports it caused (none
    for what the pre-flight found)."""
    out = [
        {"about": "server", "text": text, "events": n}
        for text, n in sorted(metrics.findings.items(), key=_by_count)
    ]
    out += [{"about": "server", "text": text, "events": 0} for text in info.server_findings]
    if metrics.stats_unconfirmed:
        out.append(
            {
                "about": "server",
                "text": "your server answered stats batches (JSON arrays, as plugin 8 sends "
                "them) without per-event `results`: it may read one object per POST and lose "
                "the events; check what it stored, or run with --plugin plugin-6/plugin-7 "
                "(stats events sent in such batches)",
                "events": metrics.stats_unconfirmed,
            }
        )
    if info.embedded:  # our own server: its outages are the scenario's, not findings
        return out
    injected = sum(n for kind, n in metrics.faults.items() if kind != "disk_full")  # network's
    for name, counts in metrics.refusals().items():
        total = counts["requests"]
        bad = {s: n for s, n in counts.items() if s != "requests"}
        statuses = ", ".join(f"{_STATUS.get(s, s)}: {n}" for s, n in bad.items())
        text = (
            f"your server refused or failed {sum(bad.values()):,} of {total:,} {name} requests "
            f"({statuses})"
        )
        if injected:
            text += f"; the scenario's network injected {injected:,} faults, counted in these"
        out.append({"about": "server", "text": text, "events": sum(bad.values())})
    return out


def device_records(metrics: Metrics, info: RunInfo) -> list[DeviceRecord]:
    """Every device's end record (`simulator.results`): what report.json, devices.csv,
    timeline.csv and report.html are all derived from."""
    target = target_version([*info.published_s, *metrics.first_offered])
    return records(metrics.devices, info.scenario.duration_s, target)


STUCK_ROWS = 200  # the stuck devices listed (and logged) in the HTML; all are in devices.csv


def build_report(metrics: Metrics, info: RunInfo) -> dict[str, Any]:
    """The report.json document (see docs/simulator.md for every field)."""
    sc, rows = info.scenario, device_records(metrics, info)
    queued = sum(r.device.stats_queued for r in rows)
    pending = sum(r.device.stats_pending for r in rows)
    missing = None if info.server_received is None else queued - pending - info.server_received
    unknown = unknowns(metrics, info, missing)
    lost = None if "stats_lost" in unknown else missing
    results = []
    for e in sc.expectations:
        value = metrics.evaluate(e, sc.duration_s, lost)
        result: dict[str, Any] = {
            "expect": e.describe(), "value": _num(value), "unit": METRICS[e.metric].unit,
        }  # fmt: skip
        if math.isnan(value):  # not measurable in this run: unknown, with the reason
            result.update(ok=None, reason=unknown.get(e.metric, "not measurable in this run"))
        else:
            result["ok"] = value >= e.min if e.min is not None else value <= (e.max or 0.0)
        results.append(result)
    attempted, succeeded, rate = metrics.success()
    finals = Counter(r.final_version for r in rows)
    failures: Counter[str] = Counter()
    for r in rows:
        failures.update(r.failures)
    target = target_version([*info.published_s, *metrics.first_offered])
    stuck = [r for r in rows if r.stuck]
    tampered = sum(r.device.tampered > 0 for r in rows)
    return {
        "schema": SCHEMA,
        "scenario": {
            "name": sc.name,
            "description": sc.description,
            "source": sc.source,
            "duration_h": sc.duration_s / 3600,
        },
        "run": {
            "devices": info.devices,
            "seed": info.seed,
            "time_scale": info.time_scale,
            "server": info.server_url,
            "embedded_server": info.embedded,
            "started_at": info.started_at,
            "wall_s": round(info.wall_s, 2),
            "speedup": round(sc.duration_s / info.wall_s, 1) if info.wall_s else None,
            "wall": info.wall or {},
            "plugin": info.plugin,
            "dialects": dict(sorted(info.dialects.items())),
            "expected_releases": list(info.expected_versions),
            "notes": list(info.notes),
        },
        "findings": findings(metrics, info),
        "unknown": unknown,
        "passed": all(r["ok"] is not False for r in results),
        "expectations": results,
        "adoption": {
            "final": {
                v: round(finals[v] / len(rows), 4) if rows else 0.0 for v in metrics.versions()
            },
            "target": target,
            "milestones": _milestones(metrics, info.published_s, sc.duration_s),
            "time_to_adoption_h": _time_to_adoption(metrics, info.published_s),
        },
        "states": dict(sorted(Counter(r.state for r in rows).items(), key=_by_count)),
        "updates": {
            "attempted": attempted,
            "succeeded": succeeded,
            "success_rate": rate,
            "rollbacks": sum(r.rollbacks for r in rows),
            "devices_rolled_back": sum(bool(r.rollbacks) for r in rows),
            "tampered_activated": None if "tampered_activated" in unknown else tampered,
            "unbootable": sum(r.device.unbootable for r in rows),
            "crashes": sum(r.crashes for r in rows),
            "awaiting_relaunch": finals[CRASHED],
            "downgraded": sum(d.downgraded() for d in metrics.devices),
        },
        "failures": dict(sorted(failures.items(), key=_by_count)),
        "stuck": {
            "target": target,
            "devices": len(stuck),
            "why": dict(sorted(Counter(_why_kind(r.stuck) for r in stuck).items(), key=_by_count)),
            "listed": [
                {
                    "index": r.device.index,
                    "device_id": r.device.device_id,
                    "last_version": r.last_booted,
                    "state": r.state,
                    "why": r.stuck,
                    "log": _log_path(info, r.device.index),
                }
                for r in stuck[:STUCK_ROWS]
            ],
        },
        "breakdowns": breakdowns(rows, target),
        "stats": {
            "queued": queued,
            "pending": pending,
            "sent": queued - pending,
            "server_received": info.server_received,
            "lost": lost,
            "unconfirmed": metrics.stats_unconfirmed,
            "by_action": dict(sorted(metrics.actions.items(), key=_by_count)),
        },
        "bytes": {
            "full": metrics.bytes["full"],
            "delta": metrics.bytes["delta"],
            "total": sum(metrics.bytes.values()),
        },
        "requests": metrics.latency_summary(),
        "faults": _faults(metrics),
        "mitm": dict(sorted(metrics.mitm.items())),
        "timeline": metrics.steps,
    }


def _why_kind(why: str) -> str:
    """A stuck reason without its particulars (`failed verification (...)` -> `failed
    verification`), to count them."""
    return why.split(" (")[0].split(":")[0].split(" of ")[0].split(" from ")[0]


def _milestones(
    metrics: Metrics, published_s: Mapping[str, float], end_s: float
) -> dict[str, dict[str, Any]]:
    """Per version published by this run: the share of the fleet running it 1 h, 6 h and
    24 h after its publication (null past the run's end), and the hours until half and 90 %
    of the fleet had started it once."""
    out = {}
    n = len(metrics.devices)
    for version, t0 in sorted(published_s.items()):
        row: dict[str, Any] = {}
        for h in MILESTONES_H:
            at = t0 + h * 3600
            row[f"{h}h"] = round(metrics.adoption(version, at), 4) if at <= end_s else None
        firsts = sorted(
            next(t for t, v in d.running if v == version)
            for d in metrics.devices
            if any(v == version for _, v in d.running)
        )
        for name, share in (("half_fleet_h", 0.5), ("most_fleet_h", 0.9)):
            k = math.ceil(share * n)
            row[name] = round((firsts[k - 1] - t0) / 3600, 3) if n and len(firsts) >= k else None
        out[version] = row
    return out


def _faults(metrics: Metrics) -> dict[str, int]:
    """Faults injected by kind; with a disk-full share, also how many devices it holds."""
    faults = dict(metrics.faults)
    full = sum(d.disk_full for d in metrics.devices)
    if full:
        faults["disk_full_devices"] = full
    return dict(sorted(faults.items()))


def _time_to_adoption(
    metrics: Metrics, published_s: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """Per version: hours from publication (when this run published it) or else from the
    first download a device started (the devices' own observation, on any server)."""
    out = {}
    for version in sorted({*published_s, *metrics.first_offered}):
        if version in published_s:
            since, t = "published", published_s[version]
        else:
            since, t = "first_download_started", metrics.first_offered[version]
        out[version] = {"since": since, **metrics.time_to_adoption(version, t)}
    return out


def write_report(report: dict[str, Any], metrics: Metrics, info: RunInfo, out: Path) -> Path:
    """Write report.json, devices.csv, timeline.csv, report.html and the stuck devices' logs
    (devices/NNNNNN.log) into `out`, all from the same device records; return the html.

    Raises:
        OSError: `out` cannot be created or written.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    curve = metrics.curve(info.scenario.duration_s)
    _write_csv(out / "timeline.csv", curve)
    _write_csv(out / "devices.csv", [r.csv_row() for r in device_records(metrics, info)])
    listed = set() if info.device_logs else {row["index"] for row in report["stuck"]["listed"]}
    if listed:
        (out / "devices").mkdir(exist_ok=True)
    for d in metrics.devices:
        if d.index in listed:
            (out / "devices" / f"{d.index:06d}.log").write_text(_device_log(d), encoding="utf-8")
    page = out / "report.html"
    page.write_text(render_html(report, curve), encoding="utf-8")
    return page


def write_junit(report: dict[str, Any], path: Path) -> None:
    """The expectations as a JUnit XML file for CI: one test case each, a `failure` for a
    missed one, `skipped` for one this run could not measure (unknown: neither pass nor miss).
    With a baseline (`--baseline`), a second suite: one test case per compared figure, a
    `failure` for a regression, `skipped` when unknown.

    Raises:
        OSError: `path` cannot be written.
    """
    import xml.etree.ElementTree as ET

    name = f"otasim.{report['scenario']['name']}"
    suites = [(name, "expectation", [
        (r["expect"], r["ok"], f"measured {_shown(r['value'])} ({r['unit']})", r.get("reason"))
        for r in report["expectations"]
    ])]  # fmt: skip
    comparison = report.get("comparison")
    if comparison is not None:
        suites.append((f"{name}.baseline", "regression", [
            (r["figure"], {"ok": True, "REGRESSED": False}.get(r["verdict"]),
             f"baseline {_shown(r['baseline'])}, run {_shown(r['run'])}; a regression when "
             f"it {r['limit']}", "not measured in one of the runs")
            for r in comparison["rows"]
        ]))  # fmt: skip
    root = ET.Element("testsuites")
    for suite_name, kind, cases in suites:
        suite = ET.SubElement(
            root, "testsuite", name=suite_name, tests=str(len(cases)),
            failures=str(sum(ok is False for _, ok, _, _ in cases)),
            skipped=str(sum(ok is None for _, ok, _, _ in cases)), errors="0",
            time=str(report["run"]["wall_s"]), timestamp=report["run"]["started_at"],
        )  # fmt: skip
        for case_name, ok, measured, unknown in cases:
            case = ET.SubElement(suite, "testcase", classname=suite_name, name=case_name, time="0")
            if ok is False:
                ET.SubElement(
                    case, "failure", message=measured, type=kind
                ).text = f"{case_name}: {measured}"
            elif ok is None:
                ET.SubElement(case, "skipped", message=f"unknown: {unknown}")
            else:
                ET.SubElement(case, "system-out").text = measured
    tree = ET.ElementTree(root)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _log_path(info: RunInfo, index: int) -> str:
    """Where a listed stuck device's log is: its event log in --workdir (an absolute path),
    else the run's summary of it, written into the report folder (relative to it)."""
    if info.device_logs is not None:
        return str(info.device_logs / f"{index:06d}.log")
    return f"devices/{index:06d}.log"


def _href(log: str) -> str:
    """A link to a log: relative to the report folder, or a file: URI for --workdir's."""
    path = Path(log)
    return path.as_uri() if path.is_absolute() else log


def _device_log(d: Any) -> str:
    """One device's life as the run saw it, in simulated time order."""
    events = [(t, f"runs {v}" if v != CRASHED else "the app crashed on boot") for t, v in d.running]
    events += [(t, f"failure {a}" + (f" ({v})" if v else "")) for t, a, v in d.failure_log]
    events += [(t, f"rolled back from {v}") for t, v in d.rollbacks]
    lines = [
        f"device {d.index} {d.device_id}: {d.platform} {d.os}, network {d.network}, "
        f"behaviour {d.behaviour}, channel {d.channel}"
        + (f", behind a man in the middle ({d.mitm})" if d.mitm else "")
        + (", disk full for a while" if d.disk_full else ""),
        f"requests {d.requests:,} ({d.unanswered:,} unanswered), downloads started "
        + (", ".join(f"{v}: {n}" for v, n in sorted(d.download_starts.items())) or "none")
        + ", completed "
        + (", ".join(f"{v}: {n}" for v, n in sorted(d.downloads.items())) or "none"),
        "",
        *(f"{t / 3600:9.3f} h  {what}" for t, what in sorted(events)),
    ]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval=0)
        writer.writeheader()
        writer.writerows(rows)


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def render_html(report: dict[str, Any], curve: list[dict[str, float]]) -> str:
    """The self-contained page: summary cards, expectations, charts, request table."""
    esc = html.escape
    run, upd, st = report["run"], report["updates"], report["stats"]
    adoption = report["adoption"]["final"]
    newest = next((v for v in reversed(list(adoption)) if v != BUILTIN), None)
    cards = [  # (label, figure)
        ("devices", f"{run['devices']:,}"),
        (f"on {newest}" if newest else "adoption", f"{adoption.get(newest, 0):.1%}"),
        ("update success (device × version)", f"{upd['success_rate']:.1%}"),
        ("rollbacks", f"{upd['rollbacks']:,}"),
        ("unbootable", f"{upd['unbootable']:,}"),
        ("crashed, awaiting relaunch", f"{upd['awaiting_relaunch']:,}"),
        (f"stuck (not on {report['stuck']['target']})", f"{report['stuck']['devices']:,}")
        if report["stuck"]["target"]
        else ("stuck", "n/a"),
        ("tampered activated", _shown(upd["tampered_activated"])),
        ("stats lost", _shown(st["lost"])),
        ("downloaded", _size(report["bytes"]["total"])),
        ("simulated time per real time", f"{run['speedup']:,}×" if run["speedup"] else "n/a"),
    ]
    expectations = "".join(
        f"<tr class={_VERDICT[r['ok']][0]}><td>{_VERDICT[r['ok']][1]}</td>"
        f"<td>{esc(r['expect'])}</td><td>{_shown(r['value'])} {esc(_UNIT[r['unit']])}"
        + (f" — {esc(r['reason'])}" if r.get("reason") else "")
        + "</td></tr>"
        for r in report["expectations"]
    )
    found = "".join(
        f"<li>{esc(f['text'])}" + (f": <b>{f['events']:,}</b>" if f["events"] else "") + "</li>"
        for f in report["findings"]
    )
    unknown = "".join(
        f"<li><b>{esc(k.replace('_', ' '))}</b>: unknown — {esc(v)}</li>"
        for k, v in report["unknown"].items()
    )
    requests = "".join(
        f"<tr><td>{esc(name)}</td><td>{r['count']:,}</td><td>{r['errors']:,}</td>"
        + "".join(f"<td>{r['latency_ms'].get(k, '')}</td>" for k in ("p50", "p90", "p99", "max"))
        + f"<td>{esc(', '.join(f'{_STATUS.get(s, s)}: {n}' for s, n in r['status'].items()))}</td>"
        + "</tr>"
        for name, r in report["requests"].items()
    )
    verdict = "passed" if report["passed"] else "FAILED"
    sc = report["scenario"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>otasim — {esc(sc["name"])} — {verdict}</title>
<style>{_CSS}</style></head><body>
<header><h1>{esc(sc["name"])} <span class="verdict {verdict.lower()}">{verdict}</span></h1>
<p>{esc(sc["description"])}</p>
<p class="meta">{run["devices"]:,} devices · {sc["duration_h"]:g} h simulated in {run["wall_s"]} s
· seed {run["seed"]} · {esc(_dialects_line(run))} devices · server {esc(run["server"])}
· {esc(run["started_at"])}
· {esc(_wall_line(run))}</p>{_notes_html(run["notes"])}</header>
<section class="cards">{"".join(f"<div><b>{v}</b><span>{esc(k)}</span></div>" for k, v in cards)}
</section>
{
        f'<section><h2>Findings about the server</h2><ul class="findings">{found}</ul></section>'
        if found
        else ""
    }
{
        f"<section><h2>Not measurable against this server</h2><ul>{unknown}</ul></section>"
        if unknown
        else ""
    }
<section><h2>Expectations</h2><table><tr><th></th><th>expectation</th><th>measured</th></tr>
{expectations or "<tr><td></td><td>none</td><td></td></tr>"}</table></section>
<section><h2>Adoption</h2>{adoption_chart(curve, report["timeline"])}
<p class="meta">{esc(_adoption_note(report))}</p>{_milestones_html(report)}</section>
{_comparison_html(report.get("comparison"))}
{_stuck_html(report)}
<section><h2>By platform, OS, network, channel, dialect and fault group</h2>
{breakdown_chart(report["breakdowns"], report["adoption"]["target"])}
{_breakdowns_html(report["breakdowns"], report["adoption"]["target"])}</section>
<section class="pair"><div><h2>Failures</h2>{failures_chart(report["failures"], curve)}</div>
<div><h2>Request latency</h2>{latency_chart(report["requests"])}</div></section>
{_faults_html(report)}
<section><h2>Requests</h2><table><tr><th>endpoint</th><th>count</th><th>errors</th>
<th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>statuses</th></tr>{requests}</table>
<p class="meta">errors: requests with no answer (network loss, reset, timeout, offline) or a 5xx;
the agent retries them, so they are not update failures by themselves. Latencies are real
milliseconds of the exchanges on this machine (the modelled network delays are in simulated
time, not here).</p>
<p class="meta">Also in this folder: report.json, devices.csv (one row per device),
timeline.csv (adoption per version over time).</p></section>
</body></html>
"""


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    """An HTML table; cells are escaped unless given as `Markup`."""

    def cell(v: object) -> str:
        if isinstance(v, Markup):
            return str(v)
        return html.escape("—" if v is None else f"{v:,}" if isinstance(v, int) else str(v))

    top = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{top}</tr>{body}</table>'


class Markup(str):
    """HTML already escaped (a link)."""


def _pct(share: float | None) -> str | None:
    return None if share is None else f"{share:.1%}"


def _milestones_html(report: dict[str, Any]) -> str:
    """Adoption milestones and time-to-adoption percentiles per version."""
    ad = report["adoption"]
    rows = []
    for version, m in ad["milestones"].items():
        tta = ad["time_to_adoption_h"].get(version, {})
        rows.append(
            [version, *(_pct(m[f"{h}h"]) for h in MILESTONES_H),
             m["half_fleet_h"], m["most_fleet_h"],
             *(tta.get(q) for q in ("p50", "p90", "p99")), tta.get("devices")]
        )  # fmt: skip
    if not rows:
        return ""
    head = ["version", *(f"running it {h} h after publication" for h in MILESTONES_H),
            "h until 50 % had started it", "h until 90 %",
            "time to adoption p50 h", "p90 h", "p99 h", "devices adopted"]  # fmt: skip
    return (
        "<h3>Milestones</h3>"
        + _table(head, rows)
        + (
            '<p class="meta">Hours from publication; — : not reached, or past the end of the run. '
            "Time to adoption: over the devices that ran the version at all.</p>"
        )
    )


def _comparison_html(comparison: dict[str, Any] | None) -> str:
    """The run against its baseline (`--baseline`): regressions first."""
    if comparison is None:
        return ""
    first = {"REGRESSED": 0, "ok": 1, "unknown": 2}
    rows = sorted(comparison["rows"], key=lambda r: first[r["verdict"]])
    n = len(comparison["regressions"])
    head = f"{n} regression(s)" if n else "no regression"
    table = _table(
        ["", "figure", "baseline", "this run", "regression when"],
        [[r["verdict"], r["figure"], r["baseline"], r["run"], r["limit"]] for r in rows],
    )
    return (
        f"<section><h2>Compared with the baseline: {head}</h2>"
        f'<p class="meta">baseline: {html.escape(comparison["baseline"])}</p>{table}</section>'
    )


def _stuck_html(report: dict[str, Any]) -> str:
    """Who is stuck (not running the newest release at the end) and why, with their logs."""
    stuck = report["stuck"]
    if not stuck["target"]:
        return ""
    states = ", ".join(f"{s}: {n:,}" for s, n in report["states"].items())
    if not stuck["devices"]:
        return (
            f"<section><h2>Stuck devices</h2><p>None: every device runs "
            f"{html.escape(stuck['target'])} ({html.escape(states)}).</p></section>"
        )
    why = _table(["why", "devices"], list(stuck["why"].items()))
    rows = [
        [r["index"], r["device_id"], r["last_version"], r["state"], r["why"],
         Markup(f'<a href="{html.escape(_href(r["log"]))}">log</a>')]
        for r in stuck["listed"]
    ]  # fmt: skip
    more = stuck["devices"] - len(rows)
    return (
        f"<section><h2>Stuck devices: {stuck['devices']:,} not running "
        f"{html.escape(stuck['target'])} at the end</h2>"
        f'<p class="meta">End states: {html.escape(states)}.</p>{why}'
        + _table(["#", "device", "last version booted", "state", "why", "event log"], rows)
        + (f'<p class="meta">and {more:,} more: devices.csv has every device.</p>' if more else "")
        + "</section>"
    )


def _breakdowns_html(breakdowns: dict[str, list[dict[str, Any]]], target: str | None) -> str:
    head = ["", "value", "devices", f"on {target or 'the newest release'}",
            "rolled back", "failed", "crashed", "stuck"]  # fmt: skip
    rows = [
        [dim.replace("_", " "), r["value"], r["devices"], _pct(r["on_target"]),
         r["rolled_back"], r["failed"], r["crashed"], r["stuck"]]
        for dim, values in breakdowns.items()
        for r in values
    ]  # fmt: skip
    return _table(head, rows) + (
        '<p class="meta">Devices per value; rolled back, failed, crashed and stuck count '
        "devices (a device that failed twice counts once).</p>"
    )


def _faults_html(report: dict[str, Any]) -> str:
    """The faults the scenario injected and what the man in the middle did."""
    rows = [[f"network / disk: {k}", n] for k, n in report["faults"].items()]
    rows += [[f"man in the middle: {k}", n] for k, n in report["mitm"].items()]
    if not rows:
        return ""
    return "<section><h2>Faults injected</h2>" + _table(["fault", "count"], rows) + "</section>"


def _wall_line(run: dict[str, Any]) -> str:
    """Where the wall time went: the fleet's and the server's CPU seconds."""
    wall = run.get("wall") or {}
    parts = [f"fleet CPU {wall['fleet_cpu_s']:g} s ({wall['fleet_system_s']:g} s in the kernel:"
             " disk and sockets)"] if "fleet_cpu_s" in wall else []  # fmt: skip
    if wall.get("server_cpu_s") is not None:
        parts.append(f"server CPU {wall['server_cpu_s']:g} s")
    cap = run["time_scale"]
    parts.append(f"time capped at {cap:g}×" if cap else "time uncapped")
    return " · ".join(parts)


def _notes_html(notes: list[str]) -> str:
    """The fidelity notes: what this run could not keep faithful (never silently)."""
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return f'<ul class="notes">{items}</ul>'


def _adoption_note(report: dict[str, Any]) -> str:
    """How to read the adoption curve's time axis (no time of day; real network time)."""
    note = (
        "Share of devices running each version over hours of simulated fleet life since the "
        "start of the run (dashed lines: the scenario's timeline). The simulated clock has no "
        "time of day (no night): users open the app at random times around the clock, as often "
        "as the scenario's behaviours say."
    )
    return note


_STATUS = {"error": "no answer"}
_UNIT = {"share": "(share of devices, 0 to 1)", "count": "", "ms": "ms"}


def _shown(value: int | float | None) -> str:
    """A figure for the page: `unknown` when it could not be measured."""
    return "unknown" if value is None else f"{value:,}"


_VERDICT = {True: ("ok", "✔"), False: ("bad", "✘"), None: ("unknown", "?")}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:24px;color:#1d2430}
h1{margin:0 0 4px}h2{font-size:18px;margin:24px 0 8px}.meta{color:#667;font-size:13px}
.verdict{font-size:15px;padding:3px 10px;border-radius:12px;vertical-align:middle}
.verdict.passed{background:#d8f3dc;color:#1b5e20}.verdict.failed{background:#ffd6d6;color:#9b1c1c}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.cards div{background:#f4f6fa;border-radius:8px;padding:10px 12px}
.cards b{display:block;font-size:22px}.cards span{color:#556;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:14px}
td,th{border-bottom:1px solid #e3e6ec;padding:5px 8px;text-align:left}
tr.ok td:first-child{color:#1b7e2b}tr.unknown td:first-child{color:#a16207}
.findings li{margin:4px 0}tr.bad td{background:#fff1f1}tr.bad td:first-child{color:#b00}
svg{max-width:100%;height:auto}
.empty{background:#f4f6fa;border-radius:8px;padding:28px 16px;color:#334;text-align:center}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:16px}
"""


# -- charts: matplotlib figures rendered to inline SVG (text kept as text) -----------------

PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#db2777", "#7c3aed", "#0891b2", "#94a3b8"]


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        yield Figure(figsize=(width, height), layout="constrained")


def _empty(message: str) -> str:
    """What a chart shows when it has no data: a sentence, not empty axes."""
    return f'<p class="empty">{html.escape(message)}</p>'


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def adoption_chart(curve: list[dict[str, float]], steps: list[dict[str, Any]]) -> str:
    """Stacked share of devices per running version over simulated hours, steps marked."""
    hours = [row["t_h"] for row in curve]
    skip = {"t_h", "failures", "rollbacks"}
    versions = [k for k in (curve[0] if curve else {}) if k not in skip]
    if not versions:
        return _empty("No adoption data: the run recorded no device.")
    with _figure(10, 3.6) as fig:
        ax = fig.subplots()
        special = {BUILTIN: "#cbd5e1", CRASHED: "#ef4444"}
        colors = [special.get(v, PALETTE[i % 6]) for i, v in enumerate(versions)]
        ax.stackplot(
            hours,
            *[[100 * row[v] for row in curve] for v in versions],
            labels=versions,
            colors=colors,
            alpha=0.9,
        )
        for step in steps:
            ax.axvline(step["at_h"], color="#334155", lw=0.8, ls="--")
            ax.annotate(
                step["label"],
                (step["at_h"], 98),
                xytext=(3, 0),
                rotation=90,
                textcoords="offset points",
                fontsize=8,
                va="top",
                color="#0f172a",
            )
        ax.set(
            xlim=(0, hours[-1] if hours else 1),
            ylim=(0, 100),
            xlabel="simulated hours since the start",
            ylabel="% of devices running",
        )
        ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), frameon=False, title="version")
        return _svg(fig)


def failures_chart(failures: dict[str, int], curve: list[dict[str, float]]) -> str:
    """Failures by Capgo stats action, and cumulative failures/rollbacks over time; a
    message instead of empty axes when no device reported a failure."""
    if not failures:
        return _empty("No failures: no device reported a failed download, verification or boot.")
    with _figure(5.2, 3.6) as fig:
        bars, line = fig.subplots(2, 1, height_ratios=[3, 2])
        names = list(failures)[:8][::-1]
        bars.barh(names, [failures[n] for n in names], color="#dc2626")
        bars.set_xlabel("devices' failure reports (Capgo stats action)")
        hours = [row["t_h"] for row in curve]
        line.plot(
            hours, [row["failures"] for row in curve], color="#dc2626", label="failure reports"
        )
        line.plot(hours, [row["rollbacks"] for row in curve], color="#7c3aed", label="rollbacks")
        line.set(xlabel="simulated hours since the start", ylabel="cumulative count")
        line.legend(frameon=False, fontsize=8)
        return _svg(fig)


def latency_chart(requests: dict[str, dict[str, Any]]) -> str:
    """p50 / p90 / p99 latency per endpoint (real milliseconds)."""
    names = [n for n, r in requests.items() if r["latency_ms"]]
    if not names:
        return _empty("No requests were answered: no latency to show.")
    with _figure(5.2, 3.6) as fig:
        ax = fig.subplots()
        height = 0.26
        for k, (q, color) in enumerate(zip(("p50", "p90", "p99"), PALETTE, strict=False)):
            ys = [i + (k - 1) * height for i in range(len(names))]
            ax.barh(ys, [requests[n]["latency_ms"][q] for n in names], height, label=q, color=color)
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xscale("log")  # one slow p99 must not flatten every other bar
        ax.set_xlabel("milliseconds (real time, log scale)")
        ax.legend(frameon=False, fontsize=8)
        return _svg(fig)


def breakdown_chart(breakdowns: dict[str, list[dict[str, Any]]], target: str | None) -> str:
    """Small multiples: per dimension, the share of each value's devices on the target."""
    dims = [d for d, values in breakdowns.items() if values]
    if not target or not dims:
        return _empty("No release was published or offered: nothing to break down.")
    with _figure(10, 2.4) as fig:
        axes = fig.subplots(1, len(dims), squeeze=False)[0]
        for ax, dim in zip(axes, dims, strict=True):
            values = breakdowns[dim][:8]
            ax.barh([str(v["value"]) for v in values],
                    [100 * v["on_target"] for v in values], color=PALETTE[0])  # fmt: skip
            ax.set(xlim=(0, 100), title=dim.replace("_", " "))
            ax.invert_yaxis()
        axes[0].set_xlabel(f"% on {target}")
        return _svg(fig)
