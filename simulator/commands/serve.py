"""`otasim serve`: run the reference OTA server."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from simulator.commands import HelpFormatter, exit_codes, port
from simulator.errors import CommandError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the reference OTA server (Capgo-compatible)",
        description=(
            "Run the reference OTA server: device endpoints /updates, /stats, /channel_self, "
            "bundle files under /files/, the admin API under /api/. Data (SQLite + files) "
            "lives in --data. On first start an admin API key (role all) is printed once."
        ),
        epilog=exit_codes(
            (0, "the server stopped"),
            (
                2,
                "usage error, or the server cannot start (port in use, data folder or TLS "
                "files unusable)",
            ),
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=8787, help="port (default 8787; 0 = any free port)")
    p.add_argument("--data", type=Path, default=Path("otasim-data"), help="data folder")
    p.add_argument("--public-url", help="base URL devices use for downloads (default: Host)")
    p.add_argument(
        "--enumeration-limit",
        type=int,
        default=0,
        metavar="N",
        help="answer a short 429 to a client IP after N unknown-app checks in 15 min "
        "(Capgo uses 5; default 0 = off, as simulated fleets share one IP)",
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate: serve HTTPS")
    p.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    p.set_defaults(func=run, extra="server")


def _check_tls(cert: Path, key: Path) -> None:
    """Load the pair as the server will, so that a bad one fails before anything starts."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise CommandError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its key ({exc})"
        ) from None


def run(args: argparse.Namespace) -> int:
    from simulator.gctune import batched_collection
    from simulator.server.auth import bootstrap_admin_key
    from simulator.server.db import connect
    from simulator.server.embedded import URL_PREFIX
    from simulator.server.runner import bind, make_server, url_of
    from simulator.server.state import ServerConfig

    if (args.tls_cert is None) != (args.tls_key is None):
        raise CommandError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise CommandError(f"no such file: {path}")
    if args.tls_cert is not None:
        _check_tls(args.tls_cert, args.tls_key)
    try:
        conn = connect(args.data)
        key = bootstrap_admin_key(conn)
        conn.close()
        sock = bind(args.host, args.port)
    except (OSError, sqlite3.Error) as exc:
        raise CommandError(
            f"cannot start on {args.host}:{args.port} with {args.data}: {exc}"
        ) from exc
    print(f"{URL_PREFIX}{url_of(sock, tls=args.tls_cert is not None)}", flush=True)
    if key is not None:
        print(f"admin API key (role all, shown once): {key}", flush=True)
    config = ServerConfig(
        data_dir=args.data, public_url=args.public_url, enumeration_misses=args.enumeration_limit
    )
    with batched_collection():
        make_server(config, args.tls_cert, args.tls_key).run(sockets=[sock])
    return 0
