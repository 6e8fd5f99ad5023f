"""The result formats: JUnit XML shaped like pytest's own (checked against a real pytest run),
JSON, the terminal table and the self-contained HTML page."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from simulator.checks.model import Check, Outcome, Result
from simulator.checks.output import RunSummary, junit_xml, render_html, terminal, to_json

STATUSES = ("pass", "fail", "warn", "skip", "error")


def _results() -> list[Result]:
    def make(status: str, severity: str) -> Result:
        check = Check(f"protocol.{status}-{severity}", f"title {status}", severity,  # type: ignore[arg-type]
                      f"why {status}", lambda ctx: Outcome("pass", ""))  # fmt: skip
        return Result.of(check, Outcome(status, f"detail <{status}> & more"), 0.25)  # type: ignore[arg-type]

    return [make(s, "error") for s in STATUSES] + [make("fail", "warning")]


RUN = RunSummary("https://ota.example.com", "com.example.app", "plugin-8",
                 "2026-01-01T00:00:00+00:00", 3.5, False, {"baseline": "0e4c-id"})  # fmt: skip


def test_a_failure_on_a_warning_check_is_a_warn_and_only_errors_fail_the_run() -> None:
    results = _results()
    assert [r.status for r in results] == [*STATUSES, "warn"]
    assert RUN.exit_code(results) == 1
    assert RUN.exit_code([r for r in results if r.status not in ("fail", "error")]) == 0


def _shape(root: ET.Element) -> dict[str, set[str]]:
    """tag -> attribute names, over the whole tree."""
    shape: dict[str, set[str]] = {}
    for element in root.iter():
        shape.setdefault(element.tag, set()).update(element.attrib)
    return shape


def _pytest_junit(tmp_path: Path) -> ET.Element:
    (tmp_path / "test_model.py").write_text(
        "import pytest\n"
        "def test_ok():\n    print('note')\n"
        "def test_fail():\n    assert False, 'broken'\n"
        "def test_skip():\n    pytest.skip('needs a key')\n"
        "@pytest.fixture\ndef boom():\n    raise RuntimeError('setup')\n"
        "def test_error(boom):\n    pass\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\njunit_logging = system-out\n")
    out = tmp_path / "pytest.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(tmp_path / "pytest.ini"),
         "-p", "no:cacheprovider", "-p", "no:locust", f"--junitxml={out}",
         str(tmp_path / "test_model.py")],
        capture_output=True, check=False, timeout=120,
    )  # fmt: skip
    return ET.parse(out).getroot()


def test_junit_xml_has_pytests_shape_and_counts(tmp_path: Path) -> None:
    ours = ET.fromstring(junit_xml(_results(), RUN))
    model = _pytest_junit(tmp_path)
    assert ours.tag == model.tag == "testsuites"
    assert [c.tag for c in ours] == [c.tag for c in model] == ["testsuite"]
    theirs = _shape(model)
    for tag, attributes in _shape(ours).items():
        assert tag in theirs, tag
        assert attributes <= theirs[tag] | {"name"}, (tag, attributes - theirs[tag])
    suite = ours[0]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) \
        == ("6", "1", "1", "1")  # fmt: skip
    cases = {c.get("name"): c for c in suite}
    assert cases["protocol.fail-error"].find("failure") is not None
    assert cases["protocol.error-error"].find("error") is not None
    assert cases["protocol.skip-error"].find("skipped").get("message") == "detail <skip> & more"
    warn = cases["protocol.fail-warning"]
    assert warn.find("failure") is None and "why fail" in (warn.findtext("system-out") or "")
    assert cases["protocol.pass-error"].get("classname") == "otasim.check.protocol"


def test_json_counts_and_verdict() -> None:
    data = to_json(_results(), RUN)
    assert data["schema"] == "otasim.check/1"
    assert data["counts"] == {"pass": 1, "fail": 1, "warn": 2, "skip": 1, "error": 1}
    assert data["passed"] is False
    assert data["synthetic_devices"] == {"baseline": "0e4c-id"}
    assert {c["severity"] for c in data["checks"]} == {"error", "warning"}


def test_terminal_shows_why_for_problems_only() -> None:
    text = terminal(_results(), RUN)
    assert "devices: why fail" in text and "devices: why warn" in text
    assert "devices: why pass" not in text and "devices: why skip" not in text
    assert "verdict: FAILED" in text and "writes: none" in text


def test_html_is_self_contained_and_escaped() -> None:
    page = render_html(_results(), RUN)
    assert "detail &lt;fail&gt; &amp; more" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<style>" in page and "FAILED" in page
    for result in _results():
        assert result.check.id in page


@pytest.mark.parametrize("status", ["pass", "skip", "warn"])
def test_a_run_without_failures_passes(status: str) -> None:
    results = [r for r in _results() if r.status == status]
    assert results and RUN.exit_code(results) == 0
    assert "verdict: passed" in terminal(results, RUN)


def test_the_verdict_says_how_many_checks_were_not_judged() -> None:
    results = [r for r in _results() if r.status in ("pass", "skip")]
    line = terminal(results, RUN).splitlines()[-1]
    assert line == "verdict: passed (1 of 2 checks skipped: not judged, see their reasons)"
    assert "1 of 2 checks skipped" in render_html(results, RUN)
    passed = [r for r in results if r.status == "pass"]
    assert terminal(passed, RUN).splitlines()[-1] == "verdict: passed"
