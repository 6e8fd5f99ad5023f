"""Each plugin profile's request shapes and answer classification, what an answer means
whatever the profile, and the bounded retry of an artefact that failed verification."""

from __future__ import annotations

import json
import uuid

from core_harness import Harness, answer, config, offer
from hypothesis import given
from hypothesis import strategies as st

from agent.config import AgentConfig, DeviceIdentity
from agent.core.events import AppStarted, MovedToForeground
from agent.core.lifecycle import DeviceState, from_json, to_json
from agent.core.retry import ArtefactFailures
from agent.errors import VerificationError
from agent.protocol.answers import UP_TO_DATE_CODES, finding, meaning
from agent.protocol.base import DeviceInfo, NoUpdate, StatEvent
from agent.protocol.capgo import CapgoDialect
from agent.protocol.profiles import PLUGIN_PROFILES, get_profile

NO_KIND = {"error": "no_new_version_available", "message": "No new version available"}


def _info(plugin: str) -> DeviceInfo:
    profile = get_profile(plugin)
    ident = DeviceIdentity(
        str(uuid.UUID(int=7)), "com.example.app", "android", "1.0.0",
        plugin_version=profile.plugin_version,
    )  # fmt: skip
    return DeviceInfo(ident, config(plugin=plugin), "1.0.0", None, None)


def _check(plugin: str, body: dict[str, object], status: int = 200) -> object:
    dialect = CapgoDialect(get_profile(plugin))
    return dialect.parse_check(status, {}, json.dumps(body).encode(), 0.0)


def test_stats_shape_per_profile() -> None:
    event = StatEvent(0, "set", "1.0.1", 1_000, old_version_name="builtin")
    for plugin, batched in (("plugin-6", False), ("plugin-7", False), ("plugin-8", True)):
        dialect = CapgoDialect(get_profile(plugin))
        body = json.loads(dialect.stats_request(_info(plugin), [event]).body or b"")
        item = body[0] if batched else body
        assert isinstance(body, list) is batched
        assert item["action"] == "set" and item["old_version_name"] == "builtin"
        assert item["plugin_version"] == get_profile(plugin).plugin_version
        assert dialect.stats_batch_size == (100 if batched else 1)


def test_user_agent_and_check_body_carry_the_profile_version() -> None:
    request = CapgoDialect(get_profile("plugin-6")).check_request(_info("plugin-6"))
    assert json.loads(request.body or b"")["plugin_version"] == "6.14.28"
    assert request.headers["user-agent"].startswith("CapacitorUpdater/6.14.28 ")


def test_plugin_6_and_7_post_one_event_per_request() -> None:
    h = Harness(config=config(plugin="plugin-6"))
    h.updates.append(offer("1.0.1"))
    h.run(AppStarted())
    h.tick(120)
    stats_posts = [r for r in h.sent if r.name == "/stats"]
    assert len(stats_posts) >= 5
    assert all(isinstance(json.loads(r.body), dict) for r in stats_posts)
    assert "download_complete" in h.posted_stats


def test_no_kind_up_to_date_answer_per_profile() -> None:
    assert _check("plugin-8", NO_KIND) == NoUpdate(
        "failed", "no_new_version_available", "No new version available"
    )
    for plugin in ("plugin-6", "plugin-7"):
        result = _check(plugin, NO_KIND)
        assert isinstance(result, NoUpdate) and result.kind == "up_to_date"


def test_older_plugins_do_not_read_kind() -> None:
    blocked = {"error": "disable_device", "message": "Device is disabled", "kind": "blocked"}
    assert _check("plugin-8", blocked).kind == "blocked"  # type: ignore[attr-defined]
    assert _check("plugin-7", blocked).kind == "failed"  # type: ignore[attr-defined]
    builtin = {"error": "already_on_builtin", "kind": "up_to_date"}
    assert _check("plugin-6", builtin).kind == "failed"  # type: ignore[attr-defined]


def test_device_reports_download_fail_for_no_kind_but_the_finding_names_the_server() -> None:
    h = Harness()
    h.updates.append(answer(NO_KIND))
    h.run(AppStarted())
    assert "download_fail" in h.actions()  # faithful to plugin 8
    (result,) = (p for n, p in h.emitted if n == "updateCheckResult")
    assert meaning(result["error"], None, result["statusCode"]) == "up_to_date"
    found = finding("plugin-8", True, result["kind"], result["error"], None, 200)
    assert found is not None and found.code == "no_kind"
    assert "without a valid `kind`" in found.text
    h6 = Harness(config=config(plugin="plugin-6"))
    h6.updates.append(answer(NO_KIND))
    h6.run(AppStarted())
    assert "download_fail" not in h6.actions() and "noNeedUpdate" in h6.event_names()


def test_findings_fire_only_when_device_and_meaning_differ() -> None:
    assert finding("plugin-8", True, "up_to_date", "no_new_version_available", None, 200) is None
    assert finding("plugin-8", True, "failed", "no_channel", None, 200) is None
    assert finding("plugin-8", True, "failed", "no_new_version_available", None, 501) is None
    found = finding("plugin-7", False, "failed", "disable_device", "blocked", 200)
    assert found is not None and found.code == "kind_not_read"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)


@st.composite
def up_to_date_answers(draw: st.DrawFn) -> dict[str, object]:
    """An up-to-date /updates answer body of any shape: any extra fields, any `kind` or none,
    except a `kind` that says otherwise (the server's own word is kept)."""
    body = draw(st.dictionaries(st.text(max_size=10), _JSON, max_size=4))
    body["error"] = draw(st.sampled_from(sorted(UP_TO_DATE_CODES)))
    kind = draw(
        st.one_of(st.none(), st.sampled_from(["up_to_date", "UP_TO_DATE", "", "ok"]), _JSON)
    )
    if kind is None or kind in ("blocked", "failed"):
        body.pop("kind", None)
    else:
        body["kind"] = kind
    return body


PLUGINS = st.sampled_from(sorted(PLUGIN_PROFILES))


@given(body=up_to_date_answers(), plugin=PLUGINS)
def test_no_classification_makes_an_up_to_date_answer_a_failure_verdict(
    body: dict[str, object], plugin: str
) -> None:
    result = _check(plugin, body)
    assert isinstance(result, NoUpdate)
    assert meaning(result.error, body.get("kind"), result.status) == "up_to_date"
    found = finding(plugin, get_profile(plugin).reads_kind, result.kind, result.error,
                    body.get("kind"), result.status)  # fmt: skip
    assert (found is not None) == (result.kind == "failed")


# -- bounded retry of an artefact that failed verification ---------------------------------


def test_flipped_transfer_then_clean_ones_the_release_lands() -> None:
    h = Harness(config=config(artefact_retry_backoff_s=600.0))
    h.downloads.append(VerificationError("checksum_fail", "bad"))
    h.updates.append(offer("1.0.1"))
    h.run(AppStarted())
    assert "checksum_fail" in h.actions()
    h.updates.append(offer("1.0.1"))
    h.effects.clear()
    h.run(MovedToForeground())  # within the backoff: held back
    assert h.actions().count("download_zip_start") == 1
    assert len(h.agent.state.rejected_artefacts) == 1
    h.now += 601
    h.updates.append(offer("1.0.1"))
    h.run(MovedToForeground())  # a clean transfer: downloaded and queued
    assert h.actions().count("download_zip_start") == 2
    assert h.agent.state.rejected_artefacts == {}
    assert any(b.version == "1.0.1" for b in h.agent.state.bundles.values())


def test_retries_are_bounded_within_the_window_then_start_again() -> None:
    cfg = config(artefact_retries=2, artefact_retry_backoff_s=10.0, artefact_retry_window_s=1_000.0)
    h = Harness(config=cfg)
    downloads = 0
    for _ in range(6):
        h.downloads.append(VerificationError("checksum_fail", "bad"))
        h.updates.append(offer("1.0.1"))
        before = h.actions().count("download_zip_start")
        h.run(MovedToForeground())
        downloads += h.actions().count("download_zip_start") - before
        h.now += 100
    assert downloads == 3  # the first try and 2 retries, within the 1 000 s window
    assert not any(b.version == "1.0.1" for b in h.agent.state.bundles.values())
    h.now += 1_000  # the window has passed: a new round, and this transfer is clean
    h.downloads.clear()
    h.updates.append(offer("1.0.1"))
    h.run(MovedToForeground())
    assert any(b.version == "1.0.1" for b in h.agent.state.bundles.values())


def test_a_version_that_failed_to_boot_stays_refused() -> None:
    h = Harness(config=config(artefact_retry_window_s=10.0))
    # failed with no content identity recorded: the label alone is refused
    h.disk_state = DeviceState(
        failed_versions=frozenset({"1.0.1"}), failed_unidentified=frozenset({"1.0.1"})
    )
    h.restart()
    h.now += 10 * 86_400
    h.updates.append(offer("1.0.1"))
    h.run(AppStarted())
    assert "download_zip_start" not in h.actions()


def test_rejected_artefacts_persist_and_old_states_load() -> None:
    state = DeviceState(rejected_artefacts={"1.0.1:ab": ArtefactFailures(2, 5.0, 9.0)})
    assert from_json(json.loads(json.dumps(to_json(state)))) == state
    old = to_json(DeviceState())
    old["rejected_artefacts"] = ["1.0.1:ab"]  # written before the bounded retry
    loaded = from_json(old)
    assert loaded.rejected_artefacts == {"1.0.1:ab": ArtefactFailures(1, 0.0, 0.0)}


def test_retry_options_are_validated() -> None:
    for bad in ({"artefact_retries": -1}, {"artefact_retry_window_s": 0}, {"plugin": "plugin-5"}):
        try:
            AgentConfig(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_plugin_6_ignores_a_manifest() -> None:
    body = {
        "version": "1.0.1", "url": "https://ota.test/1.0.1.zip", "checksum": "a" * 64,
        "session_key": "",
        "manifest": [{"file_name": "index.html", "file_hash": "b" * 64,
                      "download_url": "https://ota.test/f"}],
    }  # fmt: skip
    assert _check("plugin-6", body).manifest is None  # type: ignore[attr-defined]
    assert _check("plugin-8", body).manifest  # type: ignore[attr-defined]


@given(body=up_to_date_answers(), plugin=PLUGINS)
def test_a_fleets_verdict_never_counts_an_up_to_date_answer_as_a_failure(
    body: dict[str, object], plugin: str
) -> None:
    """Through a real agent (core) and the simulator's metrics, whatever the answer's shape."""
    from simulator.metrics import DeviceOutcome, Metrics

    h = Harness(config=config(plugin=plugin))
    h.updates.append(answer(body))
    h.run(AppStarted())
    metrics, device = Metrics(), DeviceOutcome(0, "d", "ios", "17", "lan", "daily", "production")
    for name, payload in h.emitted:
        if name == "updateCheckResult":
            metrics.check_result(device, get_profile(plugin), payload)
    for action, version in h.reported:
        metrics.stat(device, action, version, 1.0)
    assert not metrics.failures()
