"""Streaming verify benchmark (issue 2): the device pipeline against the bare primitives.

    .venv/bin/python tests/benchmarks/bench_verify.py [--size-mb 256] [--rounds 5]
        [--chunk-kib 64 256 1024]

Makes a random bundle of `--size-mb` MB, AES-128-CBC encrypted as `otasim bundle encrypt` does,
in a temporary folder. Then, in rounds that interleave the candidates so that noise from other
load spreads over all of them, each measurement runs in a fresh process:

- `primitives-<N>KiB`: the ciphertext already in memory; `cryptography` AES-CBC decrypt +
  `hashlib` SHA-256 over it in N KiB slices, no I/O, no padding removal; the faster of the
  two slice sizes is the ceiling the pipeline is compared with;
- `pipeline-<N>KiB`: `agent.bundles.zipbundle.verify_file` (read the file, decrypt, remove the
  PKCS#7 padding, SHA-256, write the plain zip to disk from its writer thread, compare with the
  expected checksum) with N KiB chunks.

Prints, as a Markdown table, the median MB/s of each, its ratio to `primitives`, and the peak
RSS growth of the process during the run (VmHWM after minus VmRSS before, from /proc).
Targets: pipeline >= 0.8 x primitives; RSS growth <= 32 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(kind: str, work: Path, chunk_kib: int) -> dict[str, float]:
    """One measurement, in this (fresh) process: seconds and peak RSS growth in MiB."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from agent.bundles.zipbundle import verify_file
    from agent.security.checksum import ExpectedChecksum
    from agent.security.session import SessionKey
    from agent.security.verify import BundleVerification

    meta = json.loads((work / "meta.json").read_text())
    session = SessionKey(bytes.fromhex(meta["key"]), bytes.fromhex(meta["iv"]))
    enc = work / "bundle.enc"
    if kind == "primitives":
        data = memoryview(enc.read_bytes())
        rss_before = proc_kib("VmRSS")
        start = time.perf_counter()
        decryptor = Cipher(algorithms.AES(session.key), modes.CBC(session.iv)).decryptor()
        digest = hashlib.sha256()
        step = chunk_kib * 1024
        for offset in range(0, len(data), step):
            digest.update(decryptor.update(data[offset : offset + step]))
        digest.update(decryptor.finalize())
        seconds = time.perf_counter() - start
    else:
        plan = BundleVerification(ExpectedChecksum("sha256", meta["sha256"]), session)
        out = work / "plain.zip"
        rss_before = proc_kib("VmRSS")
        start = time.perf_counter()
        verify_file(enc, out, plan, chunk_kib * 1024)
        seconds = time.perf_counter() - start
        out.unlink()
    return {"seconds": seconds, "rss_growth_mib": (proc_kib("VmHWM") - rss_before) / 1024}


def make_bundle(work: Path, size_mb: int) -> int:
    """Random plain bundle of size_mb MB, encrypted to work/bundle.enc; returns its size."""
    import os

    from simulator.release import encrypt_stream, new_session_key

    session = new_session_key()
    digest = hashlib.sha256()
    plain = work / "plain.src"
    with plain.open("wb") as out:
        for _ in range(size_mb):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    with plain.open("rb") as src, (work / "bundle.enc").open("wb") as dst:
        encrypt_stream(src, dst, session)
    plain.unlink()
    meta = {"key": session.key.hex(), "iv": session.iv.hex(), "sha256": digest.hexdigest()}
    (work / "meta.json").write_text(json.dumps(meta))
    return size_mb * MiB


def run_child(kind: str, work: Path, chunk_kib: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(work), str(chunk_kib)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunk-kib", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, work, chunk = args.child
        print(json.dumps(child(kind, Path(work), int(chunk))))
        return
    candidates = [("primitives", 256), ("primitives", 1024)]
    candidates += [("pipeline", c) for c in args.chunk_kib]
    results: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in candidates}
    with tempfile.TemporaryDirectory(prefix="otasim-bench-verify-") as tmp:
        size = make_bundle(Path(tmp), args.size_mb)
        for _ in range(args.rounds):
            for kind, chunk in candidates:
                results[(kind, chunk)].append(run_child(kind, Path(tmp), chunk))
    report(results, size, args)


def report(
    results: dict[tuple[str, int], list[dict[str, float]]], size: int, args: argparse.Namespace
) -> None:
    speed = {
        c: statistics.median(size / MiB / r["seconds"] for r in runs) for c, runs in results.items()
    }
    base = max(v for (kind, _), v in speed.items() if kind == "primitives")
    print(f"bundle {args.size_mb} MB, {args.rounds} rounds, medians (MB = MiB)\n")
    print("| candidate | MB/s | x primitives | peak RSS growth (MiB, max) |")
    print("|---|---|---|---|")
    for (kind, chunk), runs in results.items():
        name = f"{kind} {chunk} KiB chunks"
        rss = max(r["rss_growth_mib"] for r in runs)
        mbs = speed[(kind, chunk)]
        print(f"| {name} | {mbs:.0f} | {mbs / base:.2f} | {rss:.1f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
