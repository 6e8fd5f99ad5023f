"""`otasim keys create`: an RSA-2048 key pair in the formats of `npx @capgo/cli key create`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from simulator.commands import HelpFormatter, exit_codes
from simulator.errors import CommandError

EXIT_CODES = exit_codes(
    (0, "keys written"),
    (2, "usage error, or the key files exist (use --force) or cannot be written"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "keys",
        help="create the RSA key pair that signs and encrypts bundles",
        description="Bundle signing keys, compatible with the Capgo CLI (v2 encryption).",
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    cmds = p.add_subparsers(dest="keys_command", metavar="ACTION")
    cmds.required = True
    create = cmds.add_parser(
        "create",
        help="write DIR/private.pem and DIR/public.pem",
        description=(
            "Create an RSA-2048 key pair, in the formats of `npx @capgo/cli key create`:\n"
            "  DIR/private.pem  'RSA PRIVATE KEY' (PKCS#1, mode 0600), like .capgo_key_v2:\n"
            "                   signs and encrypts bundles; keep it secret\n"
            "  DIR/public.pem   'RSA PUBLIC KEY' (PKCS#1), like .capgo_key_v2.pub: goes in the\n"
            "                   app's capacitor.config (plugins.CapacitorUpdater.publicKey)\n"
            "Prints the key_id devices send (first 20 characters of the public key)."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    create.add_argument(
        "--dialect",
        choices=("capgo", "expo", "codepush"),
        default="capgo",
        help="capgo: the pair above; expo: DIR/private.pem (PKCS#8, signs manifests at publish) "
        "and DIR/certificate.pem (self-signed code-signing certificate for the app, as "
        "`npx expo-updates codesigning:generate` makes); codepush: DIR/private.pem (PKCS#8, "
        "signs the .codepushrelease JWT) and DIR/public.pem (SPKI, the app's CodePushPublicKey)",
    )
    create.add_argument("--force", action="store_true", help="overwrite existing key files")
    create.add_argument("--json", action="store_true", help="print a JSON object")
    create.set_defaults(func=run_create)


def run_create(args: argparse.Namespace) -> int:
    from agent.security.keys import key_id

    from simulator.codepush_release import public_pem_for
    from simulator.expo_release import create_signing_pair
    from simulator.release import create_keys

    out: Path = args.out
    private_path = out / "private.pem"
    if args.dialect == "expo":
        pair = create_signing_pair()
        private_pem, other = pair.private_pem, ("certificate", pair.certificate_pem)
        uses = ("your Expo manifests", "embed it in the app: updates.codeSigningCertificate")
    else:
        private_pem, public_pem = create_keys()
        if args.dialect == "codepush":  # SPKI, as the SDK reads CodePushPublicKey
            public_pem = public_pem_for(private_pem).encode()
            uses = ("your CodePush releases", "embed it in the app: CodePushPublicKey")
        else:
            uses = ("your bundles", "put it in capacitor.config: CapacitorUpdater.publicKey")
        other = ("public_key", public_pem)
    other_path = out / ("certificate.pem" if other[0] == "certificate" else "public.pem")
    existing = [p for p in (private_path, other_path) if p.exists()]
    if existing and not args.force:
        raise CommandError(f"{existing[0]} exists (use --force to replace the key pair)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write(private_path, private_pem, 0o600)
        _write(other_path, other[1], 0o644)
    except OSError as exc:
        raise CommandError(f"cannot write keys in {out}: {exc.strerror or exc}") from None
    made = {"private_key": str(private_path), other[0]: str(other_path)}
    if args.dialect == "capgo":
        made["key_id"] = key_id(other[1].decode())
    if args.json:
        print(json.dumps(made))
        return 0
    print(f"private key: {private_path}  (keep it secret: it signs {uses[0]})")
    print(f"{other[0].replace('_', ' ') + ':':<12} {other_path}  ({uses[1]})")
    if "key_id" in made:
        print(f"key_id:      {made['key_id']}")
    return 0


def _write(path: Path, data: bytes, mode: int) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
