"""`otasim bundle zip|encrypt|manifest|verify`: make release artefacts and check them as a device.

Artefacts are byte-compatible with `npx @capgo/cli bundle zip|encrypt` (docs/bundles.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.commands import HelpFormatter, exit_codes
from simulator.errors import CommandError

if TYPE_CHECKING:
    from agent.security.keys import PublicKey

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2
_UNUSABLE = (EXIT_USAGE, "usage error, or an input is missing or unusable (the message says which)")
MAKE_EXIT_CODES = exit_codes((EXIT_ACCEPTED, "done"), _UNUSABLE)
_REFUSED = (
    "a device would refuse it: prints the Capgo stats action it would report and why "
    "(checksum_fail, checksum_required, decrypt_fail, unzip_fail, canonical_path_fail, "
    "windows_path_fail, directory_path_fail)"
)
VERIFY_EXIT_CODES = (
    exit_codes(
        (EXIT_ACCEPTED, "a device would accept the bundle (with --unpack, its files are in DIR)"),
        (EXIT_REJECTED, _REFUSED),
        (EXIT_USAGE, "usage error, or an input is missing or unusable (file, key, non-empty DIR)"),
    )
    + "\n\nNothing is written outside --unpack DIR; on refusal DIR is left as it was."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bundle",
        help="zip, encrypt, make delta manifests, and verify bundles as a device would",
        description="Capgo-compatible bundle artefacts (see docs/bundles.md).",
        epilog=exit_codes(
            (EXIT_ACCEPTED, "done (verify: a device would accept the bundle)"),
            (EXIT_REJECTED, "verify: a device would refuse the bundle"),
            _UNUSABLE,
        ),
        formatter_class=HelpFormatter,
    )
    cmds = p.add_subparsers(dest="bundle_command", metavar="ACTION")
    cmds.required = True
    for name, text, add_args, func in (
        (
            "zip",
            "zip a web build folder (files at the root); print its SHA-256",
            _zip_args,
            run_zip,
        ),
        (
            "encrypt",
            "encrypt and sign a zip as `@capgo/cli bundle encrypt`",
            _encrypt_args,
            run_encrypt,
        ),
        (
            "manifest",
            "write delta files and manifest.json for a web build",
            _manifest_args,
            run_manifest,
        ),
        (
            "verify",
            "verify (and unpack) a bundle exactly as a device would",
            _verify_args,
            run_verify,
        ),
    ):
        cmd = cmds.add_parser(
            name,
            help=text,
            description=text + ".",
            epilog=VERIFY_EXIT_CODES if name == "verify" else MAKE_EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_args(cmd)
        cmd.add_argument("--json", action="store_true", help="print one JSON object")
        cmd.set_defaults(func=func)


def _dist_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "dist", type=Path, metavar="DIST", help="built web folder (index.html at its root)"
    )


def _zip_args(p: argparse.ArgumentParser) -> None:
    _dist_arg(p)
    p.add_argument("--out", required=True, type=Path, metavar="FILE.zip")


def _encrypt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, metavar="FILE.zip", help="the plain bundle zip")
    p.add_argument(
        "--key", required=True, type=Path, metavar="PRIVATE.pem", help="from `keys create`"
    )
    p.add_argument(
        "--out", type=Path, metavar="ENC.zip", help="default: FILE.zip_encrypted.zip (as Capgo)"
    )
    p.add_argument(
        "--legacy-checksum",
        action="store_true",
        help="base64 'V2' checksum, for updaters before 5.30.0/6.30.0/7.30.0 (default: V3 hex)",
    )


def _manifest_args(p: argparse.ArgumentParser) -> None:
    _dist_arg(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="must be absent or empty")
    p.add_argument("--key", type=Path, metavar="PRIVATE.pem", help="encrypt files and sign hashes")
    p.add_argument(
        "--session-key", metavar="IV:KEY", help="the bundle's session key (default: new)"
    )


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "file", type=Path, metavar="FILE", help="the bundle zip as served (encrypted or not)"
    )
    p.add_argument(
        "--checksum", required=True, metavar="C", help="the server's checksum ('' for none)"
    )
    p.add_argument(
        "--session-key", default="", metavar="S", help="the server's session_key (IV:KEY)"
    )
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM_OR_CONFIG",
        help="the app's public key: a PEM file or its capacitor.config.json",
    )
    p.add_argument(
        "--unpack", type=Path, metavar="DIR", help="unpack here if accepted (absent or empty)"
    )


def run_zip(args: argparse.Namespace) -> int:
    from simulator.release import zip_dist

    checksum = _release(lambda: zip_dist(args.dist, args.out))
    _emit(args, {"checksum": checksum, "file": str(args.out)}, checksum)
    return EXIT_ACCEPTED


def run_encrypt(args: argparse.Namespace) -> int:
    from simulator.release import encrypt_bundle

    out = args.out or Path(f"{args.file}_encrypted.zip")
    fmt = "legacy" if args.legacy_checksum else "v3"
    private_pem = _read_bytes(args.key, "private key")
    result = _release(lambda: encrypt_bundle(args.file, private_pem, out, checksum_format=fmt))
    fields = {
        "checksum": result.checksum,
        "session_key": result.session_key,
        "file": str(result.path),
        "key_id": result.key_id,
        "plain_checksum": result.plain_checksum,
    }
    _emit(args, fields, "\n".join(f"{k}: {v}" for k, v in fields.items()))
    return EXIT_ACCEPTED


def run_manifest(args: argparse.Namespace) -> int:
    from simulator.release import build_manifest

    private_pem = _read_bytes(args.key, "private key") if args.key else None
    manifest = _release(lambda: build_manifest(args.dist, args.out, private_pem, args.session_key))
    brotli = sum(f.file_name.endswith(".br") for f in manifest.files)
    fields = {
        "manifest": str(args.out / "manifest.json"),
        "files": len(manifest.files),
        "brotli": brotli,
        "session_key": manifest.session_key,
    }
    text = (
        f"{len(manifest.files)} files ({brotli} brotli) in {args.out / 'files'}\n"
        f"manifest: {fields['manifest']}\nsession_key: {manifest.session_key or '(not encrypted)'}"
    )
    _emit(args, fields, text)
    return EXIT_ACCEPTED


def run_verify(args: argparse.Namespace) -> int:
    from agent.errors import LocalError, VerificationError

    if not args.file.is_file():
        raise CommandError(f"{args.file}: no such file")
    if args.unpack is not None and not args.unpack.parent.is_dir():
        raise CommandError(f"{args.unpack.parent}: no such folder (for --unpack)")
    key = _public_key(args.public_key)
    try:
        result = _verify(args, key)
    except VerificationError as exc:
        fields = {"ok": False, "action": exc.action, "reason": exc.reason}
        _emit(args, fields, f"{exc.action}: {exc.reason}")
        return EXIT_REJECTED
    except (LocalError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    where = f", unpacked in {args.unpack}" if args.unpack else ""
    _emit(args, result, f"accepted: sha256 {result['sha256']}, {result['files']} files{where}")
    return EXIT_ACCEPTED


def _public_key(path: Path | None) -> PublicKey | None:
    from agent.security.keys import PublicKeyError, load_public_key

    if path is None:
        return None
    try:
        return load_public_key(_read_bytes(path, "public key").decode())
    except (PublicKeyError, UnicodeDecodeError) as exc:
        raise CommandError(f"{path}: {exc}") from None


def _verify(args: argparse.Namespace, key: PublicKey | None) -> dict[str, Any]:
    """The device's checks; unpacks into --unpack, or into a temporary folder then removed."""
    from agent.bundles.zipbundle import unpack_file
    from agent.security.verify import plan_bundle_verification

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        plan = plan_bundle_verification(args.checksum, args.session_key, key)
    for warning in caught:
        print(f"otasim: warning: {warning.message}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="otasim-verify-") as scratch:
        dest = args.unpack or Path(scratch) / "bundle"
        verifier = unpack_file(args.file, dest, plan)
        files = sum(1 for p in dest.rglob("*") if p.is_file())
    return {
        "ok": True,
        "sha256": verifier.sha256_hex,
        "decrypted": plan.session is not None,
        "signed": key is not None,
        "files": files,
        "unpacked": str(args.unpack) if args.unpack else None,
    }


def _emit(args: argparse.Namespace, fields: dict[str, Any], text: str) -> None:
    print(json.dumps(fields) if args.json else text)


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def _release(make: Callable[[], Any]) -> Any:
    from simulator.release import ReleaseError

    try:
        return make()
    except ReleaseError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or ''}: {exc.strerror or exc}") from None
