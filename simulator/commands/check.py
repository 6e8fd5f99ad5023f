"""`otasim check`: validate a Capgo-compatible server's behaviour before an app-store release.

Speaks to the server as devices of the chosen plugin generation do (the agent's own request
builders, parsers, HTTP port and verifier), then prints one line per check: pass, fail, warn
or skip, with what devices suffer when it fails.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.protocol.profiles import DEFAULT_PROFILE, PLUGIN_PROFILES

from simulator.commands import EXIT_SERVER, SERVER_ROW, app_id, exit_codes, percent, positive_int
from simulator.errors import CommandError

EPILOG = """\
examples:
  otasim check --server http://127.0.0.1:8787 --app-id com.example.app
  otasim check --server https://ota.example.com --app-id com.example.app \\
      --public-key .capgo_key_v2.pub --channel beta --devices 200 --expect-rollout 10 \\
      --junit check.xml --html check.html
  otasim check --list                          # every check, its severity and why

Checks that need what was not given (a public key, --allow-writes, a published release) are
reported as skipped with the reason, never as passed. Without --allow-writes nothing is
written to the server except what update checks record (synthetic device ids, listed).

""" + exit_codes(
    (0, "no check of severity error failed"),
    (1, "a check of severity error failed"),
    (2, "usage error"),
    SERVER_ROW,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="validate a Capgo-compatible server's behaviour before a release",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", metavar="URL", help="the server's base URL")
    p.add_argument("--app-id", type=app_id, metavar="ID", help="the app id devices send")
    p.add_argument("--public-key", type=Path, metavar="PEM",
                   help="the app's public key (PEM or capacitor.config.json): verify bundles "
                        "as devices do")  # fmt: skip
    p.add_argument("--channel", metavar="NAME", help="the defaultChannel devices send")
    p.add_argument("--plugin", default=DEFAULT_PROFILE, choices=sorted(PLUGIN_PROFILES),
                   help=f"plugin generation to speak as (default: {DEFAULT_PROFILE})")  # fmt: skip
    for name in ("updates", "stats", "channel"):
        path = "channel_self" if name == "channel" else name
        p.add_argument(f"--{name}-url", metavar="URL", default="",
                       help=f"default: SERVER/{path}")  # fmt: skip
    p.add_argument("--devices", type=positive_int, default=20, metavar="N",
                   help="synthetic devices for rollout and burst checks (default 20)")  # fmt: skip
    p.add_argument("--expect-rollout", type=percent, metavar="PCT",
                   help="the rollout percentage the channel is set to")  # fmt: skip
    p.add_argument("--native-version", default="1.0.0", metavar="X.Y.Z",
                   help="native version of the probing devices (default 1.0.0; adjusted when "
                        "the server answers with a version block)")  # fmt: skip
    p.add_argument("--allow-writes", action="store_true",
                   help="allow stats and channel_self writes (synthetic device ids)")  # fmt: skip
    p.add_argument("--only", action="append", default=[], metavar="CHECK",
                   help="run only this check, family or glob (repeatable)")  # fmt: skip
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help="do not run this check, family or glob (repeatable)")  # fmt: skip
    p.add_argument("--max-p99-ms", type=float, default=2000.0, metavar="MS",
                   help="latency budget for the burst's p99 (default 2000)")  # fmt: skip
    p.add_argument("--fuzz-examples", type=positive_int, default=40, metavar="N",
                   help="malformed requests to generate (default 40)")  # fmt: skip
    p.add_argument("--ca-file", metavar="PEM", help="trust this CA bundle for https")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML page")
    p.add_argument("--list", action="store_true", help="list every check and exit")
    p.set_defaults(func=run, extra="check")


def _list() -> int:
    from simulator.checks.runner import all_checks

    for c in all_checks():
        print(f"{c.id:<26} {c.severity:<8} {c.title}\n{'':<36}{c.why}")
    return 0


def _options(args: argparse.Namespace) -> Any:
    from agent.protocol.profiles import get_profile
    from agent.security.keys import PublicKeyError, load_public_key

    from simulator.checks.context import CheckOptions

    if not args.server or not args.app_id:
        raise CommandError("--server and --app-id are required (or --list)")
    try:
        profile = get_profile(args.plugin)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    key = None
    if args.public_key is not None:
        try:
            key = load_public_key(args.public_key.read_text())
        except (OSError, UnicodeDecodeError, PublicKeyError) as exc:
            raise CommandError(f"--public-key {args.public_key}: {exc}") from None
    try:
        return CheckOptions(
            server=args.server, app_id=args.app_id, profile=profile, public_key=key,
            channel=args.channel, updates_url=args.updates_url, stats_url=args.stats_url,
            channel_url=args.channel_url, devices=args.devices, allow_writes=args.allow_writes,
            native_version=args.native_version, expect_rollout=args.expect_rollout,
            max_p99_ms=args.max_p99_ms, fuzz_examples=args.fuzz_examples, ca_file=args.ca_file,
        )  # fmt: skip
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    from agent.errors import TransportError

    from simulator.checks import output
    from simulator.checks.context import CheckContext
    from simulator.checks.runner import run_checks, select

    options = _options(args)
    try:
        checks = select(args.only, args.skip)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    try:
        ctx = CheckContext(options)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot set up the checker: {exc}") from None
    with ctx:
        try:
            ctx.baseline  # noqa: B018 - the first update check tells whether anyone answers
        except (TransportError, ValueError) as exc:
            raise CommandError(f"cannot reach {options.updates_url}: {exc}", EXIT_SERVER) from None
        results = run_checks(ctx, checks)
    summary = output.RunSummary(
        server=options.server, app_id=options.app_id, profile=options.profile.name,
        started_at=started_at, wall_s=time.monotonic() - started,
        allow_writes=options.allow_writes, devices=dict(ctx.device_ids),
    )  # fmt: skip
    print(output.terminal(results, summary))
    _write(args.json, output.dump_json(results, summary))
    _write(args.html, output.render_html(results, summary))
    if args.junit is not None:
        _write(args.junit, output.junit_xml(results, summary))
    return summary.exit_code(results)


def _write(path: Path | None, content: str | bytes) -> None:
    if path is None:
        return
    try:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc}") from None
    print(f"wrote {path}")
