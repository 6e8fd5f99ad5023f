"""`otasim run`: simulate a fleet through a scenario and write a report.

With no arguments: starts the embedded reference server (its own process), publishes the
scenario's releases as its timeline says, runs 1 000 devices through `steady-rollout` (24 h
of fleet life, on virtual time: as fast as the work allows) and writes ./otasim-report/.
"""

from __future__ import annotations

import argparse
from typing import Any

from simulator.errors import CommandError

EPILOG = """\
examples:
  otasim run                                   # 1 000 devices, steady-rollout, embedded server
  otasim run --scenario bad-release-rollback --devices 200
  otasim run --scenario my-fleet.toml --seed 7 --report out/
  otasim run --server https://ota.example.com --public-key .capgo_key_v2.pub \\
             --app-id com.example.app            # your server: publishing is yours

bundled scenarios: steady-rollout, staged-rollout, bad-release-rollback, server-outage,
flaky-network, mitm-tamper (docs/simulator.md says what each shows).
exit status: 0 when every expectation of the scenario holds, 1 when one is missed, 2 on errors.
"""


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
    parser.add_argument(
        "--devices", type=_positive_int, help="fleet size (default: the scenario's)"
    )
    parser.add_argument(
        "--time-scale", type=_positive_float, metavar="N",
        help="cap on simulated seconds per real second, to watch a run live or to pace an "
             "external server (default: uncapped, simulated time advances by work)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="same seed, same fleet and decisions")
    parser.add_argument("--report", default="otasim-report", metavar="DIR",
                        help="where to write the report (default: ./otasim-report)")  # fmt: skip
    parser.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep device folders and server data here (default: a temp folder)",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="an external Capgo-compatible server instead of the embedded one",
    )
    parser.add_argument(
        "--public-key",
        metavar="FILE",
        help="with --server: the app's public key (PEM or capacitor.config.json)",
    )
    parser.add_argument("--app-id", help="with --server: the app id (default: the scenario's)")
    parser.add_argument(
        "--http",
        choices=("aiohttp", "httpx"),
        default="aiohttp",
        help="HTTP backend of the devices (default: aiohttp, measured faster)",
    )
    parser.add_argument("--processes", type=_positive_int, default=1, metavar="N",
                        help="run the fleet in N processes, one event loop each (default 1); "
                             "for big fleets on several cores")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no live progress display")
    parser.set_defaults(func=run_command, extra="sim")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def run_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from simulator.errors import RunError
    from simulator.runner import RunOptions, simulate
    from simulator.scenario import ScenarioError
    from simulator.server.client import AdminError

    if (args.public_key or args.app_id) and not args.server:
        raise CommandError("--public-key and --app-id go with --server")
    try:
        options = RunOptions(
            scenario=args.scenario,
            devices=args.devices,
            time_scale=args.time_scale,
            seed=args.seed,
            report_dir=Path(args.report),
            workdir=Path(args.workdir) if args.workdir else None,
            server_url=args.server,
            public_key_file=Path(args.public_key) if args.public_key else None,
            app_id=args.app_id,
            http_backend=args.http,
            progress=not args.no_progress,
            processes=args.processes,
        )
        report, page = simulate(options)
    except (ScenarioError, RunError) as exc:
        raise CommandError(str(exc)) from None
    except AdminError as exc:
        raise CommandError(f"the server refused to set the run up: {exc}") from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or 'run'}: {exc.strerror or exc}") from None
    _summary(report, page)
    return 0 if report["passed"] else 1


def _summary(report: dict[str, Any], page: Any) -> None:
    from rich.console import Console

    console = Console()
    run, upd = report["run"], report["updates"]
    final = ", ".join(f"{v} {share:.1%}" for v, share in report["adoption"]["final"].items())
    console.print(
        f"[bold]{report['scenario']['name']}[/]: {run['devices']:,} devices, "
        f"{report['scenario']['duration_h']:g} h simulated in {run['wall_s']:.0f} s "
        f"({run['speedup']:,}×)"
    )
    console.print(f"  running at the end: {final}")
    console.print(
        f"  updates: {upd['succeeded']:,}/{upd['attempted']:,} succeeded, "
        f"{upd['rollbacks']:,} rollbacks, {upd['unbootable']} unbootable, "
        f"{upd['tampered_activated']} tampered activated"
    )
    for r in report["expectations"]:
        mark = {True: "[green]✔[/]", False: "[red]✘[/]", None: "[yellow]?[/]"}[r["ok"]]
        console.print(f"  {mark} {r['expect']}  (measured {r['value']})")
    for note in run["notes"]:
        console.print(f"  note: {note}")
    verdict = "[green]passed[/]" if report["passed"] else "[red]FAILED[/]"
    console.print(f"{verdict} · report: {page}")
