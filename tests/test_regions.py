"""Regions in the folds: each region's view of a provider, the overall status from the
README's table, the region-lost alert, metrics and rate limits per region."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from test_projections import T0, Harness, probe, registration

from cryptomon.config import NotificationChannel
from cryptomon.events.types import (
    Event,
    MaintenanceWindowScheduled,
    ProbeOutcome,
    ProbeRecorded,
    RateLimitChanged,
    RateLimitSpec,
    RegionJoined,
    RegionLost,
    encode_event,
)
from cryptomon.notify.messages import from_notice, subject_of, wanted
from cryptomon.projections import (
    AlertRaised,
    AlertResolved,
    LogEntry,
    Notice,
    Projections,
    ProviderStatusChanged,
)
from cryptomon.projections.base import regional
from cryptomon.projections.notices import PROVIDER_STATUSES, ProviderStatus
from cryptomon.projections.providers import RegionView, overall


def at_region(region: str, at: float, outcome: ProbeOutcome = "success") -> ProbeRecorded:
    return msgspec.structs.replace(probe("P", at, outcome), region=region)


def regional_harness() -> Harness:
    harness = Harness()
    harness(registration("P"))
    return harness


def status_changes(notices: list[object]) -> list[ProviderStatusChanged]:
    return [n for n in notices if isinstance(n, ProviderStatusChanged)]


# ---- the table -------------------------------------------------------------------


@pytest.mark.parametrize(
    "statuses", [*itertools.product(PROVIDER_STATUSES, repeat=2), ("offline",) * 3]
)
def test_the_table_over_every_combination_of_two_regions(statuses: tuple[str, ...]) -> None:
    regions = {
        f"r{i}": RegionView(probe_status=status)  # type: ignore[arg-type]
        for i, status in enumerate(statuses)
    }
    reporting = {name: view.probe_status for name, view in regions.items()}
    reporting = {name: status for name, status in reporting.items() if status != "unknown"}
    status, named = overall(regions)
    if not reporting:
        assert (status, named) == ("unknown", ())
    elif len(set(reporting.values())) == 1:
        assert status == next(iter(reporting.values()))
        assert named == tuple(sorted(reporting))
    else:
        assert status == "degraded"
        assert named == tuple(sorted(n for n, s in reporting.items() if s != "online"))


def test_offline_only_where_every_reporting_region_sees_it_so() -> None:
    views: dict[str, ProviderStatus] = {"eu": "offline", "us": "offline", "ap": "unknown"}
    regions = {name: RegionView(probe_status=status) for name, status in views.items()}
    assert overall(regions) == ("offline", ("eu", "us"))
    regions["us"].probe_status = "online"
    assert overall(regions) == ("degraded", ("eu",))


# ---- the fold --------------------------------------------------------------------


def test_down_in_one_region_is_regional_degraded_and_clears() -> None:
    harness = regional_harness()
    notices = harness(at_region("eu", T0), at_region("us", T0 + 1))
    assert harness.status("P") == "online"
    notices = harness(
        *(
            event
            for n in range(3)
            for event in (
                at_region("eu", T0 + 30 * (n + 1), "timeout"),
                at_region("us", T0 + 30 * (n + 1) + 1),
            )
        )
    )
    # eu alone: degraded at its first failure, still degraded (now offline there) after.
    assert [c.new_status for c in status_changes(notices)] == ["degraded"]
    state = harness.projections.providers.get("P")
    assert state is not None
    assert state.regions["eu"].probe_status == "offline"
    assert state.regions["us"].probe_status == "online"
    assert state.status_regions == ("eu",)
    raised = [n.alert for n in notices if isinstance(n, AlertRaised)]
    assert [(a.kind, a.regions) for a in raised] == [("degraded", ("eu",))]
    assert "regional: eu" in raised[0].message
    # Back in eu: online, the alert resolves.
    notices = harness(at_region("eu", T0 + 200), at_region("eu", T0 + 230))
    assert harness.status("P") == "online"
    assert [n.alert.kind for n in notices if isinstance(n, AlertResolved)] == ["degraded"]


def test_offline_everywhere_names_every_region() -> None:
    harness = regional_harness()
    notices = harness(
        *(
            at_region(region, T0 + 30 * n + offset, "failed")
            for n in range(3)
            for region, offset in (("eu", 0), ("us", 1))
        )
    )
    assert harness.status("P") == "offline"
    raised = [n.alert for n in notices if isinstance(n, AlertRaised)]
    assert [(a.kind, a.regions) for a in raised if a.kind == "offline"] == [
        ("offline", ("eu", "us"))
    ]


def test_a_lost_region_is_unknown_not_offline_and_raises_the_service_alert() -> None:
    harness = regional_harness()
    harness(
        *(
            at_region(region, T0 + 30 * n + offset, outcome)
            for n in range(3)
            for region, offset, outcome in (("eu", 0, "timeout"), ("us", 1, "success"))
        )
    )
    assert harness.status("P") == "degraded"
    notices = harness(RegionLost(region="eu", instance="host-b:7", lost_at=T0 + 100))
    state = harness.projections.providers.get("P")
    assert state is not None
    assert state.regions["eu"].probe_status == "unknown"
    assert harness.status("P") == "online"  # only us reports, and sees it online
    raised = [n.alert for n in notices if isinstance(n, AlertRaised)]
    assert [(a.provider, a.kind, a.severity, a.regions) for a in raised] == [
        (None, "region_lost", "critical", ("eu",))
    ]
    resolved = [n.alert.kind for n in notices if isinstance(n, AlertResolved)]
    assert resolved == ["degraded"]
    # Lost twice (two survivors racing) raises one alert; joining resolves it.
    assert harness(RegionLost(region="eu", instance="host-c:8", lost_at=T0 + 101)) == []
    notices = harness(RegionJoined(region="eu", instance="host-a:9", joined_at=T0 + 150))
    assert [(n.alert.kind, n.alert.provider) for n in notices if isinstance(n, AlertResolved)] == [
        ("region_lost", None)
    ]
    # Its next probes judge it in eu afresh.
    harness(at_region("eu", T0 + 160))
    assert state.regions["eu"].probe_status == "online"
    assert harness.status("P") == "online"


def test_every_region_lost_makes_the_provider_unknown() -> None:
    harness = regional_harness()
    harness(at_region("eu", T0))
    notices = harness(RegionLost(region="eu", instance="x", lost_at=T0 + 10))
    assert harness.status("P") == "unknown"
    assert [(c.old_status, c.new_status) for c in status_changes(notices)] == [
        ("online", "unknown")
    ]


def test_a_replay_from_a_snapshot_equals_the_live_fold() -> None:
    harness = regional_harness()
    events: list[Event] = [
        at_region(region, T0 + 30 * n + offset, "timeout" if n % 4 == 1 else "success")
        for n in range(12)
        for region, offset in (("eu", 0), ("us", 1))
    ]
    lost = RegionLost(region="us", instance="x", lost_at=T0 + 400)
    joined = RegionJoined(region="us", instance="y", joined_at=T0 + 500)
    events[10:10] = [lost]
    events[17:17] = [joined]
    for event in events:
        harness.projections.apply(harness.log.record(event))
    recorded = harness.log.events
    half = Projections()
    for item in recorded[:10]:
        half.apply(item)
    resumed = Projections.restore(dict(half.snapshot_state()))
    for item in recorded[10:]:
        resumed.apply(item)
    assert resumed.state_equal(harness.projections) == []
    state = harness.projections.providers.get("P")
    assert state is not None and set(state.regions) == {"eu", "us"}


def test_probes_without_a_region_encode_as_before() -> None:
    plain = probe("P", T0)
    assert b"region" not in encode_event(plain)
    assert b"region" in encode_event(msgspec.structs.replace(plain, region="eu"))


def test_metrics_per_region_and_overall() -> None:
    harness = regional_harness()
    harness(
        at_region("eu", T0),
        at_region("eu", T0 + 30, "failed"),
        at_region("us", T0 + 31),
    )
    metrics = harness.projections.metrics
    assert metrics.window("P", T0, T0 + 60).count == 3
    assert metrics.window(regional("P", "eu"), T0, T0 + 60).count == 2
    assert metrics.window(regional("P", "us"), T0, T0 + 60).uptime == 1.0
    assert metrics.providers() == ["P"]


def test_rate_limit_usage_sums_over_regions() -> None:
    harness = Harness()
    harness(registration("P", limit=RateLimitSpec(100, 60.0)))

    def report(region: str, used: int) -> RateLimitChanged:
        return RateLimitChanged("P", used, 50, 60.0, used * 2.0, T0, region=region)

    harness(report("eu", 30), report("us", 40))
    entry = harness.projections.rate_limits.get("P")
    assert entry is not None
    assert (entry.used, entry.limit, entry.percentage) == (70, 100, 70.0)


def test_the_region_alert_reaches_channels_filtering_providers() -> None:
    harness = Harness()
    notices = harness(RegionLost(region="eu", instance="x", lost_at=T0))
    raised = next(n for n in notices if isinstance(n, AlertRaised))
    subject = subject_of(raised)
    assert subject is not None
    channel = NotificationChannel(
        name="ops", kind="webhook", url="https://hooks.example/x", providers=("Binance",)
    )
    assert wanted(channel, subject.event, subject.severity, subject.provider, None)
    note = from_notice("ops", raised, subject, None)
    assert note.title == "cryptomon: region_lost alert raised"
    assert note.provider is None
    assert note.alert is not None and note.alert.regions == ("eu",)


def test_log_rows_name_the_region_only_when_the_probe_has_one() -> None:
    harness = regional_harness()
    rows = [n for n in harness.with_log_rows(at_region("eu", T0)) if isinstance(n, LogEntry)]
    assert [row.data["region"] for row in rows] == ["eu"]
    rows = [n for n in harness.with_log_rows(probe("P", T0 + 1)) if isinstance(n, LogEntry)]
    assert ["region" in row.data for row in rows] == [False]


def test_the_failure_rate_is_judged_per_region_and_its_alert_names_them() -> None:
    harness = regional_harness()
    # b fails every probe, a none: a's successes do not dilute b's rate.
    events: list[Event] = []
    for n in range(12):
        events += [at_region("a", T0 + 10 * n), at_region("b", T0 + 10 * n + 1, "timeout")]
    notices = harness(*events)
    [raised] = [
        n.alert for n in notices if isinstance(n, AlertRaised) and n.alert.kind == "failure_rate"
    ]
    assert raised.regions == ("b",) and "in b" in raised.message
    # b recovers for a window: the alert resolves.
    later = [at_region("b", T0 + 1000 + 10 * n) for n in range(12)]
    notices = harness(*later)
    resolved = {n.alert.kind for n in notices if isinstance(n, AlertResolved)}
    assert resolved == {"degraded", "failure_rate"}


def test_a_block_of_one_regions_share_is_that_regions_rate_limited() -> None:
    harness = Harness()
    harness(registration("P", limit=RateLimitSpec(100, 60.0)))
    harness(at_region("a", T0), at_region("b", T0 + 1))
    block = RateLimitChanged(
        "P", 50, 50, 60.0, 100.0, T0 + 2, blocked_until=T0 + 60, region="a", reason="blocked"
    )
    notices = harness(block)
    state = harness.projections.providers.get("P")
    assert state is not None
    assert state.regions["a"].probe_status == "rate_limited"
    assert harness.status("P") == "degraded" and state.status_regions == ("a",)
    assert [c.new_status for c in status_changes(notices)] == ["degraded"]


def test_a_provider_probed_from_fewer_regions_is_judged_by_those_left() -> None:
    harness = regional_harness()
    harness(
        *(
            at_region(region, T0 + 30 * n + offset, outcome)
            for n in range(3)
            for region, offset, outcome in (("eu", 0, "success"), ("us", 1, "timeout"))
        )
    )
    assert harness.status("P") == "degraded"
    narrowed = msgspec.structs.replace(registration("P"), regions=("eu",))
    notices = harness(narrowed)
    state = harness.projections.providers.get("P")
    assert state is not None and set(state.regions) == {"eu"}
    assert harness.status("P") == "online"
    assert [n.alert.kind for n in notices if isinstance(n, AlertResolved)] == ["degraded"]


def test_degraded_from_other_regions_is_said_again_and_its_alert_follows() -> None:
    harness = regional_harness()
    notices: list[Notice] = []
    for n in range(3):
        notices += harness(at_region("a", T0 + 30 * n, "timeout"), at_region("b", T0 + 30 * n + 1))
    [alert] = [n.alert for n in notices if isinstance(n, AlertRaised)]
    assert alert.regions == ("a",)
    # b goes down, a comes back: still degraded, now from b.
    notices = []
    for n in range(3, 6):
        notices += harness(at_region("b", T0 + 30 * n + 1, "timeout"), at_region("a", T0 + 30 * n))
    moved = [c for c in status_changes(notices) if c.regions == ("b",)]
    assert moved and moved[-1].old_status == moved[-1].new_status == "degraded"
    kept = harness.projections.alerts.get(alert.id)
    assert kept is not None and kept.resolved_at is None and kept.regions == ("b",)


def test_a_lost_region_no_longer_holds_the_failure_rate_alert_open() -> None:
    harness = regional_harness()
    events: list[Event] = []
    for n in range(12):
        events += [at_region("a", T0 + 10 * n), at_region("b", T0 + 10 * n + 1, "timeout")]
    harness(*events)
    notices = harness(RegionLost(region="b", instance="x", lost_at=T0 + 200))
    assert "failure_rate" in {n.alert.kind for n in notices if isinstance(n, AlertResolved)}


def test_the_rate_limit_alert_judges_the_region_nearest_its_share() -> None:
    harness = Harness()
    harness(registration("P", limit=RateLimitSpec(100, 60.0)))

    def report(region: str, used: int, at: float) -> RateLimitChanged:
        return RateLimitChanged("P", used, 50, 60.0, used * 2.0, at, region=region)

    notices = harness(report("eu", 43, T0))
    assert [n.alert.kind for n in notices if isinstance(n, AlertRaised)] == ["rate_limit"]
    # us spends little of its share: eu is still at 86% of its own.
    assert not [n for n in harness(report("us", 25, T0 + 1)) if isinstance(n, AlertResolved)]
    notices = harness(report("eu", 10, T0 + 2))
    assert [n.alert.kind for n in notices if isinstance(n, AlertResolved)] == ["rate_limit"]


def test_a_window_left_is_not_entered_again_by_a_region_whose_clock_lags() -> None:
    harness = regional_harness()
    window = MaintenanceWindowScheduled(
        window_id="api:w", name="w", source="api", providers=("P",), start=T0, end=T0 + 100
    )
    harness(window, at_region("a", T0 + 10), at_region("b", T0 + 11))
    assert harness.status("P") == "maintenance"
    harness(at_region("b", T0 + 101))  # b's clock: the window is over
    assert harness.status("P") != "maintenance"
    harness(at_region("a", T0 + 95))  # a's clock lags: still inside, for a
    assert harness.status("P") != "maintenance"
