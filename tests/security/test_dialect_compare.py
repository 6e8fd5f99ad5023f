"""`otasim prove --dialects`: the comparison table, measured through a real mitmproxy for a
Capgo, an Expo and a Capawesome app, signed and unsigned (and Capgo strict), over plain HTTP,
TLS through the attacker's CA trusted by the device, and TLS. Every cell is pinned: a dialect
whose signature stops less (or more) than it does today flips a cell and fails here."""

from __future__ import annotations

import json
from typing import Any

import pytest

from simulator.cli import main
from simulator.prove.dialects import compare_dialects, table
from simulator.prove.mitm import Mitm, find_mitmdump

TLS = "refused (TLS certificate refused)"
TLS_ROW = {"tamper": TLS, "replay": TLS, "downgrade": TLS, "confidentiality": "kept"}
UNSIGNED = {
    "tamper": "accepted",
    "replay": "accepted",
    "downgrade": "accepted",
    "confidentiality": "read",
}
EXPECTED = {
    ("capgo", "yes", "http"): {
        "tamper": "refused (key_id_mismatch)",  # the attacker's key is not the app's
        "replay": "accepted",  # an older signed release it never ran: no freshness in Capgo v2
        "downgrade": "accepted",  # nor ordering: 1.0.2 -> 1.0.1 it never ran
        "confidentiality": "kept",  # encrypted bundle (the app's public key opens it)
    },
    ("capgo", "no", "http"): UNSIGNED,
    ("capgo", "strict", "http"): {  # otasim's signed release document, counter 1 < 2
        "tamper": "refused (key_id_mismatch)",
        "replay": "accepted",  # a valid document, not expired, for a device that saw none
        "downgrade": "refused (release_replayed)",
        "confidentiality": "kept",
    },
    ("expo", "yes", "http"): {
        "tamper": "refused (signature_fail)",
        "replay": "accepted",
        "downgrade": "refused (release_replayed)",  # older createdAt than one it accepted
        "confidentiality": "read",  # Expo assets are not encrypted
    },
    ("expo", "no", "http"): UNSIGNED,
    ("capawesome", "yes", "http"): {
        "tamper": "refused (checksum_fail)",  # SHA256withRSA over the file, attacker's key
        "replay": "accepted",
        "downgrade": "accepted",
        "confidentiality": "read",
    },
    ("capawesome", "no", "http"): UNSIGNED,
}
# TLS whose CA the device trusts (a corporate or mis-issued certificate) stops nothing more
EXPECTED |= {(d, s, "tls-trusted"): cells for (d, s, _), cells in EXPECTED.items()}
EXPECTED |= {(d, s, "tls"): TLS_ROW for (d, s, _) in EXPECTED}


@pytest.fixture(scope="module")
def mitmdump() -> str:
    return find_mitmdump()  # `make test` installs it (make mitm): missing is a failure


def test_each_cell_is_what_the_man_in_the_middle_achieved(mitmdump: str) -> None:
    rows = compare_dialects(mitmdump, ["capgo", "expo", "capawesome"])
    got = {(r.dialect, r.signed, r.transport): r.cells for r in rows}
    assert got == EXPECTED
    printed = table(rows).splitlines()
    assert (
        printed[0]
        == "| dialect | signed | transport | tamper | replay | downgrade | confidentiality |"
    )
    assert "| expo | yes | plain HTTP | refused (signature_fail) | accepted |" in printed[11]


def test_an_attack_that_did_not_happen_is_unknown_and_fails_the_command(
    mitmdump: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A proxy that keeps no answer cannot replay one: the replay and downgrade cells are
    `unknown`, not refused, and the command exits 1 (an unmeasured cell is never a pass)."""
    attack = Mitm.attack

    def keeps_nothing(self: Mitm, mode: str, **params: Any) -> None:
        attack(self, "pass" if mode == "record" else mode, **params)

    monkeypatch.setattr(Mitm, "attack", keeps_nothing)
    assert main(["prove", "--dialect", "capgo", "--json", "--mitmdump", mitmdump]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {r["cells"]["replay"] for r in rows} == {r["cells"]["downgrade"] for r in rows}
    assert {r["cells"]["replay"] for r in rows} == {"unknown"}
    assert rows[0]["cells"]["tamper"] == "refused (key_id_mismatch)"


def test_an_unknown_dialect_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prove", "--dialect", "hawkbit"]) == 2
    assert "unknown dialect 'hawkbit'" in capsys.readouterr().err


def test_a_dialect_without_signatures_has_unsigned_rows_only(mitmdump: str) -> None:
    """Appflow verifies no signature (`uses_key=False`): a "signed" row would only show the
    key ignored, so there is none."""
    assert compare_dialects(mitmdump, ["appflow"], signings=("yes", "strict")) == []
