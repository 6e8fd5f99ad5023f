"""`otasim prove`: each attack of the matrix, a few cases each, against the real agent over
loopback; and the figures' detectors shown firing (an attack table of zeros must be earned)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest

from simulator.prove import server as server_proof
from simulator.prove.attacks import (
    ATTACKS,
    Attack,
    Case,
    Figures,
    Victim,
    _offer_case,
    generated,
    proving_ground,
    run_attack,
)
from simulator.prove.hostile import Reply
from simulator.prove.powercut import recording_folder
from simulator.prove.server import TRAVERSALS, prove_server
from simulator.server import admin_api, device_api, web

CASES = {"slow retrieval (1 byte/s)": 1, "zip bombs": 6, "endless body": 4}
# Attacks with fewer distinct cases than asked: hypothesis stops once it tried them all
# (a freeze answer is "no new version" or the current release again).
DISTINCT = {"freeze": 2}
GAPS_THAT_ACTIVATE = {"replay of an older release never run here", "mix-and-match of delta files"}


@pytest.fixture(scope="module")
def victim() -> Iterator[Victim]:
    with recording_folder() as scratch, proving_ground(scratch) as running:
        yield running


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack(victim: Victim, attack: Attack) -> None:
    cases = CASES.get(attack.name, 8)
    figures = run_attack(victim, attack, cases, seed=15)
    cases = min(cases, DISTINCT.get(attack.name, cases))
    assert figures.cases == cases
    assert figures.injected == cases  # every case really changed what the server served
    assert (figures.unbootable, figures.unhandled, figures.unusable) == (0, 0, 0), figures.samples
    if attack.name in GAPS_THAT_ACTIVATE:  # the documented Capgo v2 gaps, shown happening
        assert attack.known_gap and figures.activations > 0
    else:
        assert figures.activations == 0, figures.samples
        assert figures.held()
    if "freeze" in attack.name:  # only a strict device can tell
        assert figures.detected == (cases if attack.name.startswith("strict") else 0)
    elif attack.name not in GAPS_THAT_ACTIVATE:
        assert sum(figures.refusals.values()) > 0  # refused with a typed error, not ignored


def _genuine(victim: Victim, n: int) -> Case:
    release = victim.kit.pool[4]
    replies = _offer_case(victim.kit, victim.server.url, release, f"7.0.{n}", release.payload)
    return Case(replies, changed=False)


def test_an_untampered_release_counts_as_activation_and_not_as_injected(victim: Victim) -> None:
    figures = Figures("genuine")
    victim.run(_genuine(victim, 1), figures)
    assert (figures.cases, figures.injected, figures.activations) == (1, 0, 1)
    victim.run(replace(_genuine(victim, 2), allowed=(victim.kit.pool[4].files,)), figures)
    assert figures.activations == 1  # an allowed tree is not an activation


def test_an_exception_out_of_the_device_counts_as_unhandled(
    victim: Victim, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: object) -> None:
        raise ValueError("from a parser")

    monkeypatch.setattr("agent.drivers.sync.SyncDevice.background", explode)
    figures = Figures("unhandled")
    victim.run(_genuine(victim, 3), figures)
    assert figures.unhandled == 1 and "ValueError" in figures.samples[0]


def test_a_broken_bundle_folder_counts_as_unbootable(victim: Victim) -> None:
    folder, release, _ = victim.kit.templates["current"]
    broken = folder.with_name("template-broken")
    shutil.copytree(folder, broken)
    for index in broken.glob("bundles/*/index.html"):
        index.unlink()
    victim.kit.templates["broken"] = (broken, release, None)
    figures = Figures("unbootable")
    victim.run(Case({"/updates": Reply(404)}, changed=False, template="broken"), figures)
    assert figures.unbootable == 1


def test_a_device_that_cannot_install_afterwards_counts_as_unusable(victim: Victim) -> None:
    useless = replace(victim.kit.pool[5], payload=b"not the bundle")
    figures = Figures("unusable")
    victim.run(replace(_genuine(victim, 4), then_genuine=useless), figures)
    assert figures.unusable == 1


def test_otasim_prove_prints_json() -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "simulator.cli", "prove", "--cases", "3"),
            *("--attack", "checksum", "--no-power-cut", "--no-server", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    assert [a["attack"] for a in figures["attacks"]] == ["checksum tampering"]
    assert figures["attacks"][0]["cases"] == figures["attacks"][0]["injected"] == 3
    assert "checksum tampering (3 cases" in out.stderr


def test_the_reference_server_holds_under_fuzzing() -> None:
    figures = prove_server(120, seed=15)
    assert figures.held(), figures.samples
    assert figures.cases == 120 + len(TRAVERSALS) + 2 + 5  # + oversized bodies + requests
    assert figures.oversized_accepted == figures.starved == 0
    assert {200, 401}.issubset(figures.statuses)  # requests got through, and were refused
    assert figures.log_records > 0  # the server's log was searched for keys


def test_server_proof_counts_5xx_and_a_missing_role(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(device_api, "updates", broken)
    real = admin_api.authenticate
    monkeypatch.setattr(admin_api, "authenticate", lambda conn, req, role: real(conn, req, "read"))
    figures = prove_server(60, seed=15)
    assert figures.server_errors > 0 and figures.auth_bypass > 0
    assert not figures.held()


def test_server_proof_finds_a_key_written_to_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    real = device_api.updates

    async def chatty(request: Any, *args: Any) -> Any:
        logging.getLogger("simulator.server").warning(request.headers.get("authorization"))
        return await real(request, *args)

    monkeypatch.setattr(device_api, "updates", chatty)
    figures = prove_server(60, seed=15)
    assert figures.key_leaks > 0 and any("in the log" in s for s in figures.samples)


def test_server_proof_finds_a_body_limit_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    real = web.read_json
    monkeypatch.setattr(device_api, "read_json", lambda request: real(request, 1 << 30))
    figures = prove_server(10, seed=15)
    assert figures.oversized_accepted == 2 and not figures.held()


def test_slow_clients_starve_a_one_thread_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The starvation probe against a server that serves one connection at a time."""
    monkeypatch.setattr(server_proof, "PROBE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(server_proof, "SLOW_CLIENTS", 2)
    single = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=single.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{single.server_address[1]}"
    figures = server_proof.ServerFigures()
    try:
        with httpx.Client(base_url=url) as http:
            server_proof._slow_clients(url, http, figures)
    finally:
        single.shutdown()
        single.server_close()
    assert figures.starved == 5


def test_cases_are_drawn_by_hypothesis_reproducibly_by_seed(victim: Victim) -> None:
    attack = next(a for a in ATTACKS if a.name == "hostile /updates answers")
    first, again, other = (run_attack(victim, attack, 12, seed) for seed in (4, 4, 5))
    assert first.digest == again.digest != other.digest
    assert first.cases == again.cases == other.cases == 12
    assert first.refusals == again.refusals  # the same cases, refused the same way


def test_hypothesis_draws_distinct_cases_and_stops_when_there_are_no_more() -> None:
    drawn: list[tuple[int, int]] = []
    generated(50, 1, "small", lambda rng, n: drawn.append((rng.randint(0, 2), rng.randint(0, 1))))
    assert sorted(drawn) == [(a, b) for a in range(3) for b in range(2)]  # 6, each once
    runs: list[list[float]] = [[], [], []]
    digests = [
        generated(30, seed, "big", lambda rng, n, k=k: runs[k].append(rng.random()))
        for k, seed in enumerate((1, 1, 2))
    ]
    assert runs[0] == runs[1] != runs[2] and len(set(runs[0])) == 30
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_each_case_generator_takes_hypothesis_edge_choices(victim: Victim, attack: Attack) -> None:
    """Hypothesis draws the edges (an empty cut, the first and last of every range) early: each
    generator makes the cases of `otasim prove --seed 1` (its default count) without raising
    (it found a checksum cut to nothing, then a position drawn in it)."""
    made: list[Case] = []
    kit, url = victim.kit, victim.front
    cases = attack.default_cases
    generated(cases, 1, attack.name, lambda rng, n: made.append(attack.make(rng, kit, url, n)))
    assert made and all(isinstance(case, Case) for case in made)
