"""`otasim prove`: the security proving ground, figures from real attackers and power cuts."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from simulator.commands import HelpFormatter, exit_codes, positive_int
from simulator.errors import CommandError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "prove",
        help="attack the real agent over loopback and cut its power at every write",
        description=(
            "Run the attack matrix (tampered bundles, keys and checksums, replays, freeze, "
            "mix-and-match, endless and slow bodies, bombs, hostile answers) against the real "
            "agent over loopback HTTP, and cut power / kill the device at every write boundary "
            "of an update's life. Prints, per attack, the cases generated, how many the "
            "attacker really injected, and the activations, unbootable devices and unhandled "
            "errors (target: 0)."
        ),
        epilog=exit_codes(
            (
                0,
                "every target met, outside the known gaps of the Capgo v2 protocol (shown in "
                "the notes)",
            ),
            (
                1,
                "a target missed: a bad bundle activated, a device left unbootable or an error "
                "unhandled",
            ),
            (2, "usage error"),
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--cases",
        type=positive_int,
        metavar="N",
        help="cases per attack (default: each attack's own)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the case generators (1)")
    p.add_argument(
        "--attack",
        action="append",
        metavar="TEXT",
        help="only attacks whose name contains TEXT (repeatable)",
    )
    p.add_argument(
        "--no-power-cut", action="store_true", help="skip the power-cut and disk-full proofs"
    )
    p.add_argument("--no-server", action="store_true", help="skip the reference server's proof")
    p.add_argument(
        "--no-mitm", action="store_true", help="skip the man in the middle (mitmproxy) proof"
    )
    p.add_argument(
        "--mitmdump",
        metavar="PATH",
        help="mitmproxy's mitmdump, installed in a venv of its own (default: $OTASIM_MITMDUMP, "
        "the source tree's .venv-mitm from `make mitm`, or PATH)",
    )
    p.add_argument(
        "--dialects",
        action="store_true",
        help="only the dialect comparison: what a man in the middle can do to each dialect, "
        "signed and unsigned, over plain HTTP and TLS (docs/security.md)",
    )
    p.add_argument(
        "--dialect",
        action="append",
        metavar="NAME",
        help="the dialect comparison for dialect NAME only (repeatable)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run, extra="prove")


def _compare(args: argparse.Namespace) -> int:
    """`--dialects` / `--dialect`: the comparison table; exit 1 when a cell is unmeasured."""
    from agent.protocol.registry import DIALECTS

    from simulator.prove.dialects import compare_dialects, table
    from simulator.prove.mitm import MitmUnavailable, find_mitmdump

    unknown = [d for d in args.dialect or () if d not in DIALECTS]
    if unknown:
        raise CommandError(f"unknown dialect {unknown[0]!r} (known: {', '.join(DIALECTS)})")
    try:
        mitmdump = find_mitmdump(args.mitmdump)
    except MitmUnavailable as exc:
        raise CommandError(str(exc)) from None
    rows = compare_dialects(mitmdump, args.dialect or tuple(DIALECTS))
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
    else:
        print(table(rows))
    return 1 if any("unknown" in row.cells.values() for row in rows) else 0


def run(args: argparse.Namespace) -> int:
    if args.dialects or args.dialect:
        return _compare(args)
    from simulator.prove.attacks import ATTACKS, Figures, proving_ground, run_attack
    from simulator.prove.mitm import (
        MITM_ATTACKS,
        MitmUnavailable,
        find_mitmdump,
        mitm_ground,
        run_mitm_attack,
    )
    from simulator.prove.powercut import prove_disk_full, prove_power_cuts, recording_folder
    from simulator.prove.server import prove_server

    def matches(name: str) -> bool:
        return not args.attack or any(t.lower() in name.lower() for t in args.attack)

    chosen = [a for a in ATTACKS if matches(a.name)]
    mitm = () if args.no_mitm else tuple(a for a in MITM_ATTACKS if matches(a.name))
    if not chosen and not mitm and args.no_power_cut and args.no_server:
        raise CommandError("nothing to prove: no attack matches --attack")
    try:
        mitmdump = find_mitmdump(args.mitmdump) if mitm else ""
    except MitmUnavailable as exc:
        raise CommandError(str(exc)) from None
    out: dict[str, Any] = {"seed": args.seed, "attacks": [], "mitm": []}
    failed = False

    def done(figures: Figures) -> None:
        took = f"{figures.cases} cases, {figures.seconds:.1f} s"
        print(f"prove: {figures.attack} ({took})", file=sys.stderr, flush=True)

    try:
        if chosen or mitm:
            with recording_folder() as scratch, proving_ground(scratch) as victim:
                for attack in chosen:
                    cases = args.cases or attack.default_cases
                    figures = run_attack(victim, attack, cases, args.seed)
                    out["attacks"].append(figures.as_dict() | {"known_gap": attack.known_gap})
                    failed |= not attack.known_gap and not figures.held()
                    done(figures)
                if mitm:
                    with mitm_ground(victim, mitmdump, mitm) as victim_for:
                        for m in mitm:
                            cases = args.cases or m.default_cases
                            figures = run_mitm_attack(victim_for(m), m, cases, args.seed)
                            out["mitm"].append(figures.as_dict())
                            failed |= not figures.held()
                            done(figures)
        if not args.no_server:
            server = prove_server(args.cases or 2000, args.seed)
            out["server"] = server.as_dict()
            failed |= not server.held()
        if not args.no_power_cut:
            power = prove_power_cuts()
            out["power_cut"] = power.as_dict()
            failed |= bool(power.problems)
            full = prove_disk_full()
            out["disk_full"] = full.as_dict()
            failed |= bool(full.problems or full.absorbed)
    except RuntimeError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(render(out))
    return 1 if failed else 0


COLUMNS = ("cases", "injected", "activations", "unbootable", "unhandled")
MITM_COLUMNS = ("cases", "injected", "activations", "accepted", "unbootable", "unhandled")


def _row(a: dict[str, Any], columns: tuple[str, ...] = COLUMNS) -> str:
    figures = "".join(f"{a[c]:>12}" for c in columns)
    return f"{a['attack']:<44}{figures}{a['seconds']:>9.1f}  {a['digest']}"


def _header(first: str, columns: tuple[str, ...]) -> str:
    return f"{first:<44}" + "".join(f"{c:>12}" for c in columns) + f"{'s':>9}  cases digest"


def render(out: dict[str, Any]) -> str:
    """The figures as a text table (what the README quotes)."""
    lines = []
    if out["attacks"] or out.get("mitm"):
        lines.append(
            f"seed {out['seed']}: every case is drawn by hypothesis from it; `otasim prove"
            f" --seed {out['seed']}` draws the same cases (the same digest of their choices)"
        )
    if out["attacks"]:
        lines.append(_header("attack", COLUMNS))
        lines += [_row(a) for a in out["attacks"]]
        notes = [(a["attack"], a["note"]) for a in out["attacks"] if a["note"]]
        lines += [f"  note: {name}: {note}" for name, note in notes]
        lines += [
            f"  {a['attack']}: the device reported the freeze in {a['detected']}/{a['cases']}"
            for a in out["attacks"]
            if "freeze" in a["attack"]
        ]
        for a in out["attacks"]:
            lines += [f"  {a['attack']}: {sample}" for sample in a["samples"][:1]]
    if out.get("mitm"):
        lines.append(_header("man in the middle (mitmproxy)", MITM_COLUMNS))
        lines += [_row(a, MITM_COLUMNS) for a in out["mitm"]]
        lines.append(
            "  accepted: cases where the device sent a request over a connection it must refuse"
            " (plain http after https, an untrusted certificate, TLS below 1.2)"
        )
        for a in out["mitm"]:
            lines += [f"  {a['attack']}: {sample}" for sample in a["samples"][:1]]
    server = out.get("server")
    if server:
        lines += [
            f"reference server: {server['cases']} fuzzed requests to every route (statuses"
            f" {server['statuses']}): {server['server_errors']} 5xx, {server['auth_bypass']}"
            f" admin answers without the role, {server['key_leaks']} keys in answers or in"
            f" {server['log_records']} log records,"
            f" {server['traversals_served']} traversals served,"
            f" {server['oversized_accepted']} oversized bodies taken,"
            f" {server['starved']} requests starved by 50 slow clients, files not 0600:"
            f" {server['open_files'] or 'none'}",
        ]
        lines += [f"  {sample}" for sample in server["samples"][:5]]
    power = out.get("power_cut")
    if power:
        kill = f"{power['kill_recovered']}/{power['kill_images']}"
        cut = f"{power['power_cut_recovered']}/{power['power_cut_images']}"
        areas = ", ".join(f"{k} {v}" for k, v in power["by_area"].items())
        lines += [
            f"write boundaries: {power['write_boundaries']} ({areas})",
            f"process kill before each write: {kill} recovered"
            " (old or new version, bundles complete, stats queue whole)",
            f"power cut before each write:    {cut} recovered (only fsynced data kept)",
        ]
        lines += [f"  {problem}" for problem in power["problems"][:5]]
    full = out.get("disk_full")
    if full:
        lines += [
            f"disk full at each write of a first update: {full['injection_points']} points;"
            f" {full['typed_errors']} typed errors, {full['reported']} failure stats,"
            f" {len(full['absorbed'])} unnoticed; {full['recovered']} booted old or new with"
            f" staging freed; {full['succeeded_after']} installed once space returned",
        ]
        lines += [f"  {problem}" for problem in full["problems"][:5]]
    return "\n".join(lines)
