"""`otasim publish`: upload a release to the reference server and publish it on a channel."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from simulator.commands import EXIT_SERVER, SERVER_ROW, HelpFormatter, app_id, exit_codes
from simulator.errors import CommandError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from agent.protocol.registry import DIALECTS

    p = sub.add_parser(
        "publish",
        help="zip, (encrypt,) upload a bundle and publish it on a channel",
        description=(
            "Zip DIST_OR_ZIP (a built web folder, or a ready zip), encrypt it with --key "
            "(Capgo v2: AES-128-CBC, RSA-signed checksum; the key stays local), upload it "
            "as bundle --version and point --channel at it (or roll it out to --rollout "
            "percent of the channel's devices). The app and channel are created if missing."
        ),
        epilog=exit_codes(
            (0, "published: prints one line (with --json, the server's answer as one JSON line)"),
            (2, "usage error, or an unreadable source or key"),
            SERVER_ROW,
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("source", metavar="DIST_OR_ZIP", type=Path)
    server_options(p, "upload+write")
    p.add_argument("--app-id", type=app_id, required=True, help="e.g. com.example.app")
    p.add_argument("--version", required=True, help="bundle version, X.Y.Z")
    p.add_argument("--channel", required=True, help="channel name, e.g. production")
    p.add_argument("--key", type=Path, help="RSA private key PEM (encrypt and sign)")
    p.add_argument("--delta", action="store_true", help="also upload a per-file manifest")
    p.add_argument(
        "--dialect", action="append", default=[], choices=list(DIALECTS), metavar="NAME",
        help="also make and upload this dialect's artefacts (repeatable; Capgo's are always "
             f"there): {', '.join(DIALECTS)}; see docs/dialects.md",
    )  # fmt: skip
    p.add_argument(
        "--strict",
        action="store_true",
        help="also sign a release document (version, counter, expiry, hashes) with --key, "
        "for devices in strict mode (otasim's, not Capgo's)",
    )
    p.add_argument(
        "--counter", type=int, help="strict: the release counter (default: Unix time, growing)"
    )
    p.add_argument(
        "--expires-days", type=float, default=7.0, help="strict: document lifetime (7 days)"
    )
    p.add_argument(
        "--rollout",
        type=float,
        metavar="PERCENT",
        help="roll out to this percentage of the channel's devices",
    )
    p.add_argument(
        "--json", action="store_true",
        help="print the server's answer (bundle and channel) as one line of JSON",
    )  # fmt: skip
    p.set_defaults(func=run)


def server_options(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument(
        "--server", default=os.environ.get("OTASIM_SERVER"), help="server URL (env OTASIM_SERVER)"
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("OTASIM_API_KEY"),
        help=f"API key with role {role} (env OTASIM_API_KEY)",
    )


def private_pem_of(path: Path | None) -> bytes | None:
    try:
        return path.read_bytes() if path else None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from exc


def need_server(args: argparse.Namespace) -> None:
    if not args.server or not args.api_key:
        raise CommandError("--server and --api-key are required (or OTASIM_SERVER/OTASIM_API_KEY)")


def run(args: argparse.Namespace) -> int:
    from simulator.publish import PublishError, publish
    from simulator.release import ReleaseError
    from simulator.server.client import AdminClient, AdminError

    need_server(args)
    if args.rollout is not None and not 0 <= args.rollout <= 100:
        raise CommandError("--rollout is a percentage within 0..100")
    private_pem = private_pem_of(args.key)
    with AdminClient(args.server, args.api_key) as client:
        try:
            result = publish(
                client,
                app_id=args.app_id,
                version=args.version,
                channel=args.channel,
                source=args.source,
                private_pem=private_pem,
                delta=args.delta,
                rollout_percent=args.rollout,
                strict=args.strict,
                counter=args.counter,
                expires_days=args.expires_days,
                dialects=args.dialect,
            )
        except (PublishError, ReleaseError) as exc:
            raise CommandError(str(exc)) from exc
        except AdminError as exc:
            raise CommandError(str(exc), EXIT_SERVER) from exc
    print(json.dumps(result, separators=(",", ":")) if args.json else summary(result))
    return 0


def summary(result: dict[str, Any]) -> str:
    """One line: what was published where, as the server answered."""
    bundle, channel = result["bundle"], result["channel"]
    version, name = bundle.get("version"), channel.get("name")
    if channel.get("rollout_version") == version and channel.get("rollout_percent") is not None:
        where = (
            f"rolled out to {channel['rollout_percent']:g} % of channel {name} "
            f"(the others stay on {channel.get('version') or 'builtin'})"
        )
    else:
        where = f"on channel {name}"
    files = bundle.get("manifest_files") or 0
    delta = f", {files} delta manifest files" if files else ""
    file = f"file {bundle.get('file_id')}{delta}"
    return f"published {version} of {bundle.get('app_id')} {where} ({file})"
