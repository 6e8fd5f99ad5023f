"""The verify pipeline against its ceiling, OpenSSL's own speed on the same file.

Group `verify`: on one BUNDLE_MB encrypted bundle (OTASIM_BENCH_BUNDLE_MB, default 64),
- OpenSSL's own speed, its best buffer size (1 MiB): `openssl enc -d -aes-128-cbc | openssl
  dgst -sha256` (the pipeline's work, in two processes on a pipe), and each stage alone
  (`openssl enc -d` to /dev/null, `openssl dgst` of the plain zip): the pipeline cannot beat
  the slower stage alone, and should come near the pair;
- the device pipeline `agent.bundles.zipbundle.verify_file`, hashing only and writing the
  plain zip as a device does;
- `otasim bundle verify` end to end: a fresh process, the plan (RSA), verify, safe unzip to a
  scratch folder (removed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agent.bundles.zipbundle import verify_file
from agent.security.keys import load_public_key
from agent.security.verify import plan_bundle_verification

if TYPE_CHECKING:  # the fixture's type (conftest is not imported: other folders have one)
    from conftest import Bundle

pytestmark = pytest.mark.benchmark(group="verify")
OPENSSL = shutil.which("openssl")


def _openssl(bundle: Bundle, stages: str) -> str:
    assert OPENSSL is not None
    decrypt = [OPENSSL, "enc", "-d", "-aes-128-cbc", "-bufsize", str(1 << 20),
               "-K", bundle.key_hex, "-iv", bundle.iv_hex, "-in", str(bundle.file)]  # fmt: skip
    digest = [OPENSSL, "dgst", "-sha256", "-r"]
    if stages == "enc -d":
        subprocess.run([*decrypt, "-out", os.devnull], check=True)
        return ""
    if stages == "dgst":
        return subprocess.run(
            [*digest, str(bundle.plain)], capture_output=True, check=True
        ).stdout.decode()
    first = subprocess.Popen(decrypt, stdout=subprocess.PIPE)
    second = subprocess.run(digest, stdin=first.stdout, capture_output=True, check=True)
    assert first.stdout is not None
    first.stdout.close()
    assert first.wait() == 0
    return second.stdout.decode()


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
@pytest.mark.parametrize("stages", ["enc -d | dgst", "enc -d", "dgst"])
def test_openssl(benchmark, bundle: Bundle, stages: str) -> None:
    printed = benchmark.pedantic(_openssl, args=(bundle, stages), rounds=5, warmup_rounds=1)
    assert printed.split(" ")[0] == ("" if stages == "enc -d" else bundle.plain_sha256)


def _pipeline(bundle: Bundle, out: Path | None) -> str:
    key = load_public_key(bundle.public_key.read_text())
    plan = plan_bundle_verification(bundle.checksum, bundle.session_key, key)
    verifier = verify_file(bundle.file, out, plan)
    if out is not None:
        out.unlink()
    return verifier.sha256_hex


def test_pipeline_hash_only(benchmark, bundle: Bundle) -> None:
    digest = benchmark.pedantic(_pipeline, args=(bundle, None), rounds=5, warmup_rounds=1)
    assert digest == bundle.plain_sha256


def test_pipeline_writing_the_plain_zip(benchmark, bundle: Bundle) -> None:
    """Also saves the Python heap peak of one run (`extra_info.heap_peak_kib`): the pipeline
    streams, so it stays far below the bundle's size."""
    out = bundle.folder / "plain.zip"
    tracemalloc.start()
    _pipeline(bundle, out)
    benchmark.extra_info["heap_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
    tracemalloc.stop()
    digest = benchmark.pedantic(_pipeline, args=(bundle, out), rounds=5, warmup_rounds=1)
    assert digest == bundle.plain_sha256 and not out.exists()


def _cli_verify(bundle: Bundle) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "simulator.cli", "bundle", "verify", str(bundle.file),
         "--checksum", bundle.checksum, "--session-key", bundle.session_key,
         "--public-key", str(bundle.public_key)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def test_otasim_bundle_verify_end_to_end(benchmark, bundle: Bundle) -> None:
    printed = benchmark.pedantic(_cli_verify, args=(bundle,), rounds=5, warmup_rounds=1)
    assert printed.startswith(f"accepted: sha256 {bundle.plain_sha256}")
