"""The run's virtual time: exact device clocks, the step rule and barriers (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from simulator.clock import SIM_EPOCH, VirtualTime


def run(vt: VirtualTime, *work: object) -> list[object]:
    async def main() -> list[object]:
        results = await asyncio.gather(vt.run(), *(vt.participate(w) for w in work))  # type: ignore[arg-type]
        return list(results[1:])

    return asyncio.run(main())


def test_devices_keep_exact_time_and_steps_gather_a_window() -> None:
    vt = VirtualTime(window_s=10.0)
    seen: list[tuple[str, float, float]] = []  # (who, device time, step start)

    async def device(name: str, sleeps: list[float]) -> float:
        clock = vt.clock()
        for s in sleeps:
            await clock.sleep(s)
            seen.append((name, clock.t, vt.t))
        assert clock.now() == SIM_EPOCH + clock.t
        return clock.t

    assert run(vt, device("a", [3.0, 0.06, 100.0]), device("b", [7.5, 0.25])) == [103.06, 7.75]
    # a at 3 and b at 7.5 share the step that starts at 3; inside it a goes on to 3.06 at once
    assert ("a", 3.0, 3.0) in seen and ("b", 7.5, 3.0) in seen and ("a", 3.06, 3.0) in seen
    assert ("a", 103.06, 103.06) in seen  # 100 s later: a step of its own
    assert vt.steps == 2


def test_a_barrier_runs_alone_before_what_is_due_at_its_time() -> None:
    vt = VirtualTime(window_s=3600.0)
    log: list[str] = []

    async def timeline() -> None:
        await vt.until(4.0, barrier=True)
        log.append(f"step at {vt.t:g}")

    async def device(wake: float) -> None:
        clock = vt.clock()
        await clock.sleep_until(wake)
        log.append(f"device at {clock.t:g}")

    run(vt, device(5.0), device(4.0), device(1.0), timeline())
    assert log == ["device at 1", "step at 4", "device at 4", "device at 5"]


def test_the_clock_waits_for_real_work_in_a_step() -> None:
    vt = VirtualTime(window_s=1.0)
    order: list[str] = []

    async def slow(clock_wait: float, real_wait: float, name: str) -> None:
        clock = vt.clock()
        await clock.sleep(clock_wait)
        await asyncio.sleep(real_wait)  # real I/O: costs no simulated time
        order.append(f"{name} done at {clock.t:g}")

    run(vt, slow(1.0, 0.05, "real work"), slow(2.0, 0.0, "next step"))
    assert order == ["real work done at 1", "next step done at 2"]


def test_a_cancelled_participant_does_not_stall_the_clock() -> None:
    vt = VirtualTime()

    async def main() -> float:
        async def stuck() -> None:
            await vt.clock().sleep(50.0)

        clock = vt.clock()

        async def ok() -> None:
            await clock.sleep(100.0)

        task = asyncio.ensure_future(vt.participate(stuck()))
        runner = asyncio.ensure_future(vt.run())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(vt.participate(ok()), runner, return_exceptions=False)
        return clock.t

    assert asyncio.run(main()) == 100.0


@pytest.mark.parametrize(("concurrency", "most"), [(None, 6), (2, 2)])
def test_concurrency_bounds_the_devices_working_at_once_not_their_times(
    concurrency: int | None, most: int
) -> None:
    vt = VirtualTime(window_s=10.0, concurrency=concurrency)
    working = seen = 0

    async def device(wake: float) -> float:
        nonlocal working, seen
        clock = vt.clock()
        await clock.sleep_until(wake)
        working += 1
        seen = max(seen, working)
        await asyncio.sleep(0.01)  # real work: the others of the step may start meanwhile
        await clock.sleep(0.5)  # inside the step: goes on at once
        working -= 1
        await clock.sleep(100.0)  # parks: another one may start
        return clock.t

    wakes = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert run(vt, *(device(w) for w in wakes)) == [w + 100.5 for w in wakes]
    assert seen == most


def test_window_and_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        VirtualTime(window_s=0)
    with pytest.raises(ValueError, match="concurrency"):
        VirtualTime(concurrency=0)


def test_housekeeping_runs_between_steps_once_a_simulated_hour() -> None:
    busy = 0
    calls: list[tuple[float, int]] = []  # (step clock, participants running)
    vt = VirtualTime(window_s=60.0, housekeeping=lambda: calls.append((vt.t, busy)))

    async def device(every_s: float, until_s: float) -> None:
        nonlocal busy
        clock = vt.clock()
        while clock.t < until_s:
            await clock.sleep(every_s)
            busy += 1
            await asyncio.sleep(0)  # work in the step: housekeeping must not run meanwhile
            busy -= 1

    run(vt, device(600.0, 4 * 3600), device(900.0, 4 * 3600))
    assert [t for t, _ in calls] == [3600.0, 7200.0, 10800.0]  # then nobody waits any more
    assert all(running == 0 for _, running in calls)
