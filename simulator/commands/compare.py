"""`otasim compare`: a run against a baseline run, exiting 1 on a regression."""

from __future__ import annotations

import argparse
from pathlib import Path

from simulator.commands import exit_codes
from simulator.errors import CommandError

DESCRIPTION = """\
Compare two runs' reports (folders written by `otasim run --report`, or their report.json):
adoption of each run's newest release 1, 6 and 24 h after its publication, update success,
rollbacks, unbootable, tampered and downgraded devices, stuck devices, failures per cause
(per device) and request latency per endpoint. Prints the table, writes it as HTML, and exits
1 when a figure regressed beyond its threshold. A figure either run could not measure is
`unknown`, never a regression."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from simulator.compare import Thresholds

    default = Thresholds()
    p = sub.add_parser(
        "compare",
        help="compare a run with a baseline run; exit 1 on a regression",
        description=DESCRIPTION,
        epilog="example:\n  otasim compare last-release/ otasim-report/ --max-adoption-drop 0.1\n\n"
        + exit_codes(
            (0, "no regression beyond the thresholds"),
            (1, "a figure regressed beyond its threshold"),
            (2, "usage error, or a folder holds no otasim report"),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("baseline", metavar="BASELINE_DIR", help="the baseline run's report folder")
    p.add_argument("run", metavar="RUN_DIR", help="the run's report folder")
    p.add_argument(
        "--html", metavar="FILE",
        help="where to write the comparison page (default: RUN_DIR/compare.html)",
    )  # fmt: skip
    for name, what in (
        ("adoption_drop", "adoption at a milestone may fall by (share)"),
        ("success_drop", "the update success rate may fall by"),
        ("rollback_rise", "the share of devices rolled back may rise by"),
        ("stuck_rise", "the share of stuck devices may rise by"),
        ("failure_rise", "failures of one cause per device may rise by"),
        ("latency_rise", "a latency percentile may grow by (1 = twice as slow)"),
        ("latency_floor_ms", "a latency growth below this many ms is never a regression"),
    ):
        p.add_argument(
            f"--{name.replace('_', '-')}" if name == "latency_floor_ms"
            else f"--max-{name.replace('_', '-')}", dest=name, type=_share_or_more, metavar="X",
            default=getattr(default, name), help=f"{what} (default {getattr(default, name):g})",
        )  # fmt: skip
    p.set_defaults(func=run, extra="sim")


def _share_or_more(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from simulator.compare import CompareError, Thresholds, compare, load, render_html, render_text

    base, run_dir = Path(args.baseline), Path(args.run)
    try:
        baseline, current = load(base), load(run_dir)
    except CompareError as exc:
        raise CommandError(str(exc)) from None
    limits = Thresholds(**{k: getattr(args, k) for k in Thresholds.__dataclass_fields__})
    rows = compare(baseline, current, limits)
    page = Path(args.html) if args.html else (run_dir if run_dir.is_dir() else run_dir.parent)
    page = page / "compare.html" if not args.html else page
    try:
        page.write_text(render_html(rows, base, run_dir), encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{page}: cannot write the page: {exc.strerror or exc}") from None
    print(render_text(rows, base, run_dir) + f"page: {page}", end="\n")
    return 1 if any(r.regressed for r in rows) else 0
