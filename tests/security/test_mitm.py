"""A real man in the middle (mitmproxy's mitmdump, from `make mitm`) between the real agent and
the genuine server on 127.0.0.1: every attack injected and refused, and each detector shown
firing (a device that activates, or talks over a connection it must refuse, is counted)."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.core.updates import Updates
from agent.drivers.http_httpx import HttpxSyncPort
from simulator import cli
from simulator.prove import mitm
from simulator.prove.attacks import Case, Victim, proving_ground
from simulator.prove.hostile import Reply
from simulator.prove.mitm import (
    MITM_ATTACKS,
    MitmAttack,
    MitmUnavailable,
    MitmVictim,
    find_mitmdump,
    mitm_ground,
    mitm_proxy,
    offer,
    offers_old_tls,
    run_mitm_attack,
)
from simulator.prove.powercut import recording_folder

# What each attack's refusal looks like (a stat action or the failed check's error).
REFUSED_AS: dict[str, str | tuple[str, ...]] = {
    "mitm: bundle bit flips": ("checksum_fail", "decrypt_fail"),
    "mitm: bundle truncation": ("checksum_fail", "decrypt_fail"),
    "mitm: session key stripped": "checksum_required",
    "mitm: session key swapped": "decrypt_fail",
    "mitm: delta file bit flips": ("checksum_fail", "decrypt_fail"),
    "mitm: replay of a recorded answer": ("check:downgrade_refused", "check:relabelled_content"),
    "mitm: strict device, recorded answer replayed": (
        "check:downgrade_refused",
        "check:release_mismatch",
        "check:release_replayed",
    ),
    "mitm TLS, its CA trusted: bundle bit flips": ("checksum_fail", "decrypt_fail"),
    "mitm TLS: redirect https -> http": "check:transport_error",
    "mitm TLS: bundle URL rewritten to http": "check:insecure_url",
    "mitm TLS: certificate not trusted": "check:transport_error",
    "mitm TLS: TLS 1.1 at most": "check:transport_error",
}
BY_NAME = {a.name: a for a in MITM_ATTACKS}


@pytest.fixture(scope="module")
def mitmdump() -> str:
    return find_mitmdump()  # `make test` installs it (make mitm): missing is a failure


@pytest.fixture(scope="module")
def ground(mitmdump: str) -> Iterator[tuple[Victim, Callable[[MitmAttack], MitmVictim]]]:
    with (
        recording_folder() as scratch,
        proving_ground(scratch) as victim,
        mitm_ground(victim, mitmdump, MITM_ATTACKS) as victim_for,
    ):
        yield victim, victim_for


@pytest.mark.parametrize("attack", MITM_ATTACKS, ids=[a.name for a in MITM_ATTACKS])
def test_mitm_attack(ground: Any, attack: MitmAttack) -> None:
    _, victim_for = ground
    victim = victim_for(attack)
    figures = run_mitm_attack(victim, attack, 3, seed=15)
    assert (figures.cases, figures.injected) == (3, 3)
    missed = (figures.activations, figures.accepted, figures.unbootable, figures.unhandled)
    assert missed == (0, 0, 0, 0), figures.samples
    assert figures.held()
    refused_as = REFUSED_AS[attack.name]
    names = refused_as if isinstance(refused_as, tuple) else (refused_as,)
    assert sum(figures.refusals[name] for name in names) == 3, figures.refusals
    if attack.probe is None:  # the proxy really changed the bytes it passed on
        changes = victim.last_report["changes"]
        assert changes and all(c["genuine"] != c["served"] for c in changes)


def test_the_bundle_bytes_the_proxy_changed_are_named(ground: Any) -> None:
    _, victim_for = ground
    attack = BY_NAME["mitm: bundle bit flips"]
    victim = victim_for(attack)
    run_mitm_attack(victim, attack, 1, seed=3)
    (change,) = victim.last_report["changes"]
    assert change["path"] == "/bundle" and change["what"] == "flip"


def _never_run_here(rng: random.Random, victim: MitmVictim, n: int) -> tuple[Case, dict[str, Any]]:
    """The recorded answer of release 3, relabelled newer, to a device that never ran it: the
    Capgo v2 gap (strict mode closes it), here to show an activation through the proxy."""
    pool = victim.kit.pool
    case = Case({"/bundle": Reply(body=pool[3].payload)}, True, template="current")
    return case, {"version": pool[3].version, "label": f"4.{n}.0"}


def test_an_activation_through_the_proxy_is_counted(ground: Any) -> None:
    _, victim_for = ground
    attack = MitmAttack("replay never run", "replay", _never_run_here)
    figures = run_mitm_attack(victim_for(attack), attack, 2, seed=1)
    assert (figures.injected, figures.activations) == (2, 2)
    assert not figures.held()


def test_a_device_following_an_http_bundle_url_is_counted(
    ground: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, victim_for = ground
    monkeypatch.setattr(Updates, "_insecure_refusal", lambda self, offer: None)
    attack = BY_NAME["mitm TLS: bundle URL rewritten to http"]
    figures = run_mitm_attack(victim_for(attack), attack, 2, seed=1)
    assert figures.accepted == 2  # it fetched the bundle over plain http
    assert not figures.held()


def test_a_device_trusting_the_proxy_ca_is_counted(ground: Any) -> None:
    _, victim_for = ground
    attack = replace(BY_NAME["mitm TLS: certificate not trusted"], trust=True)
    figures = run_mitm_attack(victim_for(attack), attack, 2, seed=1)
    assert (figures.injected, figures.accepted) == (2, 2)


def _old_tls_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_a_device_accepting_tls_1_1_is_counted_and_the_probe_tells_the_proxies_apart(
    ground: Any,
) -> None:
    _, victim_for = ground
    attack = BY_NAME["mitm TLS: TLS 1.1 at most"]
    victim = victim_for(attack)
    plain = victim_for(BY_NAME["mitm: bundle bit flips"]).proxy
    assert offers_old_tls(victim.proxy) and not offers_old_tls(plain)
    victim.port.close()
    victim.port = HttpxSyncPort(_old_tls_context(victim.proxy.ca_file), max_connections=4)
    figures = run_mitm_attack(victim, attack, 2, seed=1)
    assert (figures.injected, figures.accepted) == (2, 2)


def test_the_device_cli_says_in_one_line_that_it_refused_the_certificate(
    ground: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, victim_for = ground
    proxy = victim_for(BY_NAME["mitm: bundle bit flips"]).proxy
    proxy.attack("pass")
    folder = str(tmp_path / "device")
    init = ["device", "init", folder, "--server", proxy.tls_url, "--app-id", "com.x"]
    assert cli.main([*init, "--platform", "android", "--version-build", "1.0.0"]) == 0
    assert cli.main(["device", "launch", folder]) != 0
    refused = [line for line in capsys.readouterr().out.splitlines() if "certificate" in line]
    assert len(refused) == 1, refused
    assert "TLS certificate refused" in refused[0] and proxy.tls_url in refused[0]
    assert proxy.report()["seen"] == {"http": 0, "https": 0}


def test_mitm_prove_prints_its_table_and_json(
    mitmdump: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prove", "--attack", "mitm: session key", "--no-server", "--no-power-cut"]
    argv += ["--cases", "2", "--mitmdump", mitmdump]
    assert cli.main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["attacks"] == []  # no hostile-server attack matches
    assert [(m["attack"], m["cases"], m["injected"], m["accepted"]) for m in out["mitm"]] == [
        ("mitm: session key stripped", 2, 2, 0),
        ("mitm: session key swapped", 2, 2, 0),
    ]
    assert cli.main(argv) == 0
    assert "man in the middle (mitmproxy)" in capsys.readouterr().out


def test_without_mitmdump_prove_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTASIM_MITMDUMP", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(mitm, "LOCAL_MITMDUMP", tmp_path / "none")
    with pytest.raises(MitmUnavailable, match="make mitm"):
        find_mitmdump()
    argv = ["prove", "--attack", "mitm", "--no-server", "--no-power-cut"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-mitm skips it" in err


def test_a_mitmdump_that_does_not_start_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "mitmdump"
    broken.write_text("#!/bin/sh\necho cannot start >&2\nexit 3\n")
    broken.chmod(0o755)
    with (
        pytest.raises(MitmUnavailable, match="exited \\(3\\): cannot start"),
        mitm_proxy(str(broken), "http://127.0.0.1:9"),
    ):
        pass


def test_offer_cases_are_reproducible_by_seed(ground: Any) -> None:
    _, victim_for = ground
    victim = victim_for(BY_NAME["mitm: bundle bit flips"])

    def bodies(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        return [offer(rng, victim, n)[0].replies["/updates"].body for n in range(5)]

    assert bodies(1) == bodies(1) != bodies(2)


def _children(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: set[int] = set()
    for task in tasks.iterdir() if tasks.is_dir() else ():
        with contextlib.suppress(OSError):
            found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def test_a_terminated_prove_stops_its_mitmdump_and_removes_its_folders(mitmdump: str) -> None:
    def scratch() -> set[Path]:
        mitm = Path(tempfile.gettempdir()).glob("otasim-mitm-*")
        return {*Path("/dev/shm").glob("otasim-powercut-*"), *mitm}

    before = scratch()
    argv = [sys.executable, "-m", "simulator.cli", "prove", "--attack", "mitm: bundle bit"]
    argv += ["--cases", "100000", "--no-server", "--no-power-cut", "--mitmdump", mitmdump]
    prove = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        proxies: set[int] = set()
        while not proxies and time.monotonic() < deadline and prove.poll() is None:
            time.sleep(0.2)
            proxies = {c for c in _children(prove.pid) if "mitmdump" in _cmdline(c)}
        assert proxies, "the proof never started its mitmdump"
        time.sleep(1.0)  # cases under way
        prove.send_signal(signal.SIGTERM)
        _, err = prove.communicate(timeout=60)
    finally:
        if prove.poll() is None:
            prove.kill()
            prove.communicate(timeout=10)  # and its pipes closed
    assert prove.returncode == 143, err[-2000:]  # SIGTERM unwinds it as every command (cli)
    assert err.endswith("otasim: terminated (SIGTERM); what it started is cleaned up\n")
    assert not any(Path(f"/proc/{pid}").exists() for pid in proxies)
    assert scratch() <= before  # the device folders and the proxy's folder (its CA) are gone


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
