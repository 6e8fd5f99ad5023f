"""`otasim admin`: apps, channels, rollouts, rollback, device overrides, keys, stats."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator.commands import EXIT_SERVER, SERVER_ROW, HelpFormatter, exit_codes, percent
from simulator.errors import CommandError

ROLE_HELP = "read (query) < upload (publish) < write (channels, rollouts, devices) < all (keys)"


def _policy_flags(p: argparse.ArgumentParser) -> None:
    for name in (
        "public",
        "allow-device-self-set",
        "ios",
        "android",
        "electron",
        "allow-prod",
        "allow-dev",
        "allow-device",
        "allow-emulator",
        "disable-auto-update-under-native",
    ):
        p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument(
        "--disable-auto-update", choices=["none", "major", "minor", "patch", "version_number"]
    )


EXIT_CODES = exit_codes(
    (0, "the call succeeded: prints the server's JSON answer"),
    (2, "usage error"),
    SERVER_ROW,
)


def _build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def cmd(
        name: str, help_: str, action: Callable[..., Any], *args: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=help_, description=help_, epilog=EXIT_CODES, formatter_class=HelpFormatter
        )
        for arg in args:
            p.add_argument(arg)
        p.set_defaults(action=action)
        return p

    cmd("apps", "list apps", lambda c, a: c.list_apps())
    cmd("app-create", "create an app", lambda c, a: c.create_app(a.app_id), "app_id")
    cmd("app", "show an app and its channels", lambda c, a: c.app(a.app_id), "app_id")
    cmd("bundles", "list an app's bundles", lambda c, a: c.bundles(a.app_id), "app_id")
    p = cmd(
        "channel-set",
        "create or update a channel (version, policy)",
        _channel_set,
        "app_id",
        "channel",
    )
    p.add_argument("--version", help="bundle version or builtin")
    _policy_flags(p)
    p = cmd(
        "rollout",
        "roll VERSION out to PERCENT of a channel's devices",
        _rollout,
        "app_id",
        "channel",
        "version",
    )
    p.add_argument("percent", type=percent)
    p.add_argument("--auto-pause-ratio", type=float, help="pause when fails/(installs+fails) > R")
    p.add_argument("--auto-pause-min", type=int, help="samples needed before auto-pause")
    for verb in ("pause", "resume", "complete"):
        cmd(
            f"rollout-{verb}",
            f"{verb} a channel's rollout",
            lambda c, a, v=verb: getattr(c, f"{v}_rollout")(a.app_id, a.channel),
            "app_id",
            "channel",
        )
    cmd(
        "rollback",
        "point a channel back at VERSION (or builtin), ending any rollout",
        lambda c, a: c.rollback(a.app_id, a.channel, a.version),
        "app_id",
        "channel",
        "version",
    )
    cmd("devices", "list pinned devices", lambda c, a: c.device_channels(a.app_id), "app_id")
    cmd(
        "device-set",
        "pin a device to a channel",
        lambda c, a: c.set_device_channel(a.app_id, a.device_id, a.channel),
        "app_id",
        "device_id",
        "channel",
    )
    cmd(
        "device-unset",
        "remove a device's pin",
        lambda c, a: c.set_device_channel(a.app_id, a.device_id, None),
        "app_id",
        "device_id",
    )
    p = cmd(
        "stats",
        "per-version downloads, installs, fails, rollbacks, adoption",
        lambda c, a: c.stats(a.app_id, a.version),
        "app_id",
    )
    p.add_argument("--version")
    cmd(
        "signing-key",
        "give the server an app's private key for a dialect whose answers it signs (expo: "
        "rollBackToEmbedded directives, and manifests re-dated when served, so rollbacks reach "
        "signed devices); the server can then sign anything the app installs",
        _signing_key,
        "app_id",
        "dialect",
        "private_pem",
    )
    cmd("keys", "list API keys (never their secrets)", lambda c, a: c.list_keys())
    p = cmd(
        "key-create",
        f"create an API key; roles: {ROLE_HELP}",
        lambda c, a: c.create_key(a.name, a.role),
        "name",
    )
    p.add_argument("role", choices=["read", "upload", "write", "all"])
    p = cmd("key-revoke", "revoke an API key", lambda c, a: c.revoke_key(a.key_id))
    p.add_argument("key_id", type=int)
    cmd("audit", "the audit log of admin actions", lambda c, a: c.audit())


def _channel_set(client: Any, args: argparse.Namespace) -> Any:
    names = (
        "public",
        "allow_device_self_set",
        "ios",
        "android",
        "electron",
        "allow_prod",
        "allow_dev",
        "allow_device",
        "allow_emulator",
        "disable_auto_update_under_native",
        "disable_auto_update",
    )
    policy = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    return client.set_channel(args.app_id, args.channel, version=args.version, **policy)


def _signing_key(client: Any, args: argparse.Namespace) -> Any:
    try:
        pem = Path(args.private_pem).read_bytes()
    except OSError as exc:
        raise CommandError(f"{args.private_pem}: {exc.strerror or exc}") from None
    return client.set_signing_key(args.app_id, args.dialect, pem)


def _rollout(client: Any, args: argparse.Namespace) -> Any:
    return client.set_rollout(
        args.app_id,
        args.channel,
        args.version,
        args.percent,
        auto_pause_fail_ratio=args.auto_pause_ratio,
        auto_pause_min_samples=args.auto_pause_min,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "admin",
        help="manage the reference server: apps, channels, rollouts, rollback, keys, stats",
        description=f"Admin API calls; prints the JSON answer. Key roles: {ROLE_HELP}.",
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--server", default=os.environ.get("OTASIM_SERVER"), help="server URL (env OTASIM_SERVER)"
    )
    p.add_argument(
        "--api-key", default=os.environ.get("OTASIM_API_KEY"), help="API key (env OTASIM_API_KEY)"
    )
    actions = p.add_subparsers(dest="admin_command", metavar="ACTION")
    actions.required = True
    _build(actions)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from simulator.server.client import AdminClient, AdminError

    if not args.server or not args.api_key:
        raise CommandError("--server and --api-key are required (or OTASIM_SERVER/OTASIM_API_KEY)")
    with AdminClient(args.server, args.api_key) as client:
        try:
            result = args.action(client, args)
        except AdminError as exc:
            raise CommandError(str(exc), EXIT_SERVER) from exc
    print(json.dumps(result, indent=2))
    return 0
