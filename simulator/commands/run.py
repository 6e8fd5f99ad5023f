"""`otasim run`: simulate a fleet through a scenario and write a report.

With no arguments: starts the embedded reference server (its own process), publishes the
scenario's releases as its timeline says, runs 1 000 devices through `steady-rollout` (24 h
of fleet life, on virtual time: as fast as the work allows) and writes ./otasim-report/.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from simulator.commands import EXIT_SERVER, exit_codes, positive_float, positive_int
from simulator.errors import CommandError

EPILOG = """\
examples:
  otasim run                                   # 1 000 devices, steady-rollout, embedded server
  otasim run --scenario bad-release-rollback --devices 200
  otasim run --scenario my-fleet.toml --seed 7 --report out/
  otasim run --server https://ota.example.com --public-key .capgo_key_v2.pub \\
             --app-id com.example.app            # your server: publishing is yours
  otasim run --updates-url https://ota.example.com/api/check --stats-url \\
             https://ota.example.com/api/stats --channel-url https://ota.example.com/api/channel \\
             --app-id com.example.app --plugin plugin-6 --expect-release 1.0.2=dist/

bundled scenarios: steady-rollout, staged-rollout, bad-release-rollback, server-outage,
flaky-network, mitm-tamper (docs/simulator.md says what each shows).
plugin profiles (--plugin): plugin-8 (default, 8.x: batched stats, answers sorted by `kind`),
plugin-7 and plugin-6 (one stats object per POST, `kind` not read); docs/agent.md.
Before the fleet starts, a pre-flight (seconds) checks that the report and work folders are
writable and that the server answers /updates like a Capgo server for this app, with a key
that opens what it offers; otherwise exit 2 with one line naming the problem.

""" + exit_codes(
    (
        0,
        "every expectation of the scenario holds (an unmeasurable one is `unknown`, neither "
        "a pass nor a miss)",
    ),
    (1, "an expectation missed, or with --baseline a figure regressed"),
    (2, "usage error, or the run cannot start (scenario, folders, embedded server set-up)"),
    (
        3,
        "the server unreachable, refusing, or not answering like a Capgo server for this app "
        "(pre-flight)",
    ),
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="simulate a fleet of devices through a scenario and write a report",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scenario", default="steady-rollout", metavar="NAME_OR_FILE",
        help="a bundled scenario name or a TOML file (default: steady-rollout)",
    )  # fmt: skip
    parser.add_argument("--devices", type=positive_int, help="fleet size (default: the scenario's)")
    parser.add_argument(
        "--time-scale", type=positive_float, metavar="N",
        help="cap on simulated seconds per real second, to watch a run live or to pace an "
             "external server (default: uncapped, simulated time advances by work)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="same seed, same fleet and decisions")
    parser.add_argument("--report", default="otasim-report", metavar="DIR",
                        help="where to write the report (default: ./otasim-report)")  # fmt: skip
    parser.add_argument(
        "--baseline", metavar="DIR",
        help="an earlier run's report folder: compare with it (as otasim compare, default "
             "thresholds) in the summary and report.html; exit 1 on a regression",
    )  # fmt: skip
    parser.add_argument(
        "--junit", metavar="FILE",
        help="also write the expectations as a JUnit XML file (one test case each) for CI; "
             "with --baseline, also one test case per compared figure (a regression fails)",
    )  # fmt: skip
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep device folders, server data and each device's event log (DIR/devices/"
        "NNNNNN.log: its agent's requests, events and stats in simulated time, at most "
        "20,000 lines) here; report.html's stuck devices link to those logs (default: "
        "a temp folder, removed)",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="an external Capgo-compatible server instead of the embedded one",
    )
    add_endpoint_options(parser)
    parser.add_argument(
        "--public-key",
        metavar="FILE",
        help="with --server: the app's public key (PEM or capacitor.config.json)",
    )
    parser.add_argument("--app-id", help="with --server: the app id (default: the scenario's)")
    parser.add_argument(
        "--expect-release", action="append", default=[], metavar="VERSION=DIR_OR_ZIP",
        help="with --server: the release VERSION as published (its dist folder or bundle zip), "
             "so that tampered and altered activations are checked (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--http",
        choices=("streams", "aiohttp", "httpx"),
        default="streams",
        help="HTTP backend of the devices (default: streams, measured cheapest per request)",
    )
    parser.add_argument(
        "--artefact-retries", type=int, metavar="N",
        help="re-downloads of a bundle that failed verification, within the window "
             "(default 3; never activated; docs/agent.md)",
    )  # fmt: skip
    parser.add_argument(
        "--artefact-retry-window-h", type=positive_float, metavar="H",
        help="the window of those retries, from the first failure (default 24)",
    )  # fmt: skip
    parser.add_argument("--processes", type=positive_int, default=1, metavar="N",
                        help="run the fleet in N processes, one event loop each (default 1); "
                             "for big fleets on several cores")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")
    parser.set_defaults(func=run_command, extra="sim")


def add_endpoint_options(parser: Any) -> None:
    """--dialect, --plugin and the three URLs of a plugin's config (run, loadtest and device
    init)."""
    from agent.protocol.profiles import DEFAULT_PROFILE, PLUGIN_PROFILES
    from agent.protocol.registry import DIALECTS

    parser.add_argument(
        "--dialect", choices=list(DIALECTS), default=None,
        help="the server protocol the devices speak (default: capgo, or a scenario's "
             "`dialect`); see docs/dialects.md",
    )  # fmt: skip

    parser.add_argument(
        "--plugin", choices=list(PLUGIN_PROFILES), default=DEFAULT_PROFILE,
        help="the @capgo/capacitor-updater generation the devices reproduce (default "
             f"{DEFAULT_PROFILE}); see docs/agent.md",
    )  # fmt: skip
    for name, option in (("updates", "updateUrl"), ("stats", "statsUrl"),
                         ("channel", "channelUrl")):  # fmt: skip
        parser.add_argument(
            f"--{name}-url", metavar="URL",
            help=f"the plugin's {option} (default: derived from the base URL, --server)",
        )  # fmt: skip


def parse_expected(pairs: list[str]) -> dict[str, Path]:
    """--expect-release VERSION=DIR_OR_ZIP pairs.

    Raises:
        CommandError: a pair without a version or a path that does not exist.
    """
    out = {}
    for pair in pairs:
        version, sep, path = pair.partition("=")
        if not sep or not version or not path:
            raise CommandError(f"--expect-release wants VERSION=DIR_OR_ZIP, got {pair!r}")
        if not Path(path).exists():
            raise CommandError(f"--expect-release {version}: {path} does not exist")
        out[version] = Path(path)
    return out


def run_command(args: argparse.Namespace) -> int:
    from agent.security.keys import PublicKeyError

    from simulator.errors import RunError
    from simulator.preflight import PreflightError, check_writable
    from simulator.report import write_junit
    from simulator.runner import RunOptions, simulate
    from simulator.scenario import ScenarioError
    from simulator.server.client import AdminError

    external = args.server or args.updates_url or args.stats_url or args.channel_url
    if (args.public_key or args.app_id or args.expect_release) and not external:
        raise CommandError("--public-key, --app-id and --expect-release go with --server")
    expected = parse_expected(args.expect_release)
    baseline = _baseline(args.baseline)
    try:
        if args.junit:
            check_writable([Path(args.junit).parent])
        options = RunOptions(
            scenario=args.scenario,
            devices=args.devices,
            time_scale=args.time_scale,
            seed=args.seed,
            report_dir=Path(args.report),
            workdir=Path(args.workdir) if args.workdir else None,
            server_url=args.server,
            updates_url=args.updates_url,
            stats_url=args.stats_url,
            channel_url=args.channel_url,
            plugin=args.plugin,
            dialect=args.dialect,
            expect_releases=expected,
            artefact_retries=args.artefact_retries,
            artefact_retry_window_s=(
                args.artefact_retry_window_h * 3600 if args.artefact_retry_window_h else None
            ),
            public_key_file=Path(args.public_key) if args.public_key else None,
            app_id=args.app_id,
            http_backend=args.http,
            progress=not args.no_progress,
            processes=args.processes,
            baseline=baseline,
        )
        report, page = simulate(options)
        if args.junit:
            write_junit(report, Path(args.junit))
    except (ScenarioError, RunError) as exc:
        raise CommandError(str(exc)) from None
    except PreflightError as exc:
        raise CommandError(f"pre-flight: {exc}", EXIT_SERVER if exc.server else 2) from None
    except PublicKeyError as exc:
        raise CommandError(f"--public-key {args.public_key}: {exc}") from None
    except AdminError as exc:
        raise CommandError(f"the server refused to set the run up: {exc}") from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or 'run'}: {exc.strerror or exc}") from None
    _summary(report, page)
    regressed = bool(report.get("comparison", {}).get("regressions"))
    return 0 if report["passed"] and not regressed else 1


def _baseline(folder: str | None) -> dict[str, Any] | None:
    """The --baseline report, read before the run (a wrong folder fails at once)."""
    if folder is None:
        return None
    from simulator.compare import CompareError, load

    try:
        return load(Path(folder))
    except CompareError as exc:
        raise CommandError(f"--baseline: {exc}") from None


def _summary(report: dict[str, Any], page: Any) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(soft_wrap=True)  # no newline inside a line: paths stay whole for copy-paste
    run, upd = report["run"], report["updates"]
    final = ", ".join(f"{v} {share:.1%}" for v, share in report["adoption"]["final"].items())
    console.print(
        f"[bold]{report['scenario']['name']}[/]: {run['devices']:,} devices, "
        f"{report['scenario']['duration_h']:g} h simulated in {run['wall_s']:.0f} s "
        f"({run['speedup']:,}×)"
    )
    console.print(f"  running at the end: {final}")
    tampered = upd["tampered_activated"]
    console.print(
        f"  updates: {upd['succeeded']:,}/{upd['attempted']:,} succeeded, "
        f"{upd['rollbacks']:,} rollbacks, {upd['unbootable']} unbootable, "
        f"{'unknown' if tampered is None else tampered} tampered activated"
    )
    stuck = report["stuck"]
    if stuck["target"]:
        why = ", ".join(f"{w} {n:,}" for w, n in list(stuck["why"].items())[:3])
        console.print(
            f"  stuck (not on {stuck['target']} at the end): {stuck['devices']:,}"
            + (f" — {why}" if why else "")
            + (f"; {upd['awaiting_relaunch']:,} crashed, awaiting relaunch"
               if upd["awaiting_relaunch"] else ""),
            highlight=False,
        )  # fmt: skip
    for finding in report["findings"]:
        text = escape(finding["text"])
        count = f": {finding['events']:,}" if finding["events"] else ""
        console.print(f"  [bold yellow]finding[/]: {text}{count}", highlight=False)
    for figure, reason in report["unknown"].items():
        console.print(f"  unknown: {figure.replace('_', ' ')}: {escape(reason)}", highlight=False)
    for r in report["expectations"]:
        mark = {True: "[green]✔[/]", False: "[red]✘[/]", None: "[yellow]?[/]"}[r["ok"]]
        unit = {"share": " (share of devices)", "ms": " ms"}.get(r["unit"], "")
        value = "unknown: " + r["reason"] if r["ok"] is None else f"measured {r['value']}{unit}"
        console.print(f"  {mark} {r['expect']}  ({value})")
    for note in run["notes"]:
        console.print(f"  note: {note}")
    comparison = report.get("comparison")
    if comparison is not None:
        regressions = comparison["regressions"]
        console.print(
            f"  against the baseline: {len(regressions)} regression(s)"
            + (": " + "; ".join(regressions) if regressions else ""),
            highlight=False,
        )
    verdict = "[green]passed[/]" if report["passed"] else "[red]FAILED[/]"
    console.print(f"{verdict} · report: {page}")
