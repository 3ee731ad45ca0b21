"""`/api/scheduler`: the scheduled jobs, and running one now (a write)."""

from __future__ import annotations

from aiohttp import web

from cryptomon.http.keys import (
    ARGUMENTS,
    MONITOR,
    WRITER,
)
from cryptomon.http.schemas import (
    JobView,
    SchedulerStatus,
    Triggered,
)
from cryptomon.http.views import log_of, respond, rounded, visible
from cryptomon.isotime import iso_time


async def scheduler_status(request: web.Request) -> web.Response:
    monitor = request.app[MONITOR]
    scheduler = monitor.scheduler
    jobs = [
        JobView(
            id=job.id,
            description=job.description,
            schedule=job.schedule,
            next_run=iso_time(job.next_run),
            last_run=iso_time(job.last_run),
            last_duration_ms=rounded(job.last_duration_ms),
            runs=job.runs,
            errors=job.errors,
            skipped=job.skipped,
            running=job.running,
            last_error=job.last_error,
        )
        for job in scheduler.status()
    ]
    stats = scheduler.stats
    return respond(
        SchedulerStatus(
            running=scheduler.running,
            jobs=jobs,
            probes_planned=stats.planned,
            probes_started=stats.started,
            skipped_overlapping=stats.skipped_overlap,
            skipped_late=stats.skipped_late,
            skipped_rate_limited=monitor.counters.skipped_blocked,
            probes_lost=monitor.counters.lost,
        )
    )


async def trigger_job(request: web.Request) -> web.Response:
    actor = request[WRITER]
    job_id = request[ARGUMENTS].path("job_id")
    monitor = request.app[MONITOR]
    ran = await monitor.trigger(job_id, actor)
    await visible(request, log_of(request).head)
    return respond(
        Triggered(
            success=True,
            job_id=job_id,
            tasks_run=ran,
            triggered_by=actor,
            position=log_of(request).head,
        )
    )
