"""The service's housekeeping jobs, under the seed's job ids: snapshotting the read
models (`metrics_aggregation`) and archiving old probe events (`database_cleanup`).
They run on the probing scheduler, so `/api/scheduler/jobs` lists and triggers them."""

from __future__ import annotations

import logging

from cryptomon.config import Config
from cryptomon.events.archive import ArchiveBusyError, archive_probe_events
from cryptomon.probing.scheduler import CronSchedule, IntervalSchedule, Scheduler
from cryptomon.readmodels import ReadModels

log = logging.getLogger(__name__)


def add_housekeeping(scheduler: Scheduler, models: ReadModels, config: Config) -> None:
    """The seed's housekeeping job ids: snapshot the rollups, archive old probes."""
    interval = config.storage.snapshot_interval_seconds

    async def snapshot(planned: float) -> None:
        await models.save_snapshot()

    scheduler.add_job("metrics_aggregation", "snapshot the read models", f"every {interval:g}s")
    scheduler.add_task(
        "metrics_aggregation", "metrics_aggregation", snapshot, IntervalSchedule(interval)
    )

    archive_after = config.storage.archive_after_seconds

    async def cleanup(planned: float) -> None:
        # The config gives a log on PostgreSQL an archive directory whenever archive_after
        # is set; a SQLite log has one beside its file.
        if archive_after is None or models.store.archive is None:
            return
        await models.save_snapshot()
        try:
            async with models.chain.rows_moving():  # walks of the chain read the rows it moves
                moved = await archive_probe_events(
                    models.store, before=planned - archive_after, up_to_position=models.position
                )
        except ArchiveBusyError:
            # Every instance on a PostgreSQL log runs this job; the one archiving does it all.
            log.info("database_cleanup: another instance is archiving the log; skipped")
            return
        log.info(
            "archived %d probe events older than %s into %s",
            moved,
            config.storage.archive_after,
            models.store.archive,
        )

    scheduler.add_job(
        "database_cleanup",
        "archive probe events past storage.archive_after",
        "cron 0 3 * * *",
    )
    scheduler.add_task("database_cleanup", "database_cleanup", cleanup, CronSchedule("0 3 * * *"))
