"""Every check is proven able to fail: one defect per check, and only that check fails.

Each case switches one defect on in front of the reference server (or publishes a release
that has it), runs the whole checker, and expects exactly one check not to pass: the one
made for that defect, with its device-level consequence printed.
"""

from __future__ import annotations

import ssl
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from check_harness import (
    BETA,
    DOWNGRADE,
    EVIL,
    PLAIN,
    PRIVATE_CHANNEL,
    ROLLOUT,
    SIGNED,
    ZIP,
    Defective,
    run_check,
)
from defect_server import serve_defective

from simulator.checks.context import DEVICE_NAMESPACE
from simulator.checks.model import REGISTRY
from simulator.checks.runner import all_checks

WRITES = ("--allow-writes",)
PLUGIN_7_WRITES = (*WRITES, "--plugin", "plugin-7")  # plugin 7 sends one event per POST
PLUGIN_6_BETA = (*WRITES, "--plugin", "plugin-6", "--channel", BETA)  # server-side overrides
KEY = ("--public-key",)  # followed by the test's public key path
CASES = [  # (defect, app, extra args, the check that must catch it, its status)
    ("unreadable-offer", PLAIN, (), "protocol.answer", "fail"),
    ("reoffer", PLAIN, (), "protocol.up-to-date", "fail"),
    ("no-kind", PLAIN, (), "protocol.kind", "fail"),
    ("int-flags", PLAIN, (), "protocol.flags", "fail"),
    ("accept-invalid", PLAIN, (), "protocol.bad-input", "fail"),
    ("serve-any-app", PLAIN, (), "protocol.unknown-app", "warn"),
    ("crash-on-non-object", PLAIN, (), "protocol.fuzz", "fail"),
    ("stats-array-refused", PLAIN, WRITES, "protocol.stats-batch", "fail"),
    ("stats-array-dropped", PLAIN, WRITES, "protocol.stats-batch", "warn"),
    ("stats-object-refused", PLAIN, PLUGIN_7_WRITES, "protocol.stats-single", "fail"),
    ("channel-get-broken", PLAIN, (), "protocol.channel-get", "fail"),
    ("channel-set-any", PLAIN, WRITES, "protocol.channel-set", "warn"),
    ("bundle-404", ZIP, (), "bundle.download", "fail"),
    ("wrong-checksum", PLAIN, (), "bundle.checksum", "fail"),
    (None, ZIP, KEY, "bundle.signature", "fail"),  # an unsigned bundle, a key given
    (None, EVIL, (), "bundle.unzip", "fail"),  # a zip with ../ in it
    ("no-range", PLAIN, (), "bundle.range", "fail"),
    ("no-etag", PLAIN, (), "bundle.caching", "warn"),
    ("http-bundle-url", PLAIN, (), "bundle.https", "fail"),
    ("wrong-file-hash", PLAIN, (), "bundle.manifest", "fail"),
    ("non-sticky", ROLLOUT, (), "decide.sticky", "fail"),
    (
        "wrong-share",
        ROLLOUT,
        ("--expect-rollout", "50", "--devices", "40"),
        "decide.rollout-share",
        "fail",
    ),
    ("builtin-literal", PLAIN, (), "decide.builtin", "fail"),
    (None, DOWNGRADE, (), "decide.no-downgrade", "warn"),  # under-native guard off
    ("channel-fallback", PLAIN, (), "decide.unknown-channel", "warn"),
    (None, SIGNED, ("--channel", PRIVATE_CHANNEL), "decide.channel", "fail"),
    ("override-ignored", PLAIN, PLUGIN_6_BETA, "decide.override", "fail"),
    ("wrong-filter", PLAIN, (), "decide.filters", "fail"),
    ("429-no-hint", PLAIN, (), "transport.rate-limit", "warn"),
    ("slow", PLAIN, ("--max-p99-ms", "100"), "transport.latency", "warn"),
    ("no-size-limit", PLAIN, (), "transport.size-limit", "warn"),
    ("leak", PLAIN, (), "transport.no-secrets", "fail"),
]
DEVICES = 12


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("defect", "app", "extra", "check_id", "status"), CASES, ids=[c[3] for c in CASES]
)
def test_only_the_defects_check_fails(
    defective: Defective,
    keys: tuple[bytes, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    defect: str | None,
    app: str,
    extra: tuple[str, ...],
    check_id: str,
    status: str,
) -> None:
    layer = defective.layer
    layer.defect = defect
    layer.fleet_ids = {str(uuid.uuid5(DEVICE_NAMESPACE, f"{app}/fleet-{i}")) for i in range(100)}
    args = [a if a != KEY[0] else f"--public-key={keys[1]}" for a in extra]
    try:
        got = run_check(tmp_path, capsys, "--server", defective.url, "--app-id", app,
                        "--ca-file", str(defective.ca_file), "--devices", str(DEVICES),
                        "--fuzz-examples", "25", *args)  # fmt: skip
    finally:
        layer.defect = None
    assert got.not_passing() == {check_id: status}, got.out
    check = REGISTRY[check_id]
    assert _words(f"devices: {check.why}") in _words(got.out)
    assert got.code == (1 if status == "fail" else 0)  # a warning never fails the run


def test_every_check_has_a_defect_case() -> None:
    """The TLS check's case is the old-TLS server below."""
    covered = {c[3] for c in CASES} | {"transport.tls"}
    assert covered == {c.id for c in all_checks()}


def _old_tls(context: ssl.SSLContext) -> None:
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # accepting deprecated TLS is this server's defect
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1


@pytest.fixture
def old_tls_server(tmp_path: Path, defective: Defective) -> Iterator[str]:
    """The reference app accepting TLS 1.0 (when this machine's OpenSSL can)."""
    (tmp_path / "data").mkdir()
    cert = (defective.ca_file, defective.ca_file.with_name("key.pem"))
    with serve_defective(tmp_path / "data", cert, _old_tls) as (url, _, _):
        yield url


def test_tls_check_fails_when_tls_1_0_is_accepted(
    old_tls_server: str, defective: Defective, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = run_check(tmp_path, capsys, "--server", old_tls_server, "--app-id", PLAIN,
                    "--ca-file", str(defective.ca_file), "--only", "transport.tls")  # fmt: skip
    if "not tested" in got.out:
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.0/1.1 (the check says so)")
    assert got.status("transport.tls") == "fail", got.out
    assert "TLS 1.0/1.1 handshake is accepted" in got.out
    assert got.code == 1


def test_a_refused_stats_shape_only_warns_for_a_profile_that_does_not_send_it(
    defective: Defective, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    defective.layer.defect = "stats-array-refused"
    try:
        got = run_check(tmp_path, capsys, "--server", defective.url, "--app-id", PLAIN,
                        "--ca-file", str(defective.ca_file), "--plugin", "plugin-7",
                        "--allow-writes", "--only", "protocol.stats-*")  # fmt: skip
    finally:
        defective.layer.defect = None
    assert got.not_passing() == {"protocol.stats-batch": "warn"}, got.out
    assert "not the shape plugin-7 sends" in got.out
    assert got.code == 0
