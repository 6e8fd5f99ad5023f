"""`otasim resign`: re-sign a strict release's document with a new expiry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from simulator.commands import HelpFormatter, app_id, exit_codes, positive_float
from simulator.commands.publish import need_server, private_pem_of, server_options
from simulator.errors import CommandError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resign",
        help="re-sign a strict release's document with a new expiry",
        description=(
            "Refresh the signed release document of a version published with `publish "
            "--strict`: fetch it from the server, check it with --key, sign it again with "
            "the expiry moved to now + --expires-days (version, counter and hashes kept) and "
            "hand it back. Run it before the document expires (e.g. daily from cron): strict "
            "devices report a freeze (releaseStale) once the newest document they hold has "
            "expired."
        ),
        epilog=exit_codes(
            (0, "re-signed: prints the server's answer (app_id, version, expires) as JSON"),
            (
                2,
                "usage error, an unreadable key, a document that does not verify with it, no "
                "such bundle or no document (published without --strict), or the server "
                "unreachable",
            ),
        ),
        formatter_class=HelpFormatter,
    )
    server_options(p, "upload")
    p.add_argument("--app-id", type=app_id, required=True, help="e.g. com.example.app")
    p.add_argument("--version", required=True, help="the published version, X.Y.Z")
    p.add_argument("--key", type=Path, required=True, help="the app's RSA private key PEM")
    p.add_argument(
        "--expires-days",
        type=positive_float,
        default=7.0,
        help="new lifetime from now (7 days)",
    )
    p.set_defaults(func=resign)


def resign(args: argparse.Namespace) -> int:
    from simulator.publish import PublishError, refresh
    from simulator.release import ReleaseError
    from simulator.server.client import AdminClient, AdminError

    need_server(args)
    private_pem = private_pem_of(args.key)
    assert private_pem is not None
    with AdminClient(args.server, args.api_key) as client:
        try:
            result = refresh(
                client,
                app_id=args.app_id,
                version=args.version,
                private_pem=private_pem,
                expires_days=args.expires_days,
            )
        except (PublishError, ReleaseError, AdminError) as exc:
            raise CommandError(str(exc)) from exc
    print(json.dumps(result, indent=2))
    return 0
