"""`otasim device`: one virtual device driven by hand, for QA and for scripts."""

from __future__ import annotations

import argparse
import io
import json
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.commands import EXIT_SERVER, exit_codes, version
from simulator.commands.run import add_endpoint_options
from simulator.errors import CommandError

if TYPE_CHECKING:
    from agent.drivers.sync import SyncDevice
    from agent.protocol.profiles import PluginProfile

DEVICE_FILE = "device.json"
EXIT_OK, EXIT_UPDATE_FAILED, EXIT_DISK = 0, EXIT_SERVER, 4
EXIT_CODES = exit_codes(
    (
        0,
        'the command ran; the device is consistent (this includes "no update", also when the '
        "device's plugin reported an up-to-date answer as a failure: printed as a finding)",
    ),
    (2, "usage error, or DIR is not a device folder (or already is one, for init)"),
    (
        3,
        "an update check or download failed (the server unreachable or refusing, as for "
        "every command; or a bad answer, a verification failure); the device still boots "
        "its previous bundle",
    ),
    (
        4,
        "the device folder could not be written (disk full, permissions), also when a "
        "download stopped for lack of space (stats insufficient_disk_space); the partial "
        "download is deleted and the device still boots its previous bundle",
    ),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "device",
        help="drive one virtual device by hand (init, launch, foreground, background, status)",
        description=(
            "One virtual device running the otasim update agent against a Capgo-speaking\n"
            "server. Its disk (bundles, state, pending stats) lives in DIR. Every command\n"
            "prints the Capgo plugin events and stats actions as they happen."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="device_command", metavar="ACTION")
    cmds.required = True
    init = cmds.add_parser(
        "init",
        help="create a device folder",
        description=(
            "Create a device folder: a new phone with the app installed (builtin bundle only).\n"
            "--config takes the Capgo updater options (appReadyTimeout, autoUpdate,\n"
            "autoDeleteFailed, autoDeletePrevious, resetWhenUpdate, periodCheckDelay,\n"
            "responseTimeout, defaultChannel, ...) and otasim's own (never_retry_failed_versions,\n"
            "max_bundle_bytes, download_timeout_s, exchange_timeout_s, transport_attempts,\n"
            "ca_file, strict_release, min_download_bytes_per_s, stall_window_s)."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("dir", type=Path, metavar="DIR", help="device folder to create")
    init.add_argument(
        "--server", help="base URL: uses URL/updates, /stats, /channel_self (unless given below)"
    )
    add_endpoint_options(init)
    init.add_argument("--app-id", required=True, help="app id, e.g. com.example.app")
    init.add_argument("--platform", required=True, choices=["ios", "android"])
    init.add_argument(
        "--version-build", required=True, type=version, help="native app version, e.g. 1.0.0"
    )
    init.add_argument("--version-code", default="1", help="native build number (default 1)")
    init.add_argument("--os-version", default="17.0", help="OS version (default 17.0)")
    init.add_argument("--public-key", type=Path, help="PEM public key or capacitor.config.json")
    init.add_argument(
        "--strict",
        action="store_true",
        help="strict mode: accept only releases with a valid signed release document "
        "(`otasim publish --strict`), refuse replays and mixed files, report a freeze; "
        "needs --public-key",
    )
    init.add_argument("--channel", help="defaultChannel to ask for")
    init.add_argument("--device-id", help="device UUID (default: a new random one)")
    init.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Capgo updater option, e.g. autoUpdate=always, appReadyTimeout=5000 (repeatable)",
    )
    init.set_defaults(func=run_init)
    for name, text in (
        ("launch", "cold start: roll back an unconfirmed boot, apply a queued bundle, boot, check"),
        ("foreground", "move to foreground: check, download and apply as the mode says"),
        ("background", "move to background: apply the queued bundle"),
    ):
        cmd = cmds.add_parser(
            name,
            help=text,
            description=text,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument("dir", type=Path, metavar="DIR", help="device folder (from init)")
        cmd.add_argument(
            "-v", "--verbose", action="store_true", help="also print every HTTP request"
        )
        cmd.add_argument(
            "--crash",
            action="store_true",
            help="the app never calls notifyAppReady (the next launch rolls back)",
        )
        cmd.set_defaults(func=run_lifecycle, action=name)
    status = cmds.add_parser(
        "status",
        help="show bundles, slots, failed versions, pending stats",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("dir", type=Path, metavar="DIR", help="device folder (from init)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=run_status)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--config wants KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def run_init(args: argparse.Namespace) -> int:
    from agent.config import AgentConfig, DeviceIdentity, valid_app_id
    from agent.protocol.profiles import get_profile
    from agent.protocol.registry import DEFAULT_DIALECT, dialect_for
    from agent.security.keys import load_public_key
    from agent.store import atomic_write

    from simulator.preflight import endpoints

    if (args.dir / DEVICE_FILE).exists():
        raise CommandError(f"{args.dir} is already a device folder")
    dialect = args.dialect or DEFAULT_DIALECT
    try:
        urls = endpoints(
            args.server, args.updates_url, args.stats_url, args.channel_url, dialect=dialect
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    profile = get_profile(args.plugin)
    options = {
        "updateUrl": urls.updates,
        "statsUrl": urls.stats,
        "channelUrl": urls.channel,
        "plugin": profile.name,
        "dialect": dialect,
        **_parse_options(args.config),
    }
    if args.channel:
        options["defaultChannel"] = args.channel
    if args.strict:
        options["strict_release"] = True
    try:
        if args.public_key and dialect == DEFAULT_DIALECT:
            options["publicKey"] = load_public_key(args.public_key.read_text()).pem
        elif args.public_key:  # what an app of that dialect embeds (certificate, public key)
            options["code_signing_pem"] = args.public_key.read_text()
        if options.get("ca_file") is not None:
            options["ca_file"] = _checked_ca_file(str(options["ca_file"]))
        config = AgentConfig.from_capgo(options)
        dialect_for(config)  # the dialect accepts that trust material
        identity = DeviceIdentity(
            device_id=args.device_id or str(uuid.uuid4()),
            app_id=args.app_id,
            platform=args.platform,
            version_build=args.version_build,
            version_code=args.version_code,
            version_os=args.os_version,
            plugin_version=profile.plugin_version,
        )
        if not valid_app_id(args.app_id, dialect):
            raise ValueError(f"--app-id {args.app_id!r} is not a Capgo app id (com.example.app)")
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    args.dir.mkdir(parents=True, exist_ok=True)
    record = {"identity": asdict(identity), "config": asdict(config)}
    atomic_write(args.dir / DEVICE_FILE, json.dumps(record, indent=2).encode())
    print(
        f"device {identity.device_id} ({identity.app_id} {identity.platform} "
        f"{identity.version_build}, {_speaks(dialect, profile.name, profile.plugin_version)}) "
        f"in {args.dir}"
    )
    return EXIT_OK


def _speaks(dialect: str, plugin: str, plugin_version: str) -> str:
    """How `device init` names what the device speaks: the Capgo plugin, or the dialect."""
    return f"{plugin} {plugin_version}" if dialect == "capgo" else f"dialect {dialect}"


def _checked_ca_file(path: str) -> str:
    """The absolute path of a readable PEM CA bundle (later commands may run elsewhere).

    Raises:
        CommandError: the file is missing or holds no usable CA certificate.
    """
    import ssl

    from agent.drivers.http import shared_ssl_context

    resolved = str(Path(path).expanduser().resolve())
    try:
        shared_ssl_context(resolved)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"ca_file {path}: not a readable PEM CA bundle ({exc})") from None
    return resolved


class _Printer:
    """Prints events and stats as they happen; remembers failures for the exit code.

    A check the device's plugin reports as failed although the answer meant "up to date" (or
    "blocked") is printed as a finding about the server and is not a failure of the command.
    """

    def __init__(self, verbose: bool = False) -> None:
        self.failed = False
        self.disk_full = False
        self.verbose = verbose
        self.profile: PluginProfile | None = None  # set when the device is opened
        self.platform = ""  # the device's, set when it is opened
        self._phantom = False

    def on_request(
        self,
        name: str,
        method: str,
        url: str,
        status: int | None,
        elapsed_s: float,
        response_bytes: int,
        error: Exception | None,
    ) -> None:
        if self.verbose:
            outcome = status if error is None else f"{status or '-'} {error}"
            print(
                f"http  {method} {url} -> {outcome} ({elapsed_s * 1000:.0f} ms, "
                f"{response_bytes} bytes)",
                flush=True,
            )

    def on_event(self, name: str, payload: Mapping[str, Any]) -> None:
        from agent.protocol.answers import finding

        print(f"event {name} {json.dumps(dict(payload), default=str)}", flush=True)
        if name == "updateCheckResult" and self.profile is not None:
            kind, error, status = (payload.get(k) for k in ("kind", "error", "statusCode"))
            found = (
                finding(self.profile.name, self.profile.reads_kind, kind, error, None, status)
                if isinstance(kind, str) and isinstance(error, str) and isinstance(status, int)
                else None
            )
            if found is not None:
                print(f"finding {found.text}", flush=True)
                self._phantom = True
        elif name == "downloadFailed":
            self.failed = self.failed or not self._phantom
            self._phantom = False

    def on_stat(self, action: str, version_name: str) -> None:
        self.disk_full = self.disk_full or action == "insufficient_disk_space"
        print(f"stat  {action} {version_name}", flush=True)


@contextmanager
def _opened(folder: Path, observer: Any = None, *, network: bool = True) -> Iterator[SyncDevice]:
    """The device in `folder` with its own HTTP port, closed at the end (`network=False`: a
    command that sends nothing, so the configured `ca_file` is not even read)."""
    import ssl

    from agent.config import AgentConfig, DeviceIdentity
    from agent.drivers.backends import make_sync_port
    from agent.drivers.sync import SyncDevice
    from agent.errors import AgentError, LocalError

    try:
        record = json.loads((folder / DEVICE_FILE).read_text())
        config = AgentConfig(**record["config"])
        identity = DeviceIdentity(**record["identity"])
    except FileNotFoundError:
        raise CommandError(f"{folder} is not a device folder (run `otasim device init`)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"{folder / DEVICE_FILE} is unreadable: {exc}") from exc
    if isinstance(observer, _Printer):
        from agent.protocol.profiles import get_profile

        observer.profile = get_profile(config.plugin)
        observer.platform = identity.platform
    try:
        port = make_sync_port(verify=(config.ca_file or True) if network else True)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(
            f"ca_file {config.ca_file} of {folder} is unusable ({exc}); "
            "`otasim device status` still works"
        ) from None
    try:
        device = SyncDevice.open(folder, config, identity, port, observer=observer)
        yield device
    except LocalError as exc:
        raise CommandError(f"device {folder}: {exc}", EXIT_DISK) from exc
    except (AgentError, ValueError) as exc:
        raise CommandError(f"cannot open device {folder}: {exc}") from exc
    finally:
        port.close()


def _escape_unprintable() -> None:
    """Print what the terminal cannot encode escaped, never crash on it (a state written
    before the protocol boundary refused lone surrogates may still hold one)."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def run_lifecycle(args: argparse.Namespace) -> int:
    _escape_unprintable()
    printer = _Printer(args.verbose)
    with _opened(args.dir, printer) as device:
        getattr(device, args.action)()
        status = device.status()
        if status.boot_id is not None and not status.boot_confirmed:
            why = (
                "--crash"
                if args.crash
                else _app_fails(status.current.path, printer.platform, status.boot_id,
                                status.current.version)
            )  # fmt: skip
            if why is None:
                device.notify_app_ready(status.boot_id)
            else:
                print(f"app   {status.current.version}: {why}; no notifyAppReady, the next "
                      "launch rolls back", flush=True)  # fmt: skip
        if not device.flush_stats():
            print("stats: some events stay queued for the next run", file=sys.stderr)
    if printer.disk_full:
        return EXIT_DISK
    return EXIT_UPDATE_FAILED if printer.failed else EXIT_OK


def _app_fails(bundle: Path | None, platform: str, boot_id: int, version: str) -> str | None:
    """Why the app does not reach notifyAppReady on the bundle it booted, decided by the app
    model the fleet and the Locust users share (`simulator.app.AppUser.boot`, from the
    bundle's `index.html` and otasim-behaviour.json `crash_on_boot` for this platform); None
    when it starts (the builtin bundle always does)."""
    import random

    from simulator.app import BEHAVIOUR_FILE, AppUser, read_traits
    from simulator.scenario import Behaviour

    if bundle is None:
        return None
    traits = read_traits(bundle, platform)
    boot = AppUser(Behaviour(), random.Random()).boot(traits, boot_id, version, 0.0, 0.0)
    if boot.kind == "crashed":
        return f"crashed on boot ({BEHAVIOUR_FILE}: crash_on_boot {platform} = {traits.crash_p:g})"
    if boot.kind == "blank":
        return "no index.html, the page never loads"
    return None  # ready now, or after its start time: a command by hand waits for it


def run_status(args: argparse.Namespace) -> int:
    _escape_unprintable()
    with _opened(args.dir, network=False) as device:
        status = device.status()
    if args.json:
        print(json.dumps(asdict(status), default=str, indent=2))
        return EXIT_OK

    def line(label: str, view: Any) -> None:
        text = "-" if view is None else f"{view.version} ({view.id}, {view.status})"
        print(f"{label:<9}{text}")

    line("current", status.current)
    line("next", status.next)
    line("fallback", status.fallback)
    for view in status.bundles:
        print(f"bundle   {view.version} ({view.id}, {view.status}) {view.path}")
    boot = (
        "-"
        if status.boot_id is None
        else f"{status.boot_id} ({'confirmed' if status.boot_confirmed else 'unconfirmed'})"
    )
    print(f"boot     {boot}")
    print(f"failed   {', '.join(status.failed_versions) or '-'}")
    print(f"rejected {', '.join(status.rejected_artefacts) or '-'}")
    print(f"floor    {status.highest_confirmed or '-'} (highest confirmed version)")
    print(f"channel  {status.channel or '-'}")
    if status.blocked_until is not None:
        print(f"blocked  until {status.blocked_until:.0f} (epoch s, after a 429)")
    print(f"stats    {status.pending_stats} pending")
    return EXIT_OK
