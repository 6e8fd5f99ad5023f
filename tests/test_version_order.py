"""One version order: the agent's anti-rollback, the reference server and the fleet metrics
agree with semver 2.0.0 precedence (checked against the spec's rules written out here), with
pre-releases, build metadata and Capgo's coercion of short versions (`1.2` -> `1.2.0`)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from agent.core.versions import is_downgrade, raise_floor
from simulator.metrics import BUILTIN, DeviceOutcome, Metrics
from simulator.server import semver as server_semver

NUMBER = st.integers(0, 12)
IDENTIFIER = st.one_of(
    NUMBER.map(str), st.sampled_from(["alpha", "beta", "rc", "RC", "a-1", "0a", "x-"])
)


@st.composite
def versions(draw: st.DrawFn) -> str:
    """A version as users write them: full semver with optional pre-release and build
    metadata, or a short `M` / `M.m` that Capgo coerces."""
    major, minor, patch = draw(NUMBER), draw(NUMBER), draw(NUMBER)
    form = draw(st.sampled_from(["full", "full", "full", "major", "minor"]))
    if form == "major":
        return str(major)
    if form == "minor":
        return f"{major}.{minor}"
    text = f"{major}.{minor}.{patch}"
    if draw(st.booleans()):
        text += "-" + ".".join(draw(st.lists(IDENTIFIER, min_size=1, max_size=3)))
    if draw(st.booleans()):
        text += "+" + ".".join(draw(st.lists(IDENTIFIER, min_size=1, max_size=2)))
    return text


def spec_compare(a: str, b: str) -> int:
    """semver.org §11, written from the spec for this test: -1, 0 or 1."""

    def split(text: str) -> tuple[list[int], list[str]]:
        text = text.split("+", 1)[0]
        core, _, pre = text.partition("-")
        numbers = [int(n) for n in core.split(".")]
        numbers += [0] * (3 - len(numbers))  # Capgo's coercion of `M` and `M.m`
        return numbers, pre.split(".") if pre else []

    (core_a, pre_a), (core_b, pre_b) = split(a), split(b)
    if core_a != core_b:
        return -1 if core_a < core_b else 1
    if not pre_a or not pre_b:  # a release is newer than its pre-releases
        return (len(pre_a) < len(pre_b)) - (len(pre_a) > len(pre_b)) if pre_a or pre_b else 0
    for x, y in zip(pre_a, pre_b, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() or y.isdigit():  # numeric identifiers are lower than alphanumeric
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pre_a) > len(pre_b)) - (len(pre_a) < len(pre_b))


def outcome(*running: str, confirmed: set[str]) -> DeviceOutcome:
    device = DeviceOutcome(0, "d", "ios", "17", "wifi", "good", "production")
    device.running += [(float(t), v) for t, v in enumerate(running, start=1)]
    device.confirmed = confirmed
    return device


@given(versions(), versions())
def test_agent_server_and_metrics_agree_with_semver_precedence(a: str, b: str) -> None:
    older = spec_compare(a, b) < 0
    assert server_semver.less_than(a, b) is older
    assert is_downgrade(a, floor=b) is older
    # the fleet report: `a` booted after `b` was confirmed is a downgrade exactly when older
    assert outcome(b, a, confirmed={b}).downgraded() is older
    # raising the floor keeps the newer one
    assert spec_compare(raise_floor(b, a) or "", b if older else a) == 0


@given(st.lists(versions(), min_size=1, max_size=6))
def test_the_report_lists_versions_in_semver_order(names: list[str]) -> None:
    metrics = Metrics()
    metrics.devices.append(outcome(*names, confirmed=set()))
    listed = metrics.versions()
    assert listed[-1] == BUILTIN
    listed = listed[:-1]
    assert sorted(listed) == sorted(set(names))
    for x, y in itertools.pairwise(listed):
        assert spec_compare(x, y) <= 0, (x, y)
    # the order does not depend on the order versions were seen (set iteration, hash seed)
    again = Metrics()
    again.devices.append(outcome(*reversed(names), confirmed=set()))
    assert again.versions()[:-1] == listed


def test_a_release_after_its_release_candidate_is_an_upgrade() -> None:
    device = outcome("1.0.0-rc.1", "1.0.0", confirmed={"1.0.0-rc.1", "1.0.0"})
    assert not device.downgraded()
    metrics = Metrics()
    metrics.devices.append(device)
    assert metrics.versions() == ["1.0.0-rc.1", "1.0.0", BUILTIN]
    assert outcome("1.0.0", "1.0.0-rc.1", confirmed={"1.0.0"}).downgraded()


@given(st.text(max_size=12))
def test_server_coercion_is_capgos_fix_semver(text: str) -> None:
    """`1` -> `1.0.0`, `1.2` -> `1.2.0`, full versions unchanged, anything else refused."""
    dots = text.count(".")
    fixed = text + (".0.0" if dots == 0 else ".0" if dots == 1 else "")
    coerced = server_semver.coerce(text)
    assert coerced in (None, fixed)
    assert (coerced is not None) == (server_semver.parse(fixed) is not None)


def test_coercion_examples() -> None:
    assert server_semver.coerce("1") == "1.0.0"
    assert server_semver.coerce("1.2") == "1.2.0"
    assert server_semver.coerce("1.2.3-rc.1+7") == "1.2.3-rc.1+7"
    for bad in ("", "v1.2.3", "1.2.3.4", "01.2", "1.2-rc", "1.0.0\n", "１.0.0", "unknown"):
        assert server_semver.coerce(bad) is None, bad
    assert not server_semver.less_than("1.0.0-rc.1", "not-a-version")
    assert is_downgrade("not-a-version", floor="1.0.0")  # the agent refuses what it can't order
