"""The load test's own options, added to Locust's parser (`--app-id`, `--load-shape`, ...).

Every option can also be given the Locust ways: in `locust.conf` (`app-id = ...`), or as an
environment variable (`LOCUST_APP_ID=...`). `LoadtestSettings` is the validated view of them.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, ApplyMode
from agent.protocol.profiles import DEFAULT_PROFILE
from agent.protocol.registry import DEFAULT_DIALECT, dialect_for
from agent.security.keys import load_public_key
from simulator.commands.run import add_endpoint_options
from simulator.leftovers import remove_dead
from simulator.scenario import Scenario, load_scenario, with_dialect

APPLY_MODES = ("atBackground", "atInstall", "onLaunch", "always", "onlyDownload", "off")
SHAPES = ("steady", "ramp", "release-day", "diurnal")
HTTP_BACKENDS = ("geventhttpclient", "httpx")


def add_options(parser: Any) -> None:
    """Register the options on Locust's parser (`events.init_command_line_parser`), once:
    `python -m loadtests` registers them before the locustfile does."""
    if any("--app-id" in action.option_strings for action in parser._actions):
        return
    device = parser.add_argument_group("otasim devices")
    device.add_argument("--app-id", default="com.example.otasim", help="app id the devices send")
    device.add_argument(
        "--public-key",
        default="",
        help="file with the app's RSA public key (PEM) or its capacitor.config.json",
    )
    device.add_argument(
        "--code-signing",
        default="",
        metavar="DIALECT=FILE[,...]",
        help="what an app of another dialect embeds to verify updates, per dialect: "
        "expo=certificate.pem (its code-signing certificate), codepush=public.pem (its "
        "CodePush public key); devices of a dialect not named run without code signing",
    )
    device.add_argument(
        "--fleet-mix",
        default="steady-rollout",
        help="bundled scenario name or scenario TOML whose [[fleet]] groups give the devices' "
        "platform, OS, native version and channel",
    )
    device.add_argument("--apply-mode", choices=APPLY_MODES, default="atBackground")
    add_endpoint_options(device)  # --plugin, --updates-url, --stats-url, --channel-url
    device.add_argument(
        "--device-root",
        default="",
        help="folder holding every device's disk (default: a temporary folder per process, "
        "in /dev/shm when there is one: a busy disk would stall the whole process)",
    )
    device.add_argument("--max-devices-per-worker", type=int, default=1000)
    device.add_argument("--http-backend", choices=HTTP_BACKENDS, default="geventhttpclient")
    device.add_argument("--ca-file", default="", help="CA bundle to verify the server's TLS")
    device.add_argument(
        "--session-s", type=float, default=3.0, help="mean time a device stays in foreground"
    )
    shape = parser.add_argument_group("otasim load shape")
    shape.add_argument(
        "--load-shape",
        choices=SHAPES,
        default="steady",
        help="steady: -u/-r/-t as usual; ramp: 0 to -u over --ramp-s; release-day: "
        "--steady-share of -u, then all -u devices arrive within --herd-window-s of "
        "--release-at-s; diurnal: sine between --diurnal-min-share of -u and -u",
    )
    shape.add_argument("--ramp-s", type=float, default=60.0)
    shape.add_argument("--release-at-s", type=float, default=60.0)
    shape.add_argument("--herd-window-s", type=float, default=30.0)
    shape.add_argument("--steady-share", type=float, default=0.2)
    shape.add_argument("--hold-s", type=float, default=120.0)
    shape.add_argument("--diurnal-period-s", type=float, default=600.0)
    shape.add_argument("--diurnal-min-share", type=float, default=0.2)
    shape.add_argument("--diurnal-cycles", type=float, default=1.0)
    # thresholds: a headless run exits 1 when one is missed (parser-level: web UI option)
    for name, what in (
        ("--max-error-ratio", "fail the run above this share of failed HTTP requests"),
        ("--max-p95-updates-ms", "fail the run when the p95 of /updates is above this"),
        ("--min-update-success-ratio", "fail the run when installed / (installed + rolled "
         "back + verification failures) is below this"),
    ):  # fmt: skip
        parser.add_argument(name, type=float, default=None, help=what, include_in_web_ui=False)


def code_signing(text: str) -> dict[str, str]:
    """`--code-signing expo=cert.pem,codepush=public.pem`: {dialect: the file's PEM}, each
    checked by its dialect.

    Raises:
        ValueError: a malformed item, Capgo or an unknown dialect, trust material the dialect
            refuses (CertificateError, SigningKeyError).
        OSError: an unreadable file.
    """
    trust: dict[str, str] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not path or name in trust:
            raise ValueError(f"--code-signing: {item!r} is not DIALECT=FILE (once per dialect)")
        if name == DEFAULT_DIALECT:
            raise ValueError("--code-signing: Capgo's key is --public-key")
        pem = Path(path).read_text()
        try:
            dialect_for(
                AgentConfig(update_url="", stats_url="", dialect=name, code_signing_pem=pem)
            )
        except ValueError as exc:
            raise ValueError(f"--code-signing {name}: {exc}") from None
        trust[name] = pem
    return trust


def _memory_tmp() -> str | None:
    """/dev/shm when writable: device disk I/O blocks the whole gevent process, and a busy
    disk would stall every device of it (requests then time out on the client side)."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def _process_device_root() -> str:
    """A folder for this process's devices (no --device-root), removed when the process exits
    and named after it: `otasim-locust-PID-*`. A process killed outright (SIGKILL, OOM) cannot
    remove its own, so the folders of processes that no longer exist are removed here; the
    folder is named on stderr, once per process."""
    where = _memory_tmp() or tempfile.gettempdir()
    remove_dead(Path(where), "otasim-locust")
    root = tempfile.mkdtemp(prefix=f"otasim-locust-{os.getpid()}-", dir=where)
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    print(f"otasim: this process's devices are in {root} (removed when it exits; "
          "--device-root to keep them)", file=sys.stderr, flush=True)  # fmt: skip
    return root


@dataclass(frozen=True)
class LoadtestSettings:
    """The devices' side of the options, checked once per process.

    Raises:
        ValueError / ScenarioError / OSError: an option out of range, an unreadable key or
            fleet file.
    """

    app_id: str
    public_key: str | None
    fleet: Scenario
    apply_mode: ApplyMode
    device_root: Path
    max_devices: int
    http_backend: str
    ca_file: str | None
    session_s: float
    plugin: str = DEFAULT_PROFILE
    dialect: str | None = None  # every device speaks it; None: the fleet mix's `dialect`
    urls: tuple[str | None, str | None, str | None] = (None, None, None)  # updates/stats/channel
    code_signing: Mapping[str, str] = field(default_factory=dict)  # dialect -> trust PEM

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> LoadtestSettings:
        if options.max_devices_per_worker < 1:
            raise ValueError("--max-devices-per-worker must be >= 1")
        if options.session_s < 0:
            raise ValueError("--session-s must be >= 0")
        key = None
        if options.public_key:
            key = load_public_key(Path(options.public_key).read_text()).pem
        fleet = load_scenario(options.fleet_mix)
        if options.dialect:
            fleet = with_dialect(fleet, options.dialect)
        return cls(
            app_id=options.app_id,
            public_key=key,
            fleet=fleet,
            apply_mode=options.apply_mode,
            device_root=Path(options.device_root or _process_device_root()),
            max_devices=options.max_devices_per_worker,
            http_backend=options.http_backend,
            ca_file=options.ca_file or None,
            session_s=options.session_s,
            plugin=options.plugin,
            dialect=options.dialect,
            urls=(options.updates_url or None, options.stats_url or None,
                  options.channel_url or None),
            code_signing=code_signing(options.code_signing),
        )  # fmt: skip
