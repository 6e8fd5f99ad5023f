"""The dialect plumbing (docs/dialects.md): a scenario names the dialect (for the whole fleet
or per share), the fleet draws it apart from every other draw, each dialect's endpoints come
from one server base URL, and unknown dialect names are refused everywhere."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.protocol.registry import DIALECTS, dialect_for, dialect_spec
from simulator.fleet import plan_fleet
from simulator.preflight import endpoints
from simulator.publish import PublishError, publish
from simulator.scenario import ScenarioError, load_scenario, with_dialect

FLEET = """
[[fleet]]
share = 0.5
platform = "ios"
{first}
[[fleet]]
share = 0.5
platform = "android"
{second}
[[releases]]
version = "1.0.1"
[[timeline]]
at_h = 0
action = "publish"
version = "1.0.1"
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_scenario(str(path))


def test_a_scenario_names_the_dialect_for_all_or_per_share(tmp_path: Path) -> None:
    top = _load(tmp_path, 'dialect = "capgo"\n' + FLEET.format(first="", second=""))
    assert all(g.dialect == (("capgo", 1.0),) for g in top.groups)  # type: ignore[attr-defined]
    mixed = _load(
        tmp_path, FLEET.format(first="dialect = { capgo = 1 }", second='dialect = "capgo"')
    )
    assert [g.dialect for g in mixed.groups] == [(("capgo", 1.0),)] * 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('dialect = "hawkbit"\n' + FLEET.format(first="", second=""), "dialect"),
        (FLEET.format(first='dialect = "nope"', second=""), "fleet[0].dialect"),
    ],
)
def test_an_unknown_dialect_is_refused_with_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(key) + ": unknown value"):
        _load(tmp_path, text)


def test_the_dialect_draw_changes_no_other_draw() -> None:
    """A per-share mix is drawn from its own stream: the same seed gives the same devices
    (ids, platforms, networks...) whatever dialects they speak."""
    base = load_scenario("steady-rollout")
    plain = plan_fleet(base, 200, seed=5)
    groups = tuple(replace(g, dialect=(("capgo", 1.0), ("other", 1.0))) for g in base.groups)
    mixed = plan_fleet(replace(base, groups=groups), 200, seed=5)
    assert [replace(s, dialect="capgo") for s in mixed] == plain
    assert {s.dialect for s in mixed} == {"capgo", "other"}  # the draw did happen
    assert {s.dialect for s in plan_fleet(with_dialect(base, "capgo"), 50, 5)} == {"capgo"}


def test_each_dialect_places_its_endpoints_under_one_base() -> None:
    urls = endpoints("http://127.0.0.1:9/", dialect="capgo")
    assert (urls.updates, urls.stats, urls.channel) == (
        "http://127.0.0.1:9/updates",
        "http://127.0.0.1:9/stats",
        "http://127.0.0.1:9/channel_self",
    )
    given = endpoints("http://127.0.0.1:9", "http://127.0.0.1:8/u", dialect="capgo")
    assert given.updates == "http://127.0.0.1:8/u" and given.stats == "http://127.0.0.1:9/stats"
    with pytest.raises(ValueError, match="unknown dialect 'nope'"):
        endpoints("http://127.0.0.1:9", dialect="nope")


def test_the_registry_builds_what_the_config_names() -> None:
    assert set(DIALECTS) >= {"capgo"}
    assert dialect_for(AgentConfig()).check_request  # the Capgo dialect by default
    with pytest.raises(ValueError, match="unknown dialect 'nope'"):
        dialect_for(AgentConfig(dialect="nope"))
    with pytest.raises(ValueError, match="known: capgo"):
        dialect_spec("")


def test_publish_refuses_an_unknown_dialect_before_uploading(tmp_path: Path) -> None:
    class NoClient:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"publish called the server ({name}) for a bad dialect")

    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "index.html").write_text("x")
    with pytest.raises(PublishError, match="unknown dialect 'nope'"):
        publish(
            NoClient(),  # type: ignore[arg-type]
            app_id="com.example.app", version="1.0.1", channel="production",
            source=tmp_path / "dist", dialects=["nope"],
        )  # fmt: skip
