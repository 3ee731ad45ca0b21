"""`/api/analytics/failures` and `/api/config/stats`."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from cryptomon.http.keys import (
    ARGUMENTS,
    MONITOR,
    SETTINGS,
)
from cryptomon.http.schemas import (
    ConfigStats,
    ErrorSampleView,
    FailureAnalysisView,
)
from cryptomon.http.views import HOUR, models_of, respond
from cryptomon.isotime import iso_time


async def failure_analytics(request: web.Request) -> web.Response:
    hours = request[ARGUMENTS].number("hours")
    now = time.time()
    analysis = models_of(request).projections.failures.analyze(now - hours * HOUR, now)
    monitor = request.app[MONITOR]
    return respond(
        FailureAnalysisView(
            hours=hours,
            total_failures=analysis.total_failures,
            failures_by_error_type=analysis.by_error_kind,
            failures_by_provider=analysis.by_provider,
            failures_by_hour={iso_time(h.start): h.failures for h in analysis.by_hour},
            top_failing_providers=[msgspec.to_builtins(p) for p in analysis.top_failing_providers],
            recent_errors={
                kind: ErrorSampleView(
                    at=iso_time(sample.at),
                    provider=sample.provider,
                    endpoint=sample.endpoint,
                    message=sample.message,
                    http_status=sample.http_status,
                )
                for kind, sample in analysis.recent_errors.items()
            },
            retry_statistics={
                "skipped_rate_limited": monitor.counters.skipped_blocked,
                "skipped_overlapping": monitor.scheduler.stats.skipped_overlap,
                "probes_lost": monitor.counters.lost,
            },
        )
    )


async def config_stats(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    config = settings.config
    by_category: dict[str, int] = {}
    for provider in config.providers:
        by_category[provider.category] = by_category.get(provider.category, 0) + 1
    reasons = [p.skip_reason(settings.environ) for p in config.providers]
    return respond(
        ConfigStats(
            source=config.source,
            total_providers=len(config.providers),
            probed=sum(r is None for r in reasons),
            unconfigured=sum(
                p.key_status(settings.environ) == "unconfigured" for p in config.providers
            ),
            disabled=sum(not p.enabled for p in config.providers),
            by_category=by_category,
            with_api_key=sum(p.api_key_env is not None for p in config.providers),
            api_token_configured=settings.api_token is not None,
            cors_origins=list(config.server.cors_origins),
            read_token_configured=settings.read_token is not None,
        )
    )
