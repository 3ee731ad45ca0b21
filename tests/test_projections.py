"""Projections as pure folds: status rules, alerts, rollups, analytics, snapshots, replay."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptomon.events.types import (
    AlertAcknowledged,
    ConditionSeen,
    ErrorKind,
    Event,
    EventMetadata,
    JobTriggered,
    MonitoringChanged,
    ProbeKind,
    ProbeOutcome,
    ProbeRecorded,
    ProviderRegistered,
    ProviderRemoved,
    RateLimitChanged,
    RateLimitSpec,
    RecordedEvent,
)
from cryptomon.projections import (
    AlertAcked,
    AlertRaised,
    AlertResolved,
    AlreadyAcknowledgedError,
    LogEntry,
    Notice,
    Projections,
    ProjectionSettings,
    ProviderStatusChanged,
    RateLimitHigh,
    SnapshotMismatch,
    UnknownAlertError,
)
from cryptomon.projections.metrics import ALL, percentile

T0 = 1_700_006_400.0  # midnight UTC, so minutes, hours and days start on round numbers
HOUR = 3600.0
DAY = 86_400.0

_ERROR_KINDS: dict[str, ErrorKind] = {
    "failed": "http_5xx",
    "timeout": "timeout",
    "rate_limited": "rate_limited",
}


def probe(
    provider: str,
    at: float,
    outcome: ProbeOutcome = "success",
    latency: float | None = 100.0,
    kind: ProbeKind = "health",
    error_kind: ErrorKind | None = None,
) -> ProbeRecorded:
    failed = outcome != "success"
    return ProbeRecorded(
        provider=provider,
        kind=kind,
        endpoint="/ping" if kind == "health" else "/data",
        outcome=outcome,
        started_at=at,
        latency_ms=latency,
        http_status={"success": 200, "failed": 503, "rate_limited": 429}.get(outcome),
        error_kind=(error_kind or _ERROR_KINDS[outcome]) if failed else None,
        error_message=f"{provider} said no" if failed else None,
    )


def registration(
    provider: str,
    *,
    key_configured: bool = True,
    degraded_latency_ms: int = 2000,
    limit: RateLimitSpec | None = None,
) -> ProviderRegistered:
    return ProviderRegistered(
        provider=provider,
        category="market_data",
        base_url=f"https://{provider.lower()}.example/api",
        health_path="/ping",
        schedule="30s",
        timeout_ms=10_000,
        degraded_latency_ms=degraded_latency_ms,
        rate_limit=limit,
        key_configured=key_configured,
    )


def usage(
    provider: str, at: float, percentage: float, blocked_until: float | None = None
) -> RateLimitChanged:
    return RateLimitChanged(
        provider=provider,
        used=round(percentage * 0.6),
        limit=60,
        window_seconds=60.0,
        percentage=percentage,
        observed_at=at,
        reset_at=at + 30,
        blocked_until=blocked_until,
    )


def event_time(event: Event, default: float) -> float:
    match event:
        case ProbeRecorded(started_at=at) | RateLimitChanged(observed_at=at):
            return at
        case AlertAcknowledged(acknowledged_at=at) | JobTriggered(triggered_at=at):
            return at
    return default


@dataclass
class Log:
    """Builds recorded events with gap-free positions, as the store would."""

    position: int = 0
    now: float = T0
    events: list[RecordedEvent] = field(default_factory=list)

    def record(self, event: Event) -> RecordedEvent:
        self.position += 1
        self.now = event_time(event, self.now)
        recorded = RecordedEvent(
            position=self.position,
            event_id=f"e{self.position}",
            stream="test",
            version=self.position,
            recorded_at=self.now,
            event=event,
            metadata=EventMetadata(),
            hash="x",
        )
        self.events.append(recorded)
        return recorded


class Harness:
    def __init__(self, settings: ProjectionSettings | None = None) -> None:
        self.log = Log()
        self.projections = Projections(settings)

    def __call__(self, *events: Event) -> list[Notice]:
        """Apply `events`; the notices they cause, less the log rows every event adds."""
        return [n for n in self.with_log_rows(*events) if not isinstance(n, LogEntry)]

    def with_log_rows(self, *events: Event) -> list[Notice]:
        notices: list[Notice] = []
        for event in events:
            notices += self.projections.apply(self.log.record(event))
        return notices

    def status(self, provider: str) -> str:
        state = self.projections.providers.get(provider)
        assert state is not None
        return state.status


def changes(notices: Iterable[Notice]) -> list[tuple[str, str]]:
    return [(n.old_status, n.new_status) for n in notices if isinstance(n, ProviderStatusChanged)]


def of_type(notices: Iterable[Notice], kind: type[Any]) -> list[Any]:
    return [n for n in notices if isinstance(n, kind)]


# ---- provider status -------------------------------------------------------------


def test_three_consecutive_failures_take_a_provider_offline() -> None:
    fold = Harness()
    fold(registration("CoinGecko"), probe("CoinGecko", T0))
    assert fold.status("CoinGecko") == "online"
    first = fold(probe("CoinGecko", T0 + 30, "timeout"))
    assert fold.status("CoinGecko") == "degraded"  # one blip is not an outage
    assert changes(first) == [("online", "degraded")]
    assert fold(probe("CoinGecko", T0 + 60, "failed")) == []
    assert fold.status("CoinGecko") == "degraded"
    third = fold(probe("CoinGecko", T0 + 90, "failed"))
    assert changes(third) == [("degraded", "offline")]
    [change] = of_type(third, ProviderStatusChanged)
    assert change.position == 5 and change.at == T0 + 90
    assert change.details == "3 consecutive failures, last http_5xx: CoinGecko said no"
    provider = fold.projections.providers.get("CoinGecko")
    assert provider is not None
    assert provider.consecutive_failures == 3
    assert provider.last_status_change == T0 + 90
    assert provider.last_error is not None and provider.last_error.started_at == T0 + 90


def test_two_consecutive_successes_bring_an_offline_provider_back_online() -> None:
    fold = Harness()
    fold(registration("Etherscan"), *(probe("Etherscan", T0 + i, "timeout") for i in range(4)))
    assert fold.status("Etherscan") == "offline"
    assert fold(probe("Etherscan", T0 + 10)) == []
    assert fold.status("Etherscan") == "offline"  # one success is not a recovery
    # A failure in between starts the count again.
    fold(probe("Etherscan", T0 + 11, "failed"), probe("Etherscan", T0 + 12))
    assert fold.status("Etherscan") == "offline"
    back = fold(probe("Etherscan", T0 + 13))
    assert changes(back) == [("offline", "online")]
    [change] = of_type(back, ProviderStatusChanged)
    assert change.details == "2 consecutive successes"
    provider = fold.projections.providers.get("Etherscan")
    assert provider is not None
    # The outage's failures leave the recent window: the provider is judged afresh.
    assert provider.recent == ["success", "success"] and provider.recent_failures == 0


def test_thresholds_changed_in_the_log_judge_from_their_position_on() -> None:
    fold = Harness()
    fold(registration("A"), probe("A", T0), probe("A", T0 + 1, "failed"))
    assert fold.status("A") == "degraded"  # one failure of the default three
    fold(MonitoringChanged(offline_after_failures=2, online_after_successes=1))
    went = fold(probe("A", T0 + 2, "failed"))
    assert changes(went) == [("degraded", "offline")]  # two in a row, by the new threshold
    assert changes(fold(probe("A", T0 + 3))) == [("offline", "online")]  # one success now
    # A snapshot keeps the thresholds it folded: no setting changed, nothing discarded.
    restored = Projections.restore(fold.projections.snapshot_state())
    assert restored.providers.state.thresholds.offline_after_failures == 2
    assert restored.alerts.state.thresholds == MonitoringChanged(
        offline_after_failures=2, online_after_successes=1
    )


def test_a_single_failure_degrades_until_it_leaves_the_recent_window() -> None:
    fold = Harness(ProjectionSettings(recent_window=4))
    fold(probe("A", T0), probe("A", T0 + 1, "failed"), probe("A", T0 + 2))
    assert fold.status("A") == "degraded"
    provider = fold.projections.providers.get("A")
    assert provider is not None
    assert provider.consecutive_failures == 0 and provider.recent_failures == 1
    assert fold(probe("A", T0 + 3), probe("A", T0 + 4)) == []  # still in the last 4
    back = fold(probe("A", T0 + 5))
    assert changes(back) == [("degraded", "online")]


def test_failures_judge_only_from_enough_probes_in_the_window() -> None:
    """`failure_ratio_min_probes` (5, as the service records it from `[monitoring]`): with
    fewer health probes in the recent window, a failure neither degrades a provider nor
    raises an alert; one not judged yet stays `unknown`. Three failures in a row still take
    it offline, and the failure rate waits for as many probes."""
    fold = Harness()
    fold(MonitoringChanged(failure_ratio_min_probes=5), registration("A"), registration("B"))
    fold(probe("A", T0), probe("B", T0, "failed"))
    assert (fold.status("A"), fold.status("B")) == ("online", "unknown")
    assert fold(probe("A", T0 + 1, "failed"), probe("B", T0 + 1)) == []
    assert fold(*(probe(name, T0 + 2 + i) for i in range(2) for name in "AB")) == []
    assert fold.projections.alerts.query() == []
    # The fifth probe: 1 of the last 5 failed.
    notices = fold(probe("A", T0 + 5), probe("B", T0 + 5))
    assert changes(notices) == [("online", "degraded"), ("unknown", "degraded")]
    [change, _] = of_type(notices, ProviderStatusChanged)
    assert change.details == "1 of the last 5 probes failed"
    assert [a.kind for a in fold.projections.alerts.query()] == ["degraded", "degraded"]
    # Three failures in a row are an outage however few the probes; the failure rate
    # (3 of 4) waits for a fifth.
    notices = fold(registration("C"), *(probe("C", T0 + i, "failed") for i in range(3)))
    assert changes(notices) == [("unknown", "offline")]
    assert [n.alert.kind for n in of_type(notices, AlertRaised)] == ["offline"]
    assert fold.status("C") == "offline"
    rate = of_type(fold(probe("C", T0 + 3, "failed", kind="collection")), AlertRaised)
    assert [n.alert.kind for n in rate] == []  # 4 of 4, still too few
    rate = of_type(fold(probe("C", T0 + 4, "failed", kind="collection")), AlertRaised)
    assert [n.alert.kind for n in rate] == ["failure_rate"]
    # A log recorded before the threshold existed judges as it was served: from one probe.
    old = Harness()
    old(MonitoringChanged(), registration("D"))
    assert changes(old(probe("D", T0, "failed"))) == [("unknown", "degraded")]


def test_a_slow_success_degrades_and_a_fast_one_restores() -> None:
    fold = Harness()
    fold(registration("CoinGecko", degraded_latency_ms=2000), probe("CoinGecko", T0))
    assert fold(probe("CoinGecko", T0 + 30, latency=2000.0)) == []  # at the limit is fine
    slow = fold(probe("CoinGecko", T0 + 60, latency=2500.0))
    [change] = of_type(slow, ProviderStatusChanged)
    assert (change.old_status, change.new_status) == ("online", "degraded")
    assert change.details == "latency 2500 ms over 2000 ms"
    assert changes(fold(probe("CoinGecko", T0 + 90, latency=150.0))) == [("degraded", "online")]


def test_unknown_providers_have_no_latency_rule() -> None:
    fold = Harness()
    fold(probe("Mystery", T0, latency=60_000.0))
    provider = fold.projections.providers.get("Mystery")
    assert provider is not None
    assert (provider.category, provider.status, provider.base_url) == ("unknown", "online", "")


def test_rate_limited_by_a_block_until_a_probe_is_answered_without_429() -> None:
    fold = Harness()
    fold(registration("CryptoCompare"), probe("CryptoCompare", T0))
    blocked = fold(usage("CryptoCompare", T0 + 5, 100.0, blocked_until=T0 + 65))
    assert changes(blocked) == [("online", "rate_limited")]
    assert fold.status("CryptoCompare") == "rate_limited"
    assert changes(fold(probe("CryptoCompare", T0 + 70))) == [("rate_limited", "online")]


def test_a_429_is_rate_limited_not_a_failure() -> None:
    fold = Harness()
    fold(probe("A", T0), probe("A", T0 + 1, "failed"), probe("A", T0 + 2, "failed"))
    limited = fold(probe("A", T0 + 3, "rate_limited"))
    assert changes(limited) == [("degraded", "rate_limited")]
    provider = fold.projections.providers.get("A")
    assert provider is not None and provider.consecutive_failures == 0
    # The next failures start counting from zero: two more are not yet an outage.
    fold(probe("A", T0 + 4, "failed"), probe("A", T0 + 5, "failed"))
    assert fold.status("A") == "degraded"


def test_unconfigured_until_registered_with_a_key() -> None:
    fold = Harness()
    notices = fold(registration("CoinMarketCap", key_configured=False))
    assert changes(notices) == [("unknown", "unconfigured")]
    fold(*(probe("CoinMarketCap", T0 + i, "failed") for i in range(5)))
    assert fold.status("CoinMarketCap") == "unconfigured"
    assert fold.projections.alerts.query() == []
    assert changes(fold(registration("CoinMarketCap"))) == [("unconfigured", "unknown")]
    assert changes(fold(probe("CoinMarketCap", T0 + 10))) == [("unknown", "degraded")]


def test_collection_probes_are_recorded_but_judge_nothing() -> None:
    fold = Harness()
    fold(probe("A", T0))
    assert fold(*(probe("A", T0 + i, "failed", kind="collection") for i in range(5))) == []
    provider = fold.projections.providers.get("A")
    assert provider is not None
    assert provider.status == "online" and provider.consecutive_failures == 0
    assert provider.last_probe is not None and provider.last_probe.kind == "collection"
    assert provider.last_error is not None and provider.last_error.endpoint == "/data"


def test_removing_a_provider_keeps_it_marked_and_resolves_its_alerts() -> None:
    fold = Harness()
    fold(registration("A", limit=RateLimitSpec(60, 60.0)), registration("B"))
    fold(probe("B", T0), *(probe("A", T0 + i, "failed") for i in range(3)))
    fold(usage("A", T0 + 4, 50.0))
    [alert] = fold.projections.alerts.query(open_only=True)
    notices = fold(ProviderRemoved("A"))
    removed_at = fold.log.events[-1].recorded_at
    providers = fold.projections.providers
    provider = providers.get("A")
    assert provider is not None and (provider.removed, provider.removed_at) == (True, removed_at)
    # Its last status and probes stay to be read; it leaves the listing and the summary.
    assert provider.status == "offline" and provider.consecutive_failures == 3
    assert provider.last_probe is not None and provider.last_probe.started_at == T0 + 2
    assert [p.name for p in providers.all()] == ["B"]
    assert [p.name for p in providers.all(removed=True)] == ["A", "B"]
    assert (providers.summary().total, providers.summary().offline) == (1, 0)
    [resolved] = of_type(notices, AlertResolved)
    assert resolved.alert.id == alert.id
    assert fold.projections.alerts.query(open_only=True) == []
    # Its history stays: the probes, and the rate limit as it last stood.
    assert fold.projections.metrics.window("A", T0, T0 + HOUR, "health").count == 3
    limit = fold.projections.rate_limits.get("A")
    assert limit is not None and limit.percentage == 50.0
    # A probe in flight at the removal judges nothing.
    assert of_type(fold(probe("A", T0 + 10, "failed")), ProviderStatusChanged) == []
    assert provider.last_probe.started_at == T0 + 2 and provider.status == "offline"


def test_a_removed_provider_registered_again_is_judged_afresh() -> None:
    fold = Harness()
    fold(registration("A"), *(probe("A", T0 + i, "failed") for i in range(3)))
    fold(ProviderRemoved("A"), ProviderRemoved("A"))
    first_removal = fold.log.events[-2].recorded_at
    provider = fold.projections.providers.get("A")
    assert provider is not None and provider.removed_at == first_removal  # the first counts
    notices = fold(registration("A"))
    assert (provider.removed, provider.removed_at) == (False, None)
    assert changes(notices) == [("offline", "unknown")]
    assert provider.consecutive_failures == 0 and provider.recent == []
    assert provider.last_probe is not None  # its history is kept
    assert [p.name for p in fold.projections.providers.all()] == ["A"]
    # One failure is a blip again, not a fourth in a row.
    fold(probe("A", T0 + 10), probe("A", T0 + 11, "failed"))
    assert fold.status("A") == "degraded"
    # Registered again without a key: unconfigured, from unknown.
    fold(ProviderRemoved("A"))
    assert changes(fold(registration("A", key_configured=False))) == [
        ("degraded", "unknown"),
        ("unknown", "unconfigured"),
    ]
    # A replay folds what the live fold did.
    replay = Projections()
    for recorded in fold.log.events:
        replay.fold(recorded)
    assert replay.state_equal(fold.projections) == []


def test_summary_counts_statuses_and_the_seeds_system_health() -> None:
    fold = Harness()
    fold(registration("Off", key_configured=False))
    fold(*(probe(name, T0) for name in "ABCDEFGHI"))
    summary = fold.projections.providers.summary()
    assert (summary.total, summary.online, summary.unconfigured) == (10, 9, 1)
    assert summary.system_health == "healthy"  # 9 of 9 monitored
    fold(*(probe("A", T0 + i, "failed") for i in range(1, 4)), probe("B", T0 + 5, "failed"))
    summary = fold.projections.providers.summary()
    assert (summary.online, summary.offline, summary.degraded) == (7, 1, 1)
    assert summary.system_health == "degraded"  # 7 of 9 is 78%


# ---- alerts ----------------------------------------------------------------------


def test_offline_raises_one_critical_alert_that_resolves_itself() -> None:
    fold = Harness()
    fold(registration("A"), probe("A", T0))
    notices = fold(*(probe("A", T0 + i, "timeout") for i in range(1, 4)))
    raised = of_type(notices, AlertRaised)
    assert [(n.alert.kind, n.alert.severity) for n in raised] == [
        ("degraded", "warning"),
        ("offline", "critical"),
    ]
    offline = raised[1].alert
    assert offline.position == 5 and offline.raised_at == T0 + 3
    assert (raised[0].alert.id, offline.id) == (1, 2)  # numbered in the order raised
    assert offline.message.startswith("A is offline: 3 consecutive failures")
    # Going offline resolves the degraded alert: one condition at a time.
    assert [n.alert.kind for n in of_type(notices, AlertResolved)] == ["degraded"]
    # More failures: the same condition, so no second alert.
    assert of_type(fold(*(probe("A", T0 + i, "failed") for i in range(4, 9))), AlertRaised) == []
    assert len(fold.projections.alerts.query(open_only=True)) == 1
    back = fold(probe("A", T0 + 10), probe("A", T0 + 11))
    [resolved] = of_type(back, AlertResolved)
    assert resolved.alert.id == offline.id and resolved.alert.resolved_at == T0 + 11
    # A new outage is a new alert, with the next id, and the position of the event raising it.
    again = fold(*(probe("A", T0 + i, "failed") for i in range(20, 23)))
    [new] = [n.alert for n in of_type(again, AlertRaised) if n.alert.kind == "offline"]
    assert new.id != offline.id and new.position == fold.log.position


def test_rate_limit_alert_warns_at_80_is_upgraded_at_100_and_resolves_below_80() -> None:
    fold = Harness()
    fold(registration("A", limit=RateLimitSpec(60, 60.0)))
    assert fold(usage("A", T0, 50.0)) == []
    warned = fold(usage("A", T0 + 1, 80.0))
    [raised] = of_type(warned, AlertRaised)
    assert (raised.alert.kind, raised.alert.severity) == ("rate_limit", "warning")
    [high] = of_type(warned, RateLimitHigh)
    assert (high.percentage, high.severity, high.used, high.limit) == (80.0, "warning", 48, 60)
    ninety = fold(usage("A", T0 + 2, 90.0))
    assert of_type(ninety, AlertRaised) == []
    assert [n.severity for n in of_type(ninety, RateLimitHigh)] == ["warning"]
    full = fold(usage("A", T0 + 3, 100.0))
    [upgraded] = of_type(full, AlertRaised)
    assert upgraded.alert.id == raised.alert.id and upgraded.alert.severity == "critical"
    assert [n.severity for n in of_type(full, RateLimitHigh)] == ["critical"]
    assert fold(usage("A", T0 + 4, 90.0)) == []  # still open, severity stays at its worst
    [resolved] = of_type(fold(usage("A", T0 + 5, 50.0)), AlertResolved)
    assert resolved.alert.id == raised.alert.id and resolved.alert.severity == "critical"


def test_a_block_is_critical_at_any_percentage() -> None:
    fold = Harness()
    notices = fold(usage("A", T0, 10.0, blocked_until=T0 + 60))
    [raised] = of_type(notices, AlertRaised)
    assert raised.alert.severity == "critical" and "blocked until" in raised.alert.message
    [high] = of_type(notices, RateLimitHigh)
    assert high.severity == "critical"
    # No event marks the end of a block; the first probe started after it does.
    assert of_type(fold(probe("A", T0 + 59)), AlertResolved) == []
    [resolved] = of_type(fold(probe("A", T0 + 60)), AlertResolved)
    assert resolved.alert.id == raised.alert.id
    entry = fold.projections.rate_limits.get("A")
    assert entry is not None and (entry.status, entry.blocked_until) == ("ok", None)


def test_a_block_over_high_usage_leaves_the_alert_to_the_usage() -> None:
    fold = Harness()
    fold(usage("A", T0, 85.0, blocked_until=T0 + 60), probe("A", T0 + 61))
    [alert] = fold.projections.alerts.query(open_only=True)
    assert alert.severity == "critical"
    entry = fold.projections.rate_limits.get("A")
    assert entry is not None and entry.status == "warning"
    assert of_type(fold(usage("A", T0 + 62, 50.0)), AlertResolved) != []


def test_failure_rate_alert_over_the_window() -> None:
    fold = Harness()
    fold(MonitoringChanged(failure_ratio_min_probes=10))
    # Collection probes: they move no status, so only the failure-rate rule speaks.
    outcomes: list[ProbeOutcome] = ["success", "success", "success", "success"]
    outcomes += ["failed"] * 5
    assert fold(*(probe("A", T0 + i, o, kind="collection") for i, o in enumerate(outcomes))) == []
    raised = of_type(fold(probe("A", T0 + 10, "timeout", kind="collection")), AlertRaised)
    assert [(n.alert.kind, n.alert.severity) for n in raised] == [("failure_rate", "warning")]
    assert raised[0].alert.message == (
        "A: 6 of 10 probes failed in the last 15 min (60%, threshold 50%)"
    )
    assert of_type(fold(probe("A", T0 + 11, "failed", kind="collection")), AlertRaised) == []
    # Two successes: 7 of 13 failed, still over the threshold.
    notices = fold(*(probe("A", T0 + 12 + i, kind="collection") for i in range(2)))
    assert of_type(notices, AlertResolved) == []
    # 7 of 14 is at the threshold, no longer over it.
    [resolved] = of_type(fold(probe("A", T0 + 20, kind="collection")), AlertResolved)
    assert resolved.alert.kind == "failure_rate"


def maintenance(provider: str, at: float, kind: ProbeKind = "health") -> ProbeRecorded:
    return msgspec.structs.replace(
        probe(provider, at, kind=kind),
        outcome="maintenance",
        condition=ConditionSeen("[BODY][0] == 0", "0"),
    )


def test_declared_maintenance_sets_the_status_raises_nothing_and_judges_afresh_after() -> None:
    fold = Harness()
    fold(MonitoringChanged(failure_ratio_min_probes=3))
    fold(registration("A"), probe("A", T0), probe("A", T0 + 1))
    assert fold.status("A") == "online"
    # Three failures would make it offline; declared maintenance is no failure at all.
    notices = fold(*(maintenance("A", T0 + 2 + i) for i in range(5)))
    assert changes(notices) == [("online", "maintenance")]
    assert of_type(notices, AlertRaised) == []
    [change] = of_type(notices, ProviderStatusChanged)
    assert change.details == "/ping declares maintenance: [BODY][0] == 0 (saw 0)"
    state = fold.projections.providers.get("A")
    assert state is not None
    assert (state.consecutive_failures, state.recent_failures) == (0, 0)
    assert fold.projections.providers.summary().maintenance == 1
    # Maintenance probes don't enter the failure-rate window, nor the metrics or failures.
    assert fold.projections.alerts.state.windows["A"].probes == [T0, T0 + 1]
    assert fold.projections.metrics.window("A", T0, T0 + HOUR, "health").count == 2
    assert fold.projections.failures.analyze(T0, T0 + HOUR).total_failures == 0
    # After it, the next answer judges the provider from where it stood.
    assert changes(fold(probe("A", T0 + 10))) == [("maintenance", "online")]


def test_a_failure_after_maintenance_counts_from_before_it() -> None:
    fold = Harness()
    fold(registration("A"), probe("A", T0, "failed"), probe("A", T0 + 1, "failed"))
    fold(maintenance("A", T0 + 2))
    assert changes(fold(probe("A", T0 + 3, "failed"))) == [("maintenance", "offline")]


def certified(provider: str, at: float, days_left: float) -> ProbeRecorded:
    return msgspec.structs.replace(probe(provider, at), certificate_not_after=at + days_left * DAY)


def test_certificate_alert_warns_then_turns_critical_then_resolves_on_renewal() -> None:
    fold = Harness()
    assert of_type(fold(registration("A"), certified("A", T0, 30)), AlertRaised) == []
    [warned] = of_type(fold(certified("A", T0 + HOUR, 13.5)), AlertRaised)
    assert (warned.alert.kind, warned.alert.severity) == ("certificate", "warning")
    assert warned.alert.message == (
        "A: TLS certificate expires 2023-11-28T13:00:00Z (13.5 days left)"
    )
    assert (warned.alert.id, warned.alert.position) == (1, 3)
    assert of_type(fold(certified("A", T0 + 2 * HOUR, 13)), AlertRaised) == []  # still open
    [critical] = of_type(fold(certified("A", T0 + 3 * HOUR, 2.5)), AlertRaised)
    assert (critical.alert.id, critical.alert.severity) == (warned.alert.id, "critical")
    [resolved] = of_type(fold(certified("A", T0 + 4 * HOUR, 90)), AlertResolved)
    assert resolved.alert.id == warned.alert.id
    state = fold.projections.providers.get("A")
    assert state is not None and state.certificate_not_after == T0 + 4 * HOUR + 90 * DAY


def test_an_expired_certificate_is_critical_and_thresholds_come_from_the_log() -> None:
    fold = Harness()
    assert of_type(fold(certified("A", T0, 35)), AlertRaised) == []
    fold = Harness()
    fold(MonitoringChanged(certificate_warning_seconds=40 * DAY))
    [raised] = of_type(fold(certified("A", T0, 35)), AlertRaised)
    assert raised.alert.severity == "warning"
    fold = Harness()
    [raised] = of_type(fold(certified("A", T0, -1)), AlertRaised)
    assert raised.alert.severity == "critical"
    assert raised.alert.message.endswith("(expired)")


def test_observations_keep_the_last_value_of_each_name() -> None:
    fold = Harness()
    first = msgspec.structs.replace(probe("A", T0), observations={"head": 100, "peers": 3})
    second = msgspec.structs.replace(probe("A", T0 + 30), observations={"head": 102})
    fold(registration("A"), first, second)
    state = fold.projections.providers.get("A")
    assert state is not None
    assert {name: (seen.value, seen.at) for name, seen in state.observations.items()} == {
        "head": (102, T0 + 30),
        "peers": (3, T0),
    }


def test_failures_leave_the_failure_rate_window_with_time() -> None:
    fold = Harness()
    fold(MonitoringChanged(failure_ratio_min_probes=3))
    fold(*(probe("A", T0 + i, "failed", kind="collection") for i in range(3)))
    assert len(fold.projections.alerts.query(open_only=True)) == 1
    # 900 s after the last failure, all three have left the window.
    later = fold(probe("A", T0 + 902, kind="collection"))
    assert [n.alert.kind for n in of_type(later, AlertResolved)] == ["failure_rate"]
    window = fold.projections.alerts.state.windows["A"]
    assert window.probes == [T0 + 902] and window.failures == []


def test_acknowledging_checks_first_and_the_fold_ignores_repeats() -> None:
    fold = Harness()
    fold(*(probe("A", T0 + i, "failed") for i in range(3)))
    alerts = fold.projections.alerts
    with pytest.raises(UnknownAlertError, match="there is no alert with id 12345"):
        alerts.check_acknowledge(12345)
    [offline] = alerts.query(open_only=True)
    alerts.check_acknowledge(offline.id)
    notices = fold(AlertAcknowledged(offline.id, "alice", T0 + 100, "looking into it"))
    [acked] = of_type(notices, AlertAcked)
    assert acked.alert.acknowledged_by == "alice" and acked.alert.note == "looking into it"
    alert = alerts.get(offline.id)
    assert alert is not None and alert.acknowledged and alert.acknowledged_at == T0 + 100
    with pytest.raises(AlreadyAcknowledgedError, match="already acknowledged by alice"):
        alerts.check_acknowledge(offline.id)
    assert fold(AlertAcknowledged(offline.id, "bob", T0 + 200)) == []
    assert fold(AlertAcknowledged(999_999, "bob", T0 + 200)) == []
    alert = alerts.get(offline.id)
    assert alert is not None and alert.acknowledged_by == "alice"


def test_notices_carry_a_copy_of_the_alert() -> None:
    fold = Harness()
    notices = fold(*(probe("A", T0 + i, "failed") for i in range(3)))
    raised = next(n for n in of_type(notices, AlertRaised) if n.alert.kind == "offline")
    fold(AlertAcknowledged(raised.alert.id, "alice", T0 + 10))
    assert raised.alert.acknowledged is False


def test_alert_queries_filter_and_list_newest_first() -> None:
    fold = Harness()
    fold(*(probe("A", T0 + i, "failed") for i in range(3)))  # degraded (resolved), offline
    fold(usage("B", T0 + 10, 85.0))
    alerts = fold.projections.alerts
    assert [(a.provider, a.kind) for a in alerts.query()] == [
        ("B", "rate_limit"),
        ("A", "offline"),
        ("A", "degraded"),
    ]
    assert [a.kind for a in alerts.query(open_only=True)] == ["rate_limit", "offline"]
    assert [a.kind for a in alerts.query(provider="A")] == ["offline", "degraded"]
    assert [a.kind for a in alerts.query(severity="critical")] == ["offline"]
    assert [a.kind for a in alerts.query(since=T0 + 5)] == ["rate_limit"]
    assert [a.kind for a in alerts.query(limit=1)] == ["rate_limit"]
    offline = alerts.query(severity="critical")[0]
    fold(AlertAcknowledged(offline.id, "alice", T0 + 20))
    assert [a.kind for a in alerts.query(acknowledged=True)] == ["offline"]
    assert [a.kind for a in alerts.query(acknowledged=False)] == ["rate_limit", "degraded"]


def test_resolved_alerts_are_dropped_after_the_retention() -> None:
    fold = Harness(ProjectionSettings(alert_retention_seconds=DAY))
    fold(usage("A", T0, 85.0), usage("A", T0 + 10, 10.0))  # raised and resolved
    fold(usage("B", T0 + 20, 85.0))  # stays open
    fold(usage("C", T0 + 2 * DAY, 85.0))
    assert {a.provider for a in fold.projections.alerts.query()} == {"B", "C"}


# ---- metrics ---------------------------------------------------------------------


def test_minute_buckets_split_at_the_minute() -> None:
    fold = Harness()
    fold(
        probe("A", T0 + 10, latency=100.0),
        probe("A", T0 + 59.9, latency=300.0),
        probe("A", T0 + 60, "timeout", latency=10_000.0),
        probe("B", T0 + 61, "failed", latency=40.0),
        probe("A", T0 + 70, kind="collection", latency=500.0),
    )
    metrics = fold.projections.metrics
    first = metrics.window("A", T0, T0 + 60)
    assert (first.count, first.successes, first.failures, first.uptime) == (2, 2, 0, 1.0)
    assert first.avg_latency_ms == 200.0
    second = metrics.window("A", T0 + 60, T0 + 120, kind="health")
    assert (second.count, second.uptime, second.avg_latency_ms) == (1, 0.0, None)
    assert second.by_outcome == {"success": 0, "failed": 0, "timeout": 1, "rate_limited": 0}
    both = metrics.window("A", T0, T0 + 120)
    assert (both.count, both.failures) == (4, 1)
    system = metrics.window(None, T0, T0 + 120, kind="health")
    assert (system.count, system.failures) == (4, 2)
    assert metrics.window("nobody", T0, T0 + 120).count == 0
    assert sorted(metrics.providers()) == ["A", "B"]


def test_hour_boundaries_and_percentiles() -> None:
    fold = Harness()
    # An hour of fast probes, then an hour of slow ones.
    fold(*(probe("A", T0 + i * 36, latency=float(10 + i % 10)) for i in range(100)))
    fold(*(probe("A", T0 + HOUR + i * 36, latency=800.0) for i in range(100)))
    metrics = fold.projections.metrics
    fast = metrics.window("A", T0, T0 + HOUR)
    slow = metrics.window("A", T0 + HOUR, T0 + 2 * HOUR)
    assert fast.count == slow.count == 100
    assert fast.p50 is not None and 10 <= fast.p50 <= 20
    assert slow.p99 is not None and 700 < slow.p99 <= 1000
    both = metrics.window("A", T0, T0 + 2 * HOUR)
    assert both.p50 is not None and both.p50 <= 20
    assert both.p95 is not None and 700 < both.p95 <= 1000


def test_percentile_estimates_interpolate_within_a_bin() -> None:
    bins = [0] * 28
    bins[11] = 10  # (70, 100] ms
    assert percentile(bins, 0.5) == 85.0
    assert percentile(bins, 1.0) == 100.0
    assert percentile(bins, 0.0) == 73.0  # the first probe's share of the bin
    assert percentile([0] * 28, 0.5) is None
    overflow = [0] * 28
    overflow[27] = 3
    assert percentile(overflow, 0.5) == 30_000


def test_series_gives_a_point_per_step() -> None:
    fold = Harness()
    fold(
        probe("A", T0 + 5, latency=100.0),
        probe("A", T0 + 65, latency=300.0),
        probe("A", T0 + 70, "failed"),
        probe("A", T0 + 190, latency=50.0),
    )
    points = fold.projections.metrics.series("A", T0, T0 + 240, step=60)
    assert [(p.start, p.probes, p.failures, p.avg_latency_ms) for p in points] == [
        (T0, 1, 0, 100.0),
        (T0 + 60, 2, 1, 300.0),
        (T0 + 120, 0, 0, None),
        (T0 + 180, 1, 0, 50.0),
    ]
    assert fold.projections.metrics.series("A", T0, T0) == []
    with pytest.raises(ValueError, match="at most"):
        fold.projections.metrics.series("A", T0, T0 + 30 * DAY, step=1)


def test_three_days_of_probes_stay_bounded_and_answerable() -> None:
    fold = Harness()
    total = 0
    for i in range(int(3 * DAY / 30)):
        at = T0 + i * 30
        fold(probe("A", at, "failed" if i % 20 == 0 else "success", latency=float(50 + i % 100)))
        total += 1
    metrics = fold.projections.metrics
    rollup = metrics.state.health["A"]
    # Two hours of minutes are kept, in hour blocks: the current hour and the two before.
    assert len(rollup.minutes) <= 3
    assert len(metrics.state.health[ALL].minutes) <= 3
    assert len(rollup.hours) <= 3 * 24
    everything = metrics.window("A", T0, T0 + 3 * DAY)
    assert everything.count == total
    assert everything.failures == total // 20
    assert everything.uptime == pytest.approx(0.95)
    assert everything.p50 is not None and 70 <= everything.p50 <= 100
    assert everything.p99 is not None and 100 < everything.p99 <= 150
    last_hour = metrics.window("A", T0 + 3 * DAY - HOUR, T0 + 3 * DAY)
    assert last_hour.count == 120
    two_hours_a_day_ago = metrics.window("A", T0 + 2 * DAY, T0 + 2 * DAY + 2 * HOUR)
    assert two_hours_a_day_ago.count == 240


def test_hours_fold_into_days_and_old_days_are_dropped() -> None:
    settings = ProjectionSettings(
        minute_retention_seconds=HOUR,
        hour_retention_seconds=DAY,
        day_retention_seconds=3 * DAY,
    )
    fold = Harness(settings)
    for i in range(6 * 24):
        fold(probe("A", T0 + i * HOUR + 10, latency=100.0))
    metrics = fold.projections.metrics
    rollup = metrics.state.health["A"]
    assert len(rollup.days) <= 3 and len(rollup.hours) <= 48 and len(rollup.minutes) <= 2
    # The first days are gone; the last three days (less the hours before the floor) remain.
    assert metrics.window("A", T0, T0 + 2 * DAY).count == 0
    kept = metrics.window("A", T0, T0 + 6 * DAY)
    assert 3 * 24 <= kept.count <= 4 * 24
    assert kept.p50 is not None and 70 < kept.p50 <= 100


def test_a_late_probe_lands_in_the_bucket_that_holds_its_time() -> None:
    fold = Harness()
    fold(probe("A", T0 + 10), probe("A", T0 + 5 * HOUR))
    fold(probe("A", T0 + 20, "failed"))  # appended late: its minutes are folded already
    metrics = fold.projections.metrics
    assert metrics.state.health["A"].hours[int(T0)].probes == 2
    assert metrics.window("A", T0, T0 + HOUR).failures == 1


# ---- rate limits -----------------------------------------------------------------


def test_rate_limit_statuses_from_registration_and_changes() -> None:
    fold = Harness()
    fold(registration("A", limit=RateLimitSpec(50, 60.0)), registration("NoLimit"))
    limits = fold.projections.rate_limits
    entry = limits.get("A")
    assert entry is not None
    assert (entry.limit, entry.window_seconds, entry.status, entry.used) == (50, 60.0, "ok", 0)
    assert limits.get("NoLimit") is None
    fold(usage("A", T0, 85.0))
    entry = limits.get("A")
    assert entry is not None and (entry.status, entry.percentage, entry.used) == (
        "warning",
        85.0,
        51,
    )
    fold(usage("A", T0 + 1, 100.0))
    assert [e.status for e in limits.all()] == ["blocked"]
    fold(usage("A", T0 + 2, 20.0, blocked_until=T0 + 60))
    entry = limits.get("A")
    assert entry is not None and (entry.status, entry.blocked_until) == ("blocked", T0 + 60)
    fold(usage("A", T0 + 61, 0.0))
    entry = limits.get("A")
    assert entry is not None and (entry.status, entry.blocked_until) == ("ok", None)
    # A new configured limit measures the last usage against it.
    fold(usage("A", T0 + 62, 50.0), registration("A", limit=RateLimitSpec(36, 60.0)))
    entry = limits.get("A")
    assert entry is not None and (entry.limit, entry.percentage, entry.status) == (
        36,
        83.3,
        "warning",
    )
    fold(ProviderRemoved("A"))  # kept as it last stood: its history stays
    entry = limits.get("A")
    assert entry is not None and (entry.limit, entry.percentage) == (36, 83.3)


def test_rate_limit_high_only_when_usage_rises_at_or_above_the_warning() -> None:
    fold = Harness()
    percentages = [79.9, 80.0, 80.0, 95.0, 90.0, 100.0, 50.0, 85.0]
    notices = [fold(usage("A", T0 + i, p)) for i, p in enumerate(percentages)]
    highs = [
        [(n.percentage, n.severity) for n in of_type(batch, RateLimitHigh)] for batch in notices
    ]
    assert highs == [
        [],
        [(80.0, "warning")],
        [],
        [(95.0, "critical")],
        [],
        [(100.0, "critical")],
        [],
        [(85.0, "warning")],
    ]


# ---- failure analytics -----------------------------------------------------------


def test_failure_analysis_by_provider_kind_and_hour() -> None:
    fold = Harness()
    fold(
        probe("A", T0 + 10, "failed"),
        probe("A", T0 + 20, "timeout"),
        probe("B", T0 + 30, "failed", error_kind="dns"),
        probe("A", T0 + HOUR + 5, "failed", kind="collection", error_kind="invalid_body"),
        probe("C", T0 + HOUR + 6),
        probe("B", T0 + 3 * HOUR, "rate_limited"),
    )
    analysis = fold.projections.failures.analyze(T0, T0 + 2 * HOUR)
    assert analysis.total_failures == 4
    assert analysis.by_provider == {"A": 3, "B": 1}
    assert list(analysis.by_provider) == ["A", "B"]
    assert analysis.by_error_kind == {"dns": 1, "http_5xx": 1, "invalid_body": 1, "timeout": 1}
    assert [(h.start, h.failures) for h in analysis.by_hour] == [(T0, 3), (T0 + HOUR, 1)]
    assert [(p.provider, p.failures) for p in analysis.top_failing_providers] == [
        ("A", 3),
        ("B", 1),
    ]
    assert sorted(analysis.recent_errors) == ["dns", "http_5xx", "invalid_body", "timeout"]
    dns = analysis.recent_errors["dns"]
    assert (dns.provider, dns.at, dns.message) == ("B", T0 + 30, "B said no")
    everything = fold.projections.failures.analyze(T0, T0 + 4 * HOUR, top=1)
    assert everything.total_failures == 5
    assert [p.provider for p in everything.top_failing_providers] == ["A"]
    assert "rate_limited" in everything.recent_errors


def test_failure_hours_are_kept_for_the_retention_only() -> None:
    fold = Harness(ProjectionSettings(failure_hour_retention_seconds=DAY))
    fold(probe("A", T0, "failed"), probe("A", T0 + 2 * DAY, "failed"))
    assert list(fold.projections.failures.state.hours) == [int(T0 + 2 * DAY)]
    assert fold.projections.failures.analyze(T0, T0 + 3 * DAY).total_failures == 1


# ---- the aggregate: notices, snapshots, audit ------------------------------------


def test_apply_adds_log_entries_with_the_seeds_fields() -> None:
    fold = Harness()
    [connection] = of_type(fold.with_log_rows(probe("A", T0 + 0.5, latency=12.5)), LogEntry)
    assert isinstance(connection, LogEntry) and connection.log_type == "connection"
    assert connection.data == {
        "provider": "A",
        "endpoint": "/ping",
        "status": "success",
        "response_time_ms": 12.5,
        "http_status": 200,
        "error_type": None,
        "error_message": None,
        "timestamp": "2023-11-15T00:00:00.500000Z",
    }
    notices = fold.with_log_rows(probe("A", T0 + 1, "failed", kind="collection"))
    entries = of_type(notices, LogEntry)
    assert [e.log_type for e in entries] == ["collection", "failure"]
    assert entries[1].data["error_type"] == "http_5xx" and entries[1].data["probe_kind"] == (
        "collection"
    )
    [limit] = of_type(fold.with_log_rows(usage("A", T0 + 2, 50.0)), LogEntry)
    assert limit.log_type == "rate_limit"
    assert (limit.data["limit_type"], limit.data["current_usage"], limit.data["limit_value"]) == (
        "per_minute",
        30,
        60,
    )
    assert fold.with_log_rows(JobTriggered("health_checks", "alice", T0 + 3)) == []


def test_fold_builds_the_same_state_as_apply_and_skips_applied_positions() -> None:
    live = Harness()
    live(*(probe("A", T0 + i, "failed") for i in range(3)), usage("A", T0 + 5, 85.0))
    replay = Projections()
    for recorded in live.log.events:
        replay.fold(recorded)
    assert replay.state_equal(live.projections) == []
    assert live.projections.apply(live.log.events[-1]) == []  # already applied
    assert live.projections.position == 4


def test_snapshot_restores_into_the_same_state() -> None:
    fold = Harness()
    fold(registration("A", limit=RateLimitSpec(10, 1.0)), probe("A", T0), usage("A", T0, 90.0))
    snapshot = fold.projections.snapshot_state()
    assert set(snapshot) == {
        "maintenance",
        "chains",
        "quotes",
        "providers",
        "metrics",
        "durations",
        "alerts",
        "incidents",
        "rate_limits",
        "failures",
        "__meta__",
    }
    assert all(version >= 1 for version, _ in snapshot.values())
    restored = Projections.restore(snapshot)
    assert restored.position == 3
    assert restored.state_equal(fold.projections) == []
    assert restored.snapshot_state() == snapshot


def test_projections_built_for_some_fold_and_snapshot_those_alone() -> None:
    some = ("maintenance", "chains", "quotes", "providers", "alerts", "rate_limits")
    every = Harness()
    events = [probe("A", T0 + i, "failed") for i in range(3)] + [usage("A", T0 + 5, 90.0)]
    every(*events)
    few = Projections(only=some)
    for recorded in every.log.events:
        few.apply(recorded)
    assert few.folds == some
    assert few.providers.state == every.projections.providers.state
    assert few.alerts.state == every.projections.alerts.state
    assert few.rate_limits.state == every.projections.rate_limits.state
    assert few.metrics.state == Projections().metrics.state  # never folded
    assert few.failures.state == Projections().failures.state
    assert set(few.snapshot_state()) == {*some, "__meta__"}
    # From a snapshot of every projection, or of these alone; either folds these alone.
    for snapshot in (every.projections.snapshot_state(), few.snapshot_state()):
        restored = Projections.restore(snapshot, only=some)
        assert restored.folds == some
        assert restored.snapshot_state() == few.snapshot_state()
    with pytest.raises(ValueError, match="fold together"):
        Projections(only=("alerts",))
    with pytest.raises(ValueError, match="no projection named nothing"):
        Projections(only=("nothing",))


def test_a_snapshot_that_does_not_fit_is_a_clear_mismatch() -> None:
    snapshot = Harness().projections.snapshot_state()
    with pytest.raises(SnapshotMismatch, match="'alerts' is version 99, this cryptomon builds"):
        Projections.restore({**snapshot, "alerts": (99, snapshot["alerts"][1])})
    with pytest.raises(SnapshotMismatch, match="no 'failures' entry"):
        Projections.restore({k: v for k, v in snapshot.items() if k != "failures"})
    with pytest.raises(SnapshotMismatch, match="'metrics' does not decode"):
        Projections.restore({**snapshot, "metrics": (snapshot["metrics"][0], b"\x01garbage")})
    with pytest.raises(SnapshotMismatch, match=r"other settings \(recent_window 10 -> 5\)"):
        Projections.restore(snapshot, ProjectionSettings(recent_window=5))


def test_state_equal_names_each_difference() -> None:
    one, other = Harness(), Harness()
    one(probe("A", T0), probe("B", T0))
    other(probe("A", T0, "failed"), probe("C", T0))
    differences = one.projections.state_equal(other.projections)
    assert "providers.providers['A'].status: 'online' != 'degraded'" in differences
    assert "providers.providers['B']: only in this state" in differences
    assert "providers.providers['C']: only in the other state" in differences
    assert all(len(line) < 300 for line in differences)


def test_states_encode_as_json_too() -> None:
    fold = Harness()
    fold(*(probe("A", T0 + i * 7, "failed" if i % 3 else "success") for i in range(50)))
    fold(usage("A", T0 + 400, 100.0, blocked_until=T0 + 500), registration("B"))
    for projection in fold.projections.all():
        state = projection.state
        assert msgspec.json.decode(msgspec.json.encode(state), type=type(state)) == state


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="minute_retention_seconds <= hour_retention_seconds"):
        ProjectionSettings(minute_retention_seconds=DAY, hour_retention_seconds=HOUR)
    with pytest.raises(ValueError, match="recent_window"):
        ProjectionSettings(recent_window=0)


# ---- properties: replays and snapshots agree -------------------------------------

PROVIDERS = ("A", "B")
SMALL = ProjectionSettings(
    recent_window=4,
    failure_rate_window_seconds=600,
    minute_retention_seconds=HOUR,
    hour_retention_seconds=DAY,
    day_retention_seconds=2 * DAY,
    alert_retention_seconds=DAY,
    failure_hour_retention_seconds=DAY,
    incident_retention_seconds=DAY,
)


@dataclass(frozen=True)
class Ack:
    """Acknowledge the `choice`-th alert existing when the ack comes (or an unknown id)."""

    choice: int


# Mostly seconds apart, sometimes hours or days: enough to fold minutes into hours and days.
gaps = st.one_of(
    st.floats(0, 60),
    st.floats(0, 60),
    st.floats(0, 60),
    st.floats(0, 6 * HOUR),
    st.floats(0, 2 * DAY),
)
probes = st.builds(
    probe,
    st.sampled_from(PROVIDERS),
    st.just(0.0),
    st.sampled_from(["success", "success", "failed", "timeout", "rate_limited"]),
    st.one_of(st.none(), st.floats(0, 40_000)),
    st.sampled_from(["health", "health", "collection"]),
)
others = st.one_of(
    st.builds(
        usage,
        st.sampled_from(PROVIDERS),
        st.just(0.0),
        st.sampled_from([0.0, 50.0, 80.0, 90.0, 100.0]),
        st.one_of(st.none(), st.just(60.0)),
    ),
    st.builds(
        registration,
        st.sampled_from(PROVIDERS),
        key_configured=st.booleans(),
        degraded_latency_ms=st.sampled_from([500, 2000]),
        limit=st.one_of(st.none(), st.just(RateLimitSpec(60, 60.0))),
    ),
    st.builds(ProviderRemoved, st.sampled_from(PROVIDERS)),
    st.builds(Ack, st.integers(0, 5)),
    st.just(JobTriggered("health_checks", "alice", 0.0)),
    # Thresholds changed mid-log (a reload): folded from their position on.
    st.builds(
        MonitoringChanged,
        offline_after_failures=st.integers(1, 3),
        online_after_successes=st.integers(1, 3),
        certificate_warning_seconds=st.sampled_from([14 * DAY, 40 * DAY]),
        failure_ratio_min_probes=st.one_of(st.none(), st.integers(1, 6)),
    ),
)
steps = st.lists(
    st.tuples(gaps, st.one_of(probes, probes, probes, others)), min_size=20, max_size=120
)


def materialize(plan: Sequence[tuple[float, Any]]) -> list[RecordedEvent]:
    """Recorded events from a plan: times from the gaps, acks aimed at existing alerts."""
    log = Log()
    reference = Projections(SMALL)
    now = T0
    for gap, step in plan:
        now += gap
        event: Event
        match step:
            case Ack(choice=choice):
                ids = [a.id for a in reference.alerts.query()] + [7]
                event = AlertAcknowledged(ids[choice % len(ids)], "alice", now)
            case ProbeRecorded():
                event = msgspec.structs.replace(step, started_at=now)
            case RateLimitChanged():
                blocked = None if step.blocked_until is None else now + step.blocked_until
                event = msgspec.structs.replace(step, observed_at=now, blocked_until=blocked)
            case JobTriggered():
                event = msgspec.structs.replace(step, triggered_at=now)
            case _:
                event = step
        log.now = now
        reference.fold(log.record(event))
    return log.events


def fold_all(events: Iterable[RecordedEvent]) -> Projections:
    projections = Projections(SMALL)
    for recorded in events:
        projections.fold(recorded)
    return projections


@settings(max_examples=75, deadline=None)
@given(plan=steps, split=st.floats(0, 1))
def test_folding_with_a_snapshot_in_between_equals_folding_at_once(
    plan: list[tuple[float, Any]], split: float
) -> None:
    events = materialize(plan)
    whole = fold_all(events)
    cut = round(split * len(events))
    prefix = fold_all(events[:cut])
    resumed = Projections.restore(prefix.snapshot_state(), SMALL)
    for recorded in events[cut:]:
        resumed.apply(recorded)
    assert resumed.state_equal(whole) == []
    assert resumed.snapshot_state() == whole.snapshot_state()


@settings(max_examples=50, deadline=None)
@given(plan=steps)
def test_independent_replays_agree(plan: list[tuple[float, Any]]) -> None:
    events = materialize(plan)
    live = Projections(SMALL)
    for recorded in events:
        live.apply(recorded)
    assert fold_all(events).state_equal(live) == []
    # The system rollup is the sum of the providers', whatever was folded away.
    metrics = live.metrics
    since, until = T0 - DAY, events[-1].recorded_at + DAY
    system = metrics.window(None, since, until)
    each = [metrics.window(name, since, until) for name in metrics.providers()]
    assert system.count == sum(stats.count for stats in each)
    assert system.failures == sum(stats.failures for stats in each)
    for projection in live.all():
        state = projection.state
        assert msgspec.json.decode(msgspec.json.encode(state), type=type(state)) == state


def late_by(events: Sequence[RecordedEvent], lateness: Sequence[float]) -> list[RecordedEvent]:
    """The same log with probes started earlier by `lateness` (one each, in turn): late
    appends, which land in coarser buckets or an hour already left."""
    out = []
    for recorded, late in zip(events, [*lateness, *[0.0] * len(events)], strict=False):
        probe = recorded.event
        if isinstance(probe, ProbeRecorded) and late:
            started = probe.started_at - late
            recorded = msgspec.structs.replace(
                recorded, event=msgspec.structs.replace(probe, started_at=started)
            )
        out.append(recorded)
    return out


@settings(max_examples=75, deadline=None)
@given(
    plan=steps,
    lateness=st.lists(st.one_of(st.just(0.0), st.just(0.0), st.floats(0, 3 * HOUR)), max_size=120),
    cuts=st.lists(st.integers(0, 120), max_size=8),
    overlap=st.integers(0, 5),
)
def test_folding_pages_equals_applying_each_event(
    plan: list[tuple[float, Any]], lateness: list[float], cuts: list[int], overlap: int
) -> None:
    """A replay folds pages of columns (projections with `folds_pages` take a page at once):
    the same state as applying event by event, late probes and re-read positions included."""
    events = late_by(materialize(plan), lateness)
    live = Projections(SMALL)
    for recorded in events:
        live.apply(recorded)
    paged = Projections(SMALL)
    bounds = sorted({0, len(events), *(min(cut, len(events)) for cut in cuts)})
    for start, end in pairwise(bounds):
        page = events[max(0, start - overlap) : end]  # the overlap was folded already
        paged.fold_columns(
            [r.position for r in page], [r.recorded_at for r in page], [r.event for r in page]
        )
    assert paged.position == live.position
    assert paged.state_equal(live) == []
    assert paged.snapshot_state() == live.snapshot_state()
