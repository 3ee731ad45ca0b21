"""When things run: fixed-rate intervals and cron schedules on one timer heap.

Each task (a provider's health probe, a named job) has a schedule. Runs are
bounded by a global concurrency limit; a run that would overlap its own
previous run is skipped and counted instead of queued, so a stuck provider
never builds a backlog. Time comes from a `Clock`, so tests drive schedules
without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from croniter import croniter

log = logging.getLogger(__name__)


class Clock(Protocol):
    def time(self) -> float:
        """Unix seconds now."""
        ...

    async def sleep_until(self, when: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - time.time()))


class Schedule(Protocol):
    def next_after(self, moment: float) -> float:
        """The first planned run strictly after `moment`."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Fixed rate: runs at offset + k * interval, so a late run does not push
    every later one back."""

    interval: float
    offset: float = 0.0

    def next_after(self, moment: float) -> float:
        steps = (moment - self.offset) // self.interval + 1
        return self.offset + steps * self.interval

    def describe(self) -> str:
        return f"every {self.interval:g}s"


@dataclass(frozen=True, slots=True)
class CronSchedule:
    expression: str

    def next_after(self, moment: float) -> float:
        return float(croniter(self.expression, moment).get_next(float))

    def describe(self) -> str:
        return f"cron {self.expression}"


def spread_offset(name: str, interval: float) -> float:
    """A stable phase in [0, interval) from the name, so many tasks on the same
    interval are spread over it instead of firing in one burst."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


Action = Callable[[float], Awaitable[None]]


def everyone(provider: str) -> bool:
    """The ownership of a lone instance: it probes every provider."""
    return True


class UnknownJobError(KeyError):
    def __init__(self, job_id: str, known: list[str]) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.known = known

    def __str__(self) -> str:
        return f"unknown job {self.job_id!r}; known jobs: {', '.join(self.known)}"


class JobStatus(msgspec.Struct, frozen=True):
    id: str
    description: str
    schedule: str
    next_run: float | None
    last_run: float | None
    last_duration_ms: float | None
    runs: int
    errors: int
    skipped: int
    running: int
    last_error: str | None


@dataclass(slots=True)
class _Job:
    id: str
    description: str
    schedule: str
    runs: int = 0
    errors: int = 0
    skipped: int = 0
    running: int = 0
    last_run: float | None = None
    last_duration_ms: float | None = None
    last_error: str | None = None
    next_run: float | None = None


@dataclass(slots=True)
class _Task:
    name: str
    schedule: Schedule | None  # None: runs only when its job is triggered
    action: Action
    job: _Job
    running: asyncio.Task[None] | None = None
    provider: str | None = None  # the provider this task is about, for log lines
    removed: bool = False  # dropped by `remove_tasks`: its planned runs are skipped


@dataclass(slots=True)
class SchedulerStats:
    planned: int = 0
    started: int = 0
    skipped_overlap: int = 0
    skipped_late: int = 0
    elsewhere: int = 0  # runs left to the instance that holds the provider's lease
    # seconds from planned to actual start of recent runs, for status and benchmarks
    recent_lag: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))


class Scheduler:
    def __init__(
        self,
        clock: Clock | None = None,
        max_concurrency: int = 64,
        owns: Callable[[str], bool] = everyone,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        # Whether this instance probes a provider (several instances share the providers).
        self.owns = owns
        self._limit = asyncio.Semaphore(max_concurrency)
        self._jobs: dict[str, _Job] = {}
        self._tasks: list[_Task] = []
        self._heap: list[tuple[float, int, _Task]] = []
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        # Tie-breaker of the plan's heap entries: never two alike, so tasks never compare.
        self._sequence = itertools.count()
        self.stats = SchedulerStats()

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    def add_job(self, job_id: str, description: str, schedule_text: str) -> None:
        self._jobs[job_id] = _Job(job_id, description, schedule_text)

    def add_task(
        self,
        name: str,
        job_id: str,
        action: Action,
        schedule: Schedule | None = None,
        *,
        provider: str | None = None,
    ) -> None:
        """A unit of work, run on its schedule and whenever its job is triggered."""
        task = _Task(name, schedule, action, self._jobs[job_id], provider=provider)
        self._tasks.append(task)
        if self.running and schedule is not None:
            # Added while running (a reload): plan it, and replan in case it comes first.
            self._plan(task, self.clock.time())
            self._restart_loop()

    def remove_tasks(self, provider: str) -> list[asyncio.Task[None]]:
        """Stop planning the tasks about `provider`; return their runs still in flight,
        which are left to finish (a reload waits for them, it does not cut them short)."""
        removed = [task for task in self._tasks if task.provider == provider]
        for task in removed:
            task.removed = True
        self._tasks = [task for task in self._tasks if task.provider != provider]
        return [t.running for t in removed if t.running is not None and not t.running.done()]

    def start(self) -> None:
        now = self.clock.time()
        for task in self._tasks:
            self._plan(task, now)
        self._loop_task = asyncio.create_task(self._run(), name="scheduler")

    def _plan(self, task: _Task, now: float) -> None:
        if task.schedule is not None:
            entry = (task.schedule.next_after(now), next(self._sequence), task)
            heapq.heappush(self._heap, entry)

    def _restart_loop(self) -> None:
        # The loop awaits nothing but its sleep until the next planned run, so cancelling
        # it there loses no run; the new loop sleeps until whatever now comes first.
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._loop_task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        """Stop planning runs and cancel those in flight (they append nothing)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _run(self) -> None:
        while self._heap:
            planned, _, task = self._heap[0]
            if not task.removed:
                await self.clock.sleep_until(planned)
            heapq.heappop(self._heap)
            if task.removed:
                continue  # removed by a reload, before or while the loop slept
            now = self.clock.time()
            if task.provider is None or self.owns(task.provider):
                self._dispatch(task, planned)
            else:
                self.stats.elsewhere += 1
            assert task.schedule is not None
            upcoming = task.schedule.next_after(max(planned, now))
            if isinstance(task.schedule, IntervalSchedule):
                missed = int((upcoming - planned) / task.schedule.interval + 1e-9) - 1
                if missed > 0:
                    self.stats.skipped_late += missed
                    task.job.skipped += missed
            heapq.heappush(self._heap, (upcoming, next(self._sequence), task))

    def _refresh_next_runs(self) -> None:
        # A scan of the whole plan: done when status is asked for, not on every dispatch
        # (with thousands of tasks that made each dispatch cost thousands of steps).
        nexts: dict[str, float] = {}
        for planned, _, task in self._heap:
            job_id = task.job.id
            nexts[job_id] = min(planned, nexts.get(job_id, planned))
        for job in self._jobs.values():
            job.next_run = nexts.get(job.id)

    def _dispatch(self, task: _Task, planned: float) -> bool:
        self.stats.planned += 1
        if task.running is not None and not task.running.done():
            self.stats.skipped_overlap += 1
            task.job.skipped += 1
            return False
        runner = asyncio.create_task(self._execute(task, planned), name=f"run:{task.name}")
        task.running = runner
        self._in_flight.add(runner)
        runner.add_done_callback(self._in_flight.discard)
        return True

    async def _execute(self, task: _Task, planned: float) -> None:
        job = task.job
        job.running += 1
        try:
            async with self._limit:
                started = self.clock.time()
                self.stats.started += 1
                self.stats.recent_lag.append(started - planned)
                job.last_run = started
                began = time.perf_counter()
                try:
                    await task.action(planned)
                except Exception as exc:
                    job.errors += 1
                    job.last_error = f"{task.name}: {type(exc).__name__}: {exc}"
                    log.warning(
                        "run of %s failed: %s",
                        task.name,
                        exc,
                        extra={"task": task.name, "provider": task.provider},
                    )
                finally:
                    job.runs += 1
                    job.last_duration_ms = (time.perf_counter() - began) * 1000
        finally:
            job.running -= 1

    def job_ids(self) -> list[str]:
        return list(self._jobs)

    def status(self) -> list[JobStatus]:
        self._refresh_next_runs()
        fields = JobStatus.__struct_fields__
        return [
            JobStatus(**{name: getattr(job, name) for name in fields})
            for job in self._jobs.values()
        ]

    async def run_now(self, job_id: str) -> int:
        """Run every task of a job now (skipping any still running); wait for
        them and return how many ran. A trigger runs every provider's task, whichever
        instance holds its lease: someone asked this instance to check now."""
        if job_id not in self._jobs:
            raise UnknownJobError(job_id, self.job_ids())
        now = self.clock.time()
        started = [
            task.running
            for task in self._tasks
            if task.job.id == job_id and self._dispatch(task, now) and task.running is not None
        ]
        if started:
            await asyncio.gather(*started, return_exceptions=True)
        return len(started)
