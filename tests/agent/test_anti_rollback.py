"""Anti-rollback: content confirmed here is never installed again as a rollback, and no label
(unauthenticated in Capgo modes) can lock a device out of a genuine newer release."""

from __future__ import annotations

import json

import pytest
from core_harness import Harness, answer, offer
from core_harness import config as make_config
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.config import AgentConfig
from agent.core.effects import DownloadBundle
from agent.core.events import AppReady, AppStarted, MovedToBackground, MovedToForeground
from agent.core.lifecycle import BUILTIN, from_json, to_json
from agent.core.versions import is_downgrade, raise_floor
from agent.errors import VerificationError


def confirmed(*versions: str, config: AgentConfig | None = None, **overrides: object) -> Harness:
    """A device that installed, booted and confirmed each of `versions` in turn (atBackground)."""
    h = Harness(config=config or make_config(**overrides))
    h.run(AppStarted())
    h.run(AppReady())
    for version in versions:
        h.updates.append(offer(version))
        h.run(MovedToForeground())
        h.run(MovedToBackground())
        h.run(AppReady(h.reloads[-1].boot_id))
        assert h.current_version() == version
    return h


def offer_again(h: Harness, version: str, checksum: str | None = None) -> None:
    h.updates.append(offer(version, checksum))
    h.run(MovedToForeground())
    h.run(MovedToBackground())


@pytest.mark.parametrize(
    ("floor", "confirmed_version", "expected"),
    [
        (None, "1.0.1", "1.0.1"),
        ("1.0.2", "1.0.1", "1.0.2"),
        ("1.0.2", "1.0.10", "1.0.10"),  # numeric, not lexical
        ("1.0.2-rc.1", "1.0.2", "1.0.2"),  # a release is newer than its pre-release
        ("1.0.2", "not-semver", "1.0.2"),  # never raises the floor
        (None, "not-semver", None),
    ],
)
def test_floor_is_the_highest_semver_confirmed(
    floor: str | None, confirmed_version: str, expected: str | None
) -> None:
    assert raise_floor(floor, confirmed_version) == expected


@pytest.mark.parametrize(
    ("version", "floor", "expected"),
    [
        ("1.0.1", "1.0.2", True),
        ("1.0.2", "1.0.2", False),
        ("1.0.10", "1.0.9", False),
        ("1.0.2-rc.1", "1.0.2", True),
        ("1.0.2+build.7", "1.0.2", False),  # build metadata does not order versions
        ("v1.0.3", "1.0.2", True),  # cannot be compared: refused
    ],
)
def test_is_downgrade(version: str, floor: str, expected: bool) -> None:
    assert is_downgrade(version, floor) is expected


def test_older_offer_is_refused_reported_and_never_fetched() -> None:
    h = confirmed("1.0.1", "1.0.2")
    downloads = len(h.sent)
    offer_again(h, "1.0.1")  # a replay of the genuine 1.0.1
    assert h.current_version() == "1.0.2" and h.agent.state.next is None
    assert not any(r.url.endswith("1.0.1.zip") for r in h.sent[downloads:])
    checks = [p for n, p in h.emitted if n == "updateCheckResult"]
    assert checks[-1]["kind"] == "failed" and checks[-1]["error"] == "downgrade_refused"
    assert checks[-1]["version"] == "1.0.1"
    assert ("download_fail", "1.0.1") in h.reported
    posted = [e for r in h.sent if r.name == "/stats" for e in json.loads(r.body or b"[]")]
    metadata = [e.get("metadata") for e in posted if e["action"] == "download_fail"]
    metadata += [dict(e.metadata) for e in h.agent.pending_stats if e.action == "download_fail"]
    assert metadata == [{"reason": "downgrade_refused", "highest_confirmed": "1.0.2"}]
    # the same offer again: refused quietly (reported once per run), still never fetched
    reported, emitted = h.actions().count("download_fail"), len(h.emitted)
    offer_again(h, "1.0.1")
    assert h.actions().count("download_fail") == reported
    assert [n for n, _ in h.emitted[emitted:]] == ["noNeedUpdate"]
    assert h.current_version() == "1.0.2"


def test_a_bundle_still_on_disk_is_not_reactivated_either() -> None:
    h = confirmed("1.0.1", "1.0.2", auto_delete_previous=False)
    assert any(b.version == "1.0.1" for b in h.agent.state.bundles.values())
    offer_again(h, "1.0.1")
    assert h.current_version() == "1.0.2"


def test_allow_downgrade_installs_the_older_offer_as_the_plugin_does() -> None:
    h = confirmed("1.0.1", "1.0.2", allow_downgrade=True)
    offer_again(h, "1.0.1", checksum="f" * 64)
    assert h.current_version() == "1.0.1"
    assert "downgrade_refused" not in json.dumps(h.emitted)


def test_revert_to_builtin_stays_allowed() -> None:
    h = confirmed("1.0.2")
    h.updates.append(answer({"version": "builtin"}))
    h.run(MovedToForeground())
    assert h.agent.state.current == BUILTIN
    assert h.agent.state.highest_confirmed == "1.0.2"  # builtin does not lower the floor


def test_unconfirmed_versions_do_not_raise_the_floor() -> None:
    """A device that rolled back locally (1.0.2 never confirmed) still takes 1.0.1 back, and a
    device that never went past the target is not affected: the server's rollback works."""
    h = confirmed("1.0.1")
    offer_again(h, "1.0.2")  # boots 1.0.2, which never confirms
    h.now += h.config.app_ready_timeout_s + 1
    h.tick(0)
    assert h.current_version() == "1.0.1" and h.agent.state.highest_confirmed == "1.0.1"
    h2 = confirmed("1.0.0-beta.1")
    offer_again(h2, "1.0.1")
    assert h2.current_version() == "1.0.1"


def test_a_label_alone_never_refuses_content_never_confirmed_here() -> None:
    """The label is unauthenticated: an older or non-semver label on new content is taken (the
    server's channel rollback reaches a device that never ran the older content)."""
    h = confirmed("1.0.2")
    offer_again(h, "nightly-42")
    assert h.current_version() == "nightly-42"
    offer_again(h, "1.0.1")
    assert h.current_version() == "1.0.1" and h.agent.state.highest_confirmed == "1.0.2"
    fresh = confirmed("nightly-41")  # no semver floor: nothing to compare with, installed
    assert fresh.agent.state.highest_confirmed is None


def test_floor_survives_a_restart_and_old_state_files_load() -> None:
    h = confirmed("1.0.1", "1.0.2")
    h.restart()
    assert h.agent.state.highest_confirmed == "1.0.2"
    offer_again(h, "1.0.1")
    assert h.current_version() == "1.0.2"
    data = to_json(h.agent.state)
    for key in ("highest_confirmed", "confirmed_content", "failed_content"):
        del data[key]  # a state written before these existed
    for bundle in data["bundles"]:
        del bundle["content"]
    old = from_json(data)
    assert old.highest_confirmed is None and old.confirmed_content == {}


def test_old_state_files_keep_refusing_labels_that_failed_without_content() -> None:
    """A state written before `failed_unidentified`: a failed label with no content recorded
    under it stays refused by label; one whose content is recorded does not."""
    h = confirmed("1.0.1")
    data = to_json(h.agent.state)
    data["failed_versions"] = ["1.0.2", "1.0.3"]
    data["failed_content"] = {content("1.0.3"): "1.0.3"}
    del data["failed_unidentified"]
    old = from_json(data)
    assert old.failed_unidentified == {"1.0.2"}


def test_a_queued_bundle_is_judged_by_content_when_a_newer_one_confirms() -> None:
    h = Harness(config=make_config())
    h.updates.append(offer("1.0.2"))
    h.run(AppStarted())  # 1.0.2 downloaded and queued
    h.run(MovedToBackground())  # 1.0.2 boots, not confirmed yet: no floor
    h.updates.append(offer("1.0.1"))
    h.run(MovedToForeground())  # 1.0.1 (never confirmed here) downloaded and queued as next
    queued = h.agent.state.next
    assert queued is not None and h.agent.state.bundles[queued].version == "1.0.1"
    h.run(AppReady(h.reloads[-1].boot_id))  # 1.0.2 confirmed: 1.0.1's label alone is no reason
    assert h.agent.state.next == queued
    h.run(MovedToBackground())
    assert h.current_version() == "1.0.1"


def test_the_previous_fallback_queued_again_is_dropped_once() -> None:
    """Regression (found by the simulator's replay MITM): 1.0.1 is the fallback and queued
    again while 1.0.2 boots; confirming 1.0.2 drops it exactly once."""
    h = confirmed("1.0.1")
    h.updates.append(offer("1.0.2"))
    h.run(MovedToForeground())
    h.run(MovedToBackground())  # 1.0.2 boots, unconfirmed; 1.0.1 is the fallback
    fallback = h.agent.state.fallback
    h.updates.append(offer("1.0.1"))
    h.run(MovedToForeground())  # the floor is 1.0.1: not a downgrade yet, re-queued
    assert h.agent.state.next == fallback
    h.run(AppReady(h.reloads[-1].boot_id))
    assert h.agent.state.next is None and fallback not in h.agent.state.bundles
    assert h.actions().count("delete") == 1 and h.violations == []
    h.run(MovedToBackground())
    assert h.current_version() == "1.0.2"


# -- relabelled replays (issue 16): the version label is not signed in Capgo modes -----------

GENUINE = ["1.0.1", "1.0.2", "1.0.3"]  # published before the attack: the attacker has them all
NEWER = "1.0.4"  # published once the network is clean; its content is new


def content(version: str) -> str:
    """The (signed) checksum of the genuine release `version`, as `offer()` builds it."""
    return version.replace(".", "").ljust(64, "a")


def relabel(h: Harness, genuine: str, label: str) -> None:
    """A man in the middle serves `genuine`'s url, checksum and session key as `label`."""
    h.updates.append(offer(label, content(genuine)))
    h.run(MovedToForeground())
    h.run(MovedToBackground())
    if h.agent.state.boot is not None:
        h.run(AppReady(h.agent.state.boot.id))


def takes_newer_release(h: Harness, rounds: int = 3) -> bool:
    """The network is clean: the server offers NEWER at each check. Does the device get it?"""
    h.updates.clear()
    h.downloads.clear()
    for _ in range(rounds):
        h.updates.append(offer(NEWER))
        h.restart()
        h.run(AppStarted())
        h.run(MovedToBackground())
        boot = h.agent.state.boot
        h.run(AppReady(boot.id if boot else None))
    info = h.agent.state.bundles.get(h.agent.state.current)
    return info is not None and (info.version, info.checksum) == (NEWER, content(NEWER))


def test_relabel_of_confirmed_content_is_refused_and_never_raises_the_floor() -> None:
    """The audit's case: 1.0.1's genuine url/checksum/session_key labelled 999.0.0."""
    h = confirmed("1.0.1", "1.0.2")
    relabel(h, "1.0.1", "999.0.0")
    assert h.current_version() == "1.0.2" and h.agent.state.highest_confirmed == "1.0.2"
    checks = [p for n, p in h.emitted if n == "updateCheckResult"]
    assert checks[-1]["error"] == "relabelled_content" and checks[-1]["version"] == "999.0.0"
    posted = [e for r in h.sent if r.name == "/stats" for e in json.loads(r.body or b"[]")]
    metadata = [e.get("metadata") for e in posted if e["action"] == "download_fail"]
    metadata += [dict(e.metadata) for e in h.agent.pending_stats if e.action == "download_fail"]
    assert metadata == [{"reason": "relabelled_content", "confirmed_as": "1.0.1"}]
    assert takes_newer_release(h)


@pytest.mark.parametrize("history", [("1.0.2",), ("1.0.1", "1.0.2")])
def test_relabel_as_1_0_9_after_a_confirmed_1_0_2_cannot_lock_out_1_0_4(
    history: tuple[str, ...],
) -> None:
    h = confirmed(*history)
    relabel(h, "1.0.1", "1.0.9")
    if "1.0.1" in history:  # content seen here under its own label: refused
        assert h.current_version() == "1.0.2"
    else:  # never seen here: indistinguishable from a genuine 1.0.9 (documented)
        assert h.current_version() == "1.0.9" and h.agent.state.highest_confirmed == "1.0.9"
    assert takes_newer_release(h)


def test_fresh_device_given_old_content_as_1_0_3_still_takes_the_genuine_1_0_3() -> None:
    """On a fresh device the relabel cannot be detected (it runs 1.0.1 reporting 1.0.3), but
    the genuine 1.0.3 -- same label, other content -- is not taken for "already running"."""
    h = confirmed()
    relabel(h, "1.0.1", "1.0.3")
    assert h.current_version() == "1.0.3"
    relabel(h, "1.0.3", "1.0.3")
    current = h.agent.state.bundles[h.agent.state.current]
    assert (current.version, current.checksum) == ("1.0.3", content("1.0.3"))
    assert takes_newer_release(h)


def test_content_that_failed_to_boot_is_refused_under_any_label_but_no_other_content() -> None:
    h = confirmed("1.0.1")
    h.updates.append(offer("1.0.4", content("1.0.2")))  # old content under the next label
    h.run(MovedToForeground())
    h.run(MovedToBackground())
    h.tick(h.config.app_ready_timeout_s + 1)  # it never confirms: failed
    assert h.current_version() == "1.0.1" and "1.0.4" in h.agent.state.failed_versions
    relabel(h, "1.0.2", "1.0.5")  # the same content again, relabelled: refused
    assert h.current_version() == "1.0.1"
    assert takes_newer_release(h)  # the genuine 1.0.4 is other content: taken


STEPS = st.one_of(
    st.tuples(
        st.sampled_from(["offer", "tampered"]),
        st.sampled_from(GENUINE),
        st.sampled_from([*GENUINE, NEWER, "1.0.5", "1.0.9", "999.0.0", "0.0.1", "2.0.0-rc.1", "x"]),
    ),
    st.tuples(
        st.sampled_from(["foreground", "background", "ready", "boot_fails", "relaunch"]),
        st.none(),
        st.none(),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(STEPS, max_size=25),
    mode=st.sampled_from(["atBackground", "always"]),
)
# found by this test: 1.0.1's content fails to boot as "1.0.4", then again as "1.0.1"; the
# label "1.0.4" must not stay refused once the content is remembered under its last label
@example(
    steps=[
        ("offer", "1.0.1", NEWER),
        ("background", None, None),
        ("offer", "1.0.1", "1.0.1"),
        ("relaunch", None, None),
    ],
    mode="atBackground",
)
def test_no_hostile_sequence_locks_a_device_out_of_a_genuine_newer_release(
    steps: list[tuple[str, str | None, str | None]], mode: str
) -> None:
    """Any sequence of relabelled replays of the genuine releases, tampered downloads, boot
    failures and restarts; then a clean network publishing 1.0.4: the device takes it."""
    h = confirmed(config=make_config(auto_update=mode))
    for kind, genuine, label in steps:
        if genuine is not None and label is not None:
            h.updates.append(offer(label, content(genuine)))
            if kind == "tampered":
                h.downloads.append(VerificationError("checksum_fail", "bytes changed in transit"))
            h.run(MovedToForeground())
        elif kind == "foreground":
            h.run(MovedToForeground())
        elif kind == "background":
            h.run(MovedToBackground())
        elif kind == "ready":
            boot = h.agent.state.boot
            h.run(AppReady(boot.id if boot else None))
        elif kind == "boot_fails":
            h.run(MovedToBackground())
            h.tick(h.config.app_ready_timeout_s + 1)
        else:
            h.restart()
            h.run(AppStarted())
    assert takes_newer_release(h)


def test_relabelling_a_failed_checksum_buys_no_extra_fetch() -> None:
    """Padding oracle (issue 16, item 9): `decrypt_fail` and `checksum_fail` tell a padding
    error from a hash mismatch, but a signed checksum's retry budget is shared by every label:
    relabelling it ("1.0.2-a", "1.0.2-b", ...) to ask again within the backoff is refused
    before anything is fetched."""
    h = confirmed()
    h.downloads.append(VerificationError("decrypt_fail", "bad padding"))
    relabel(h, "1.0.2", "1.0.2")
    for label in ("1.0.2-a", "1.0.2-b", "9.0.0"):
        relabel(h, "1.0.2", label)
    fetched = [e for e in h.effects if isinstance(e, DownloadBundle)]
    assert len(fetched) == 1 and h.current_version() == "1.0.0"
    assert takes_newer_release(h)
