"""The reference server is the conformance baseline: every check passes or is skipped with a
reason, over plain http (the `otasim serve` setup) and over https behind the defect layer
with no defect switched on."""

from __future__ import annotations

from pathlib import Path

import pytest
from check_harness import APP, BETA, ROLLOUT, SIGNED, Defective, run_check

from simulator.checks.runner import all_checks
from simulator.server.embedded import RunningServer


def test_every_check_passes_or_skips_on_the_reference_server(
    reference: RunningServer,
    keys: tuple[bytes, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    got = run_check(tmp_path, capsys, "--server", reference.url, "--app-id", APP,
                    "--public-key", str(keys[1]), "--allow-writes")  # fmt: skip
    assert got.code == 0, got.out
    assert got.not_passing() == {}, got.out
    assert {c["id"] for c in got.report["checks"]} == {c.id for c in all_checks()}
    skips = {c["id"]: c["detail"] for c in got.report["checks"] if c["status"] == "skip"}
    # only what plain http, a default channel, a signed bundle and no rollout cannot show
    assert set(skips) == {
        "bundle.unzip", "bundle.https", "transport.tls", "decide.channel",
        "decide.rollout-share", "transport.rate-limit", "decide.override",
    }  # fmt: skip
    assert all(reason for reason in skips.values())
    assert "verdict: passed" in got.out


def test_the_done_when_command_passes_without_options(
    reference: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`otasim check --server URL --app-id com.example.app`: writes and key-bound checks skip."""
    got = run_check(tmp_path, capsys, "--server", reference.url, "--app-id", APP)
    assert got.code == 0, got.out
    assert got.status("protocol.stats-batch") == "skip"
    assert "--allow-writes" in next(
        c["detail"] for c in got.report["checks"] if c["id"] == "protocol.stats-batch"
    )
    assert got.status("bundle.signature") == "skip"
    assert got.status("bundle.checksum") == "skip"  # signed: needs the key
    assert got.report["allow_writes"] is False


def test_clean_https_server_passes_with_tls_rollout_and_channel(
    defective: Defective,
    keys: tuple[bytes, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    defective.layer.defect = None
    got = run_check(tmp_path, capsys, "--server", defective.url, "--app-id", SIGNED,
                    "--public-key", str(keys[1]), "--allow-writes", "--channel", "production",
                    "--ca-file", str(defective.ca_file), "--fuzz-examples", "10")  # fmt: skip
    assert got.code == 0, got.out
    assert got.not_passing() == {}, got.out
    for check_id in ("transport.tls", "bundle.https", "decide.channel", "bundle.signature"):
        assert got.status(check_id) == "pass", check_id
    rollout = run_check(tmp_path, capsys, "--server", defective.url, "--app-id", ROLLOUT,
                        "--ca-file", str(defective.ca_file), "--devices", "60",
                        "--expect-rollout", "50", "--only", "decide")  # fmt: skip
    assert rollout.status("decide.rollout-share") == "pass", rollout.out
    assert rollout.status("decide.sticky") == "pass", rollout.out


@pytest.mark.parametrize("profile", ["plugin-6", "plugin-7"])
def test_older_plugin_profiles_pass_on_the_reference_server(
    reference: RunningServer, keys: tuple[bytes, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], profile: str,
) -> None:  # fmt: skip
    got = run_check(tmp_path, capsys, "--server", reference.url, "--app-id", APP,
                    "--public-key", str(keys[1]), "--allow-writes", "--plugin", profile,
                    "--channel", BETA, "--fuzz-examples", "10", "--skip", "transport")  # fmt: skip
    assert got.code == 0, got.out
    assert got.not_passing() == {}, got.out
    assert got.report["profile"] == profile
    assert got.status("protocol.kind") == "skip"  # these plugins do not read `kind`
    # plugin 6 keeps the channel on the server: setChannel moves the device, DELETE back
    assert got.status("decide.override") == ("pass" if profile == "plugin-6" else "skip")


def test_an_app_the_server_does_not_serve_skips_instead_of_passing(
    reference: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh `otasim serve` (nothing published): 429 on_premise_app is not a pass."""
    got = run_check(tmp_path, capsys, "--server", reference.url, "--app-id", "com.not.published",
                    "--fuzz-examples", "5")  # fmt: skip
    assert got.code == 0, got.out
    passed = {c["id"] for c in got.report["checks"] if c["status"] == "pass"}
    # only what does not depend on the app: validation, size limit, secrets
    assert passed == {
        "protocol.bad-input", "protocol.unknown-app", "protocol.fuzz", "transport.size-limit",
        "transport.no-secrets",
    }  # fmt: skip
    assert "does not serve com.not.published" in got.out
