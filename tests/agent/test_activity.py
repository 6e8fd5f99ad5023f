"""The device's running state: `Activity` and its table, driven through the core's events."""

from __future__ import annotations

import random

import pytest
from core_harness import IDENTITY, Harness, answer, config, offer

from agent.core.agent import Agent
from agent.core.effects import DownloadBundle, SendRequest
from agent.core.events import (
    AppStarted,
    CheckRequested,
    DownloadFailed,
    DownloadFinished,
    ResponseReceived,
    TimerFired,
)
from agent.core.lifecycle import ACTIVITY_TRANSITIONS, Activity, DeviceState, Move, advance
from agent.errors import TransportError
from agent.protocol.capgo import CapgoDialect


def agent(**overrides: object) -> Agent:
    return Agent(
        config(**overrides),
        IDENTITY,
        DeviceState(),
        [],
        rng=random.Random(1),
        dialect=CapgoDialect(),
    )


def test_every_activity_has_a_row_and_every_move_a_source() -> None:
    assert set(ACTIVITY_TRANSITIONS) == set(Activity)
    assert {m for row in ACTIVITY_TRANSITIONS.values() for m in row} == set(Move)


@pytest.mark.parametrize(
    ("activity", "move"),
    [
        (Activity.DOWNLOADING, Move.CHECK_SENT),  # one check or one download at a time
        (Activity.CHECKING, Move.CHECK_SENT),
        (Activity.IDLE, Move.ANSWERED),  # no answer without a check
        (Activity.IDLE, Move.DOWNLOAD_ENDED),
        (Activity.DOWNLOADING, Move.STARTED),  # a cold start never lands mid-download
    ],
)
def test_a_move_the_table_does_not_list_is_a_bug(activity: Activity, move: Move) -> None:
    with pytest.raises(RuntimeError, match="not allowed"):
        advance(activity, move)


def test_a_launch_check_then_a_download_then_idle() -> None:
    core = agent(auto_update="onLaunch")
    effects = core.handle(AppStarted(), 1.0)
    (check,) = [e for e in effects if isinstance(e, SendRequest) and e.request.name == "/updates"]
    assert core.activity is Activity.LAUNCH_CHECKING
    status, headers, body = offer("1.0.1")
    effects = core.handle(ResponseReceived(check.request.name, status, headers, body), 2.0)
    (download,) = [e for e in effects if isinstance(e, DownloadBundle)]
    assert core.activity is Activity.DOWNLOADING
    effects = core.handle(CheckRequested(), 3.0)
    assert not [e for e in effects if isinstance(e, SendRequest) and e.request.name == "/updates"]
    core.handle(DownloadFinished(download.bundle_id), 4.0)
    assert core.activity is Activity.IDLE
    assert core.state.current == download.bundle_id  # onLaunch: the launch check applies


def test_a_failed_download_ends_the_activity_and_a_stray_end_is_ignored() -> None:
    core = agent(auto_update="always")
    core.handle(AppStarted(), 1.0)
    status, headers, body = offer("1.0.1")
    effects = core.handle(ResponseReceived("/updates", status, headers, body), 2.0)
    (download,) = [e for e in effects if isinstance(e, DownloadBundle)]
    assert core.handle(DownloadFinished("another-id"), 3.0) == []
    assert core.activity is Activity.DOWNLOADING
    core.handle(DownloadFailed(download.bundle_id, TransportError("reset")), 4.0)
    assert core.activity is Activity.IDLE


def test_a_launch_check_held_back_by_a_429_is_still_the_launch_check() -> None:
    """The first check answered after a cold start is the launch check, even when the block
    of a 429 delayed it: `onLaunch` applies its offer at once."""
    h = Harness(config=config(auto_update="onLaunch"))
    h.updates.append(answer({"error": "too_many_requests"}, 429, **{"retry-after": "30"}))
    h.run(AppStarted())
    h.restart()  # a new process: blocked, so its launch check is not sent
    h.run(AppStarted())
    assert h.agent.activity is Activity.LAUNCHED
    h.now += 60
    h.updates.append(offer("1.0.1"))
    h.run(TimerFired())  # nothing due: still launched, nothing sent
    h.run(CheckRequested())
    assert h.agent.activity is Activity.IDLE
    assert h.current_version() == "1.0.1"
