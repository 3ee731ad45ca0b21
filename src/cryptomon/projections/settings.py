"""The thresholds and retention periods every projection folds with.

Settings are part of what a snapshot covers: state folded under one set of
thresholds is not the state another set would build, so a snapshot taken with
different settings is rebuilt rather than reused. The `[monitoring]` thresholds
a reload may change (offline and online counts, certificate warnings, the probes a
failure ratio needs) are not settings but events (`MonitoringChanged`), folded into
the state that reads them: changing them keeps every snapshot.
"""

from __future__ import annotations

import msgspec

_HOUR = 3600.0
_DAY = 86_400.0


class ChainSettings(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A chain's judging thresholds as its `[chains.<name>]` table sets them; None takes
    the chain's default (`chains.CHAIN_DEFAULTS`), so a default changed in a new version
    is a change of the chains projection's version, not of these settings."""

    name: str
    chain_id: int | None = None
    lag_blocks: int | None = None
    lag_probes: int | None = None
    stale_blocks: int | None = None
    stale_after_seconds: float | None = None


class ProjectionSettings(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    # Health probes considered for "some but not all recent probes fail".
    recent_window: int = 10
    # Failure-rate alert: over the window, more than `threshold` of the probes (health and
    # collection) failed, of at least `MonitoringChanged.failure_ratio_min_probes`.
    failure_rate_threshold: float = 0.5
    failure_rate_window_seconds: float = 900.0
    # Rate-limit usage, in percent of the limit, for alerts and statuses.
    rate_limit_warning: float = 80.0
    rate_limit_critical: float = 100.0
    # The seed's `rate_limit_alert` severity: critical from this percentage.
    rate_limit_notice_critical: float = 95.0
    # Metric rollups: minutes fold into hours, hours into days, days are dropped.
    minute_retention_seconds: float = 2 * _HOUR
    hour_retention_seconds: float = 8 * _DAY
    day_retention_seconds: float = 400 * _DAY
    # Chains the config file sets thresholds for, by name (the rest take their defaults).
    chains: tuple[ChainSettings, ...] = ()
    # Quotes: deviating more than this many percent from the pair's median for
    # `quote_deviation_probes` probes in a row; data older than `quote_max_staleness_seconds`.
    quote_deviation_percent: float = 2.0
    quote_deviation_probes: int = 2
    quote_max_staleness_seconds: float = 60.0
    # Whether probes inside a maintenance window count in uptime and latency.
    maintenance_counts_in_uptime: bool = False
    # Resolved alerts and hourly failure counts are kept this long.
    alert_retention_seconds: float = 30 * _DAY
    failure_hour_retention_seconds: float = 30 * _DAY
    # Closed incidents are kept this long after they ended (`[storage] incident_retention`).
    incident_retention_seconds: float = 90 * _DAY

    def __post_init__(self) -> None:
        # Minute buckets fold into hours, hours into days: each must outlive the one before.
        if not (
            0
            < self.minute_retention_seconds
            <= self.hour_retention_seconds
            <= self.day_retention_seconds
        ):
            raise ValueError(
                "expected 0 < minute_retention_seconds <= hour_retention_seconds"
                " <= day_retention_seconds"
            )
        if self.recent_window < 1:
            raise ValueError("recent_window must be >= 1")
        if self.failure_rate_window_seconds <= 0:
            raise ValueError("failure_rate_window_seconds must be positive")
