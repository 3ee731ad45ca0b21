"""Schedules driven by a controllable clock: intervals, cron, overlap, triggers, stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from cryptomon.probing.scheduler import (
    CronSchedule,
    IntervalSchedule,
    Scheduler,
    UnknownJobError,
    spread_offset,
)


class ManualClock:
    """Wall time that moves only when the test says so."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    async def sleep_until(self, when: float) -> None:
        if when <= self.now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((when, future))
        await future

    async def _settle(self) -> None:
        for _ in range(20):  # yield to woken tasks until they block again
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own moment, in order."""
        await self._settle()
        target = self.now + seconds
        while due := sorted((s for s in self._sleepers if s[0] <= target), key=lambda s: s[0]):
            when, future = due[0]
            self._sleepers.remove(due[0])
            self.now = when
            future.set_result(None)
            await self._settle()
        self.now = target
        await self._settle()

    async def jump(self, seconds: float) -> None:
        """Move time forward at once, as after the machine was suspended."""
        await self._settle()
        self.now += seconds
        for entry in [s for s in self._sleepers if s[0] <= self.now]:
            self._sleepers.remove(entry)
            entry[1].set_result(None)
        await self._settle()


START = 1_800_000_000.0  # a multiple of 300: five-minute cron slots line up with it


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def scheduler(clock: ManualClock) -> AsyncIterator[Scheduler]:
    made = Scheduler(clock, max_concurrency=4)
    yield made
    await made.stop()


async def test_interval_runs_at_fixed_rate_from_its_offset(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    runs: list[float] = []

    async def action(planned: float) -> None:
        runs.append(planned - START)

    scheduler.add_job("health_checks", "probe", "every 30s")
    scheduler.add_task("a", "health_checks", action, IntervalSchedule(30, offset=START + 5))
    scheduler.start()
    await clock.advance(100)
    assert runs == [5, 35, 65, 95]
    assert max(scheduler.stats.recent_lag) == 0
    [status] = scheduler.status()
    assert status.runs == 4 and status.next_run == START + 125


async def test_cron_schedule(scheduler: Scheduler, clock: ManualClock) -> None:
    runs: list[float] = []

    async def action(planned: float) -> None:
        runs.append(planned)

    scheduler.add_job("database_cleanup", "cleanup", "cron */5 * * * *")
    scheduler.add_task("cleanup", "database_cleanup", action, CronSchedule("*/5 * * * *"))
    scheduler.start()
    await clock.advance(901)
    assert [r - START for r in runs] == [300, 600, 900]
    minutes = {datetime.fromtimestamp(r, UTC).minute % 5 for r in runs}
    assert minutes == {0}


async def test_a_run_overlapping_its_previous_run_is_skipped_and_counted(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    release = asyncio.Event()
    started: list[float] = []

    async def stuck(planned: float) -> None:
        started.append(planned)
        await release.wait()

    scheduler.add_job("health_checks", "probe", "every 10s")
    scheduler.add_task("slow", "health_checks", stuck, IntervalSchedule(10))
    scheduler.start()
    await clock.advance(35)
    assert len(started) == 1
    assert scheduler.stats.skipped_overlap == 2
    release.set()
    await clock.advance(10)
    assert len(started) == 2
    [status] = scheduler.status()
    assert status.skipped == 2


async def test_slots_missed_while_suspended_are_skipped_not_replayed(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    runs: list[float] = []

    async def action(planned: float) -> None:
        runs.append(planned)

    scheduler.add_job("health_checks", "probe", "every 10s")
    scheduler.add_task("a", "health_checks", action, IntervalSchedule(10))
    scheduler.start()
    await clock.jump(55)
    await clock.advance(5)
    assert [r - START for r in runs] == [10, 60]
    assert scheduler.stats.skipped_late == 4


async def test_concurrency_limit_holds(scheduler: Scheduler, clock: ManualClock) -> None:
    release = asyncio.Event()
    active = 0
    peak = 0

    async def action(planned: float) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await release.wait()
        active -= 1

    scheduler.add_job("health_checks", "probe", "every 10s")
    for n in range(10):
        scheduler.add_task(f"p{n}", "health_checks", action, IntervalSchedule(10))
    scheduler.start()
    await clock.advance(10)
    assert peak == 4
    release.set()
    await clock.advance(0)
    assert active == 0


async def test_trigger_runs_a_job_now_and_unknown_ids_are_errors(
    scheduler: Scheduler, clock: ManualClock
) -> None:
    runs: list[str] = []

    def action_for(name: str) -> object:
        async def action(planned: float) -> None:
            runs.append(name)

        return action

    scheduler.add_job("health_checks", "probe all", "every 60s")
    scheduler.add_job("news_collection", "news", "every 600s")
    for name in ("a", "b", "c"):
        scheduler.add_task(name, "health_checks", action_for(name), IntervalSchedule(60))  # type: ignore[arg-type]
    scheduler.add_task("n", "news_collection", action_for("n"), None)  # type: ignore[arg-type]
    scheduler.start()
    assert await scheduler.run_now("health_checks") == 3
    assert sorted(runs) == ["a", "b", "c"]
    with pytest.raises(UnknownJobError) as caught:
        await scheduler.run_now("nope")
    assert "known jobs: health_checks, news_collection" in str(caught.value)


async def test_stop_cancels_in_flight_runs(scheduler: Scheduler, clock: ManualClock) -> None:
    finished = []

    async def forever(planned: float) -> None:
        await asyncio.Event().wait()
        finished.append(planned)

    scheduler.add_job("health_checks", "probe", "every 10s")
    scheduler.add_task("a", "health_checks", forever, IntervalSchedule(10))
    scheduler.start()
    await clock.advance(10)
    assert scheduler.status()[0].running == 1
    await scheduler.stop()
    assert finished == []
    assert scheduler.status()[0].running == 0
    assert not scheduler.running


def test_offsets_spread_many_providers_over_the_interval() -> None:
    offsets = [spread_offset(f"provider-{n}", 30.0) for n in range(100)]
    assert all(0 <= o < 30 for o in offsets)
    per_three_seconds = [sum(1 for o in offsets if b <= o < b + 3) for b in range(0, 30, 3)]
    assert max(per_three_seconds) <= 20
    assert spread_offset("CoinGecko", 30.0) == spread_offset("CoinGecko", 30.0)


async def test_runs_of_providers_another_instance_holds_are_left_to_it(clock: ManualClock) -> None:
    held = {"Mine"}
    scheduler = Scheduler(clock, owns=lambda provider: provider in held)
    runs: list[str] = []
    scheduler.add_job("health_checks", "probe", "every 10s")
    for name in ("Mine", "Theirs"):

        async def run(planned: float, name: str = name) -> None:
            runs.append(name)

        scheduler.add_task(name, "health_checks", run, IntervalSchedule(10), provider=name)
    scheduler.start()
    try:
        await clock.advance(30)
        assert runs == ["Mine"] * 3
        assert scheduler.stats.elsewhere == 3

        held.add("Theirs")  # taken over: the other instance died
        await clock.advance(10)
        assert sorted(runs[3:]) == ["Mine", "Theirs"]

        # A trigger runs every provider's task, whoever holds it.
        held.clear()
        assert await scheduler.run_now("health_checks") == 2
    finally:
        await scheduler.stop()
