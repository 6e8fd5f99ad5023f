"""`otasim loadtest`: a short headless Locust run of device users, in a subprocess.

With no `--server`, it starts the embedded reference server, publishes a signed and encrypted
release on `production`, and points Locust at it. Locust (gevent) always runs in its own
process: this one never imports locust or gevent.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from simulator.commands import (
    EXIT_SERVER,
    HelpFormatter,
    exit_codes,
    positive_float,
    positive_int,
    timespan,
    version,
)
from simulator.commands.run import add_endpoint_options
from simulator.errors import CommandError

DEFAULT_APP_ID = "com.example.otasim"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "loadtest",
        help="run a short headless Locust load test of real device agents",
        description=(
            "Run Locust headless with otasim's DeviceUser (each user a real device agent). "
            "Without --server: start the embedded reference server, publish a signed, encrypted "
            "release on channel production, and load it. Prints Locust's summary and writes "
            "its CSV files and HTML report into --report. Arguments after -- go to Locust as "
            "they are, e.g. -- --max-error-ratio 0.01 --load-shape release-day."
        ),
        epilog=exit_codes(
            (0, "Locust's run passed"),
            (
                1,
                "Locust failed the run (a request failed, or a threshold given after -- "
                "such as --max-error-ratio was crossed)",
            ),
            (2, "usage error, or the report folder not writable (pre-flight)"),
            (
                3,
                "the server unreachable, refusing, or not answering like a Capgo server for "
                "this app (pre-flight)",
            ),
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--server", metavar="URL",
        help="your OTA server's base URL, as in run and check (default: the embedded server; "
             "Locust's --host)",
    )  # fmt: skip
    add_endpoint_options(p)
    p.add_argument("-u", "--users", type=positive_int, default=50, help="device users (default 50)")
    p.add_argument(
        "-r", "--spawn-rate", type=positive_float, default=10.0, help="users started per s"
    )
    p.add_argument(
        "-t", "--run-time", type=timespan, default="30s", help="e.g. 30s, 5m (default 30s)"
    )
    p.add_argument(
        "--processes", type=_workers, default=1, help="Locust worker processes (-1: one per core)"
    )
    p.add_argument("--app-id", default=DEFAULT_APP_ID)
    p.add_argument(
        "--public-key", type=Path,
        help="the app's public key (with --server); with --dialect expo|codepush what that app "
             "embeds: its certificate.pem / public.pem",
    )  # fmt: skip
    p.add_argument(
        "--release", type=version, default="1.0.1", help="version to publish (embedded server)"
    )
    p.add_argument(
        "--report", type=Path, default=Path("otasim-loadtest"), metavar="DIR",
        help="where to write the report, as in run (default: ./otasim-loadtest)",
    )  # fmt: skip
    p.add_argument("locust_args", nargs=argparse.REMAINDER, help="-- then Locust options")
    p.set_defaults(func=run, extra="loadtest")


def _workers(text: str) -> int:
    """Locust's --processes: -1 (one per core) or a positive count."""
    return -1 if text.strip() == "-1" else positive_int(text)


def locustfile() -> Path:
    spec = importlib.util.find_spec("loadtests")
    if spec is None or not spec.submodule_search_locations:
        raise CommandError("the loadtests package is not installed with otasim")
    return Path(next(iter(spec.submodule_search_locations))) / "locustfile.py"


@dataclass(frozen=True)
class Trust:
    """What the load test's apps embed: Capgo's public key file, and per other dialect its
    trust material file (Expo certificate, CodePush public key)."""

    public_key: Path | None = None
    code_signing: Mapping[str, Path] = field(default_factory=dict)


def _embedded(stack: ExitStack, args: argparse.Namespace, work: Path) -> tuple[str, Trust]:
    """Start the reference server with a published release, signed for every dialect:
    (URL, what the apps embed to verify it)."""
    from agent.protocol.registry import DIALECTS

    from simulator.app import make_dist
    from simulator.publish import DIALECT_TRUST, publish
    from simulator.release import create_keys
    from simulator.scenario import Release
    from simulator.server.client import AdminClient
    from simulator.server.embedded import run_server

    server = stack.enter_context(run_server(work / "server"))
    private_pem, public_pem = create_keys()
    key_file = work / "public.pem"
    key_file.write_bytes(public_pem)
    signing = {}
    for name, derive in DIALECT_TRUST.items():
        signing[name] = work / f"{name}-trust.pem"
        signing[name].write_text(derive(private_pem))
    dist = make_dist(Release(args.release, size_kb=64), work / "dist", seed=1)
    with AdminClient(server.url, server.admin_key) as client:
        publish(client, app_id=args.app_id, version=args.release, channel="production",
                source=dist, private_pem=private_pem, dialects=tuple(DIALECTS))  # fmt: skip
    print(f"otasim: embedded server {server.url}, release {args.release} published", flush=True)
    return server.url, Trust(key_file, signing)


def _given(args: argparse.Namespace) -> Trust:
    """Your server: --public-key is Capgo's key, or with --dialect NAME that dialect's trust
    material (as for `otasim run`)."""
    from agent.protocol.registry import DEFAULT_DIALECT

    if args.public_key is None or (args.dialect or DEFAULT_DIALECT) == DEFAULT_DIALECT:
        return Trust(args.public_key)
    return Trust(None, {args.dialect: args.public_key})


def locust_command(args: argparse.Namespace, host: str, trust: Trust) -> list[str]:
    extra = args.locust_args[1:] if args.locust_args[:1] == ["--"] else args.locust_args
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile()), "--headless",
        "--host", host, "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.run_time,
        "--only-summary", "--app-id", args.app_id, "--device-root", str(args.report / "devices"),
        "--csv", str(args.report / "locust"), "--html", str(args.report / "report.html"),
    ]  # fmt: skip
    if trust.public_key is not None:
        command += ["--public-key", str(trust.public_key)]
    if trust.code_signing:
        items = ",".join(f"{name}={path}" for name, path in sorted(trust.code_signing.items()))
        command += ["--code-signing", items]
    command += ["--plugin", args.plugin]
    if args.dialect:
        command += ["--dialect", args.dialect]
    for name in ("updates", "stats", "channel"):
        url = getattr(args, f"{name}_url")
        if url:
            command += [f"--{name}-url", url]
    if args.processes != 1:
        command += ["--processes", str(args.processes)]
    return command + extra


def run(args: argparse.Namespace) -> int:
    if args.public_key is not None and not args.public_key.is_file():
        raise CommandError(f"no such file: {args.public_key}")
    _preflight(args)
    with ExitStack() as stack:
        if args.server or args.updates_url:
            host, trust = args.server or _origin(args.updates_url), _given(args)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otasim-lt-")))
            host, trust = _embedded(stack, args, work)
        _clear_report(args.report)
        done = subprocess.run(locust_command(args, host, trust), check=False)
    if (args.report / "report.html").is_file():
        print(f"otasim: report in {args.report}/ (report.html, locust_stats.csv)")
    else:
        print(f"otasim: Locust stopped with exit code {done.returncode}, no report written")
    return done.returncode


def _clear_report(out: Path) -> None:
    """Remove the files Locust writes into --report, so that a run that writes none can never
    be read from an older run's."""
    for old in (out / "report.html", *out.glob("locust_*.csv")):
        old.unlink(missing_ok=True)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: Locust's --host when only the plugin's URLs are given."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _preflight(args: argparse.Namespace) -> None:
    """The run's pre-flight (`simulator.preflight`): the report folder is writable and, for
    your server, /updates answers like a Capgo server for this app with a key that fits.

    Raises:
        CommandError: exit 2 (or 3: the server) with one line naming the problem.
    """
    from agent.protocol.registry import DEFAULT_DIALECT

    from simulator.preflight import PreflightError, check_writable, endpoints, probe_updates

    try:
        external = bool(args.server or args.updates_url)
        if external:  # a malformed URL is refused before the report folder is made
            urls = endpoints(
                args.server, args.updates_url, args.stats_url, args.channel_url,
                dialect=args.dialect or DEFAULT_DIALECT,
            )  # fmt: skip
        check_writable([args.report])
        if not external or (args.dialect or DEFAULT_DIALECT) != DEFAULT_DIALECT:
            return  # the probe speaks Capgo
        pem = args.public_key.read_text() if args.public_key else None
        probe_updates(urls, args.app_id, args.plugin, pem)
    except PreflightError as exc:
        raise CommandError(f"pre-flight: {exc}", EXIT_SERVER if exc.server else 2) from None
    except (ValueError, OSError) as exc:
        raise CommandError(f"pre-flight: {exc}") from None
