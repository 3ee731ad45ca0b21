"""Incidents: a provider's overlapping availability alerts as one outage. The fold (by hand
and with properties: every availability alert in exactly one incident, a provider's
incidents never overlapping, replay equal to live, page by page too), and REST through the
app."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient
from standins import StandIn
from test_chains import Fold, chain_of, head, price, probed, quoted
from test_http import Service, config_text
from test_projections import (
    DAY,
    SMALL,
    T0,
    Ack,
    Harness,
    certified,
    late_by,
    materialize,
    probe,
    registration,
    steps,
    usage,
)

from cryptomon.config import ConfigError, load_config
from cryptomon.events.types import (
    AlertAcknowledged,
    MonitoringChanged,
    ProviderPaused,
    ProviderResumed,
    RateLimitSpec,
    RecordedEvent,
)
from cryptomon.http.settings import Settings
from cryptomon.isotime import iso_time
from cryptomon.probing.monitor import monitoring_of
from cryptomon.projections import (
    INCIDENT_KINDS,
    AlertRaised,
    Incident,
    IncidentClosed,
    IncidentEscalated,
    IncidentOpened,
    Notice,
    Projections,
    ProjectionSettings,
    with_needs,
)
from cryptomon.readmodels import projection_settings
from cryptomon.service.app import create_app
from cryptomon.ws.messages import notice_frame

# The service records the file's thresholds at start-up: these are the defaults it records.
THRESHOLDS = MonitoringChanged(failure_ratio_min_probes=5)


def incident_notices(notices: Iterable[Notice]) -> list[tuple[str, int, str]]:
    """(what happened, incident id, its severity then) for each incident notice."""
    names = {IncidentOpened: "opened", IncidentEscalated: "escalated", IncidentClosed: "closed"}
    return [
        (names[type(n)], n.incident.id, n.incident.severity)
        for n in notices
        if isinstance(n, IncidentOpened | IncidentEscalated | IncidentClosed)
    ]


def alert_kinds(incident: Incident) -> list[str]:
    return [alert.kind for alert in incident.alerts]


# ---- the fold, by hand ---------------------------------------------------------------


def test_degraded_then_offline_then_back_is_one_incident_that_escalates_and_closes() -> None:
    fold = Harness()
    fold(THRESHOLDS, registration("A"), *(probe("A", T0 + i) for i in range(5)))
    opened = fold(probe("A", T0 + 10, "failed"))  # 1 of the last 6: degraded
    assert incident_notices(opened) == [("opened", 1, "warning")]
    [notice] = [n for n in opened if isinstance(n, IncidentOpened)]
    assert (notice.at, notice.incident.started_at, notice.incident.ended_at) == (
        T0 + 10,
        T0 + 10,
        None,
    )
    assert notice.position == fold.log.position
    # Offline resolves the degraded alert and raises its own in one event: the same incident.
    worse = fold(probe("A", T0 + 20, "failed"), probe("A", T0 + 30, "timeout"))
    assert incident_notices(worse) == [("escalated", 1, "critical")]
    incidents = fold.projections.incidents
    [incident] = incidents.query()
    assert alert_kinds(incident) == ["degraded", "offline"]
    assert incident.open_alerts == 1 and incident.ended_at is None
    # Acknowledged: the incident keeps who and when, even after the alert is long gone.
    offline = incident.alerts[1]
    fold(AlertAcknowledged(offline.id, "alice", T0 + 40, "on it"))
    assert (incident.alerts[1].acknowledged_by, incident.alerts[1].acknowledged_at) == (
        "alice",
        T0 + 40,
    )
    assert incident.alerts[1].note == "on it"
    back = fold(probe("A", T0 + 60), probe("A", T0 + 90))
    assert incident_notices(back) == [("closed", 1, "critical")]
    assert (incident.ended_at, incident.duration) == (T0 + 90, 80.0)
    assert incident.closed_position == fold.log.position
    assert incidents.query(open_only=True) == [] and incidents.query(open_only=False) == [incident]
    # The next outage is the next incident.
    again = fold(*(probe("A", T0 + 100 + i, "failed") for i in range(3)))
    assert incident_notices(again) == [("opened", 2, "critical")]


def test_each_incident_notice_is_a_feed_message_on_the_alerts_topic() -> None:
    fold = Harness()
    fold(THRESHOLDS, registration("A"), *(probe("A", T0 + i) for i in range(5)))
    notices = fold(probe("A", T0 + 10, "failed"), probe("A", T0 + 11, "failed"))
    notices += fold(probe("A", T0 + 12, "failed"), probe("A", T0 + 20), probe("A", T0 + 21))
    frames = [
        notice_frame(n, fold.projections)
        for n in notices
        if isinstance(n, IncidentOpened | IncidentEscalated | IncidentClosed)
    ]
    messages = [msgspec.json.decode(frame.data) for frame in frames]
    assert [(m["type"], m["incident"]["severity"]) for m in messages] == [
        ("incident_opened", "warning"),
        ("incident_escalated", "critical"),
        ("incident_closed", "critical"),
    ]
    assert {(frame.topic, frame.provider) for frame in frames} == {("alerts", "A")}
    assert [frame.position for frame in frames] == [m["position"] for m in messages]
    assert messages[-1]["incident"]["ended_at"] == iso_time(T0 + 21)


def test_certificate_rate_limit_and_stale_quote_alerts_never_join_an_incident() -> None:
    fold = Harness()
    fold(THRESHOLDS, registration("A", limit=RateLimitSpec(60, 60.0)))
    notices = fold(certified("A", T0, days_left=5), usage("A", T0 + 1, 85.0))
    assert {n.alert.kind for n in notices if isinstance(n, AlertRaised)} == {
        "certificate",
        "rate_limit",
    }
    assert incident_notices(notices) == []
    # An outage while both are open is an incident of its own alerts alone.
    down = fold(*(probe("A", T0 + 10 + i, "failed") for i in range(3)))
    assert incident_notices(down) == [("opened", 1, "critical")]
    [incident] = fold.projections.incidents.query()
    assert alert_kinds(incident) == ["offline"]
    # It ends with its own alerts, while the certificate and rate-limit alerts stay open.
    fold(probe("A", T0 + 20), probe("A", T0 + 21))
    assert incident.ended_at == T0 + 21
    assert {a.kind for a in fold.projections.alerts.query(open_only=True)} >= {"certificate"}

    quotes = Fold()
    quoted(quotes, "P", "Q", "Old")
    stale = quotes(price("Old", T0, 50_000, price_time=T0 - 61))
    assert [n.alert.kind for n in stale if isinstance(n, AlertRaised)] == ["quote_stale"]
    assert incident_notices(stale) == [] and quotes.projections.incidents.query() == []


def test_a_lagging_node_that_goes_offline_is_one_incident() -> None:
    fold = Fold()
    chain_of(fold, "A", "B", "C")
    fold(head("A", T0, 100), head("B", T0 + 1, 100), head("C", T0 + 2, 100))
    fold(head("B", T0 + 30, 120), head("C", T0 + 31, 120), head("A", T0 + 32, 101))
    lagging = fold(head("B", T0 + 60, 121), head("C", T0 + 61, 121), head("A", T0 + 62, 102))
    assert incident_notices(lagging) == [("opened", 1, "warning")]
    # Then its probes fail: offline joins the lagging node's incident, a critical one now.
    down = fold(*(probed("A", T0 + 90 + i, "failed") for i in range(3)))
    [incident] = fold.projections.incidents.query()
    assert alert_kinds(incident)[:1] == ["lagging"] and "offline" in alert_kinds(incident)
    assert incident.severity == "critical"
    assert incident_notices(down) == [("escalated", 1, "critical")]


def test_pausing_a_provider_closes_its_incident() -> None:
    fold = Harness()
    fold(THRESHOLDS, registration("A"), *(probe("A", T0 + i, "failed") for i in range(3)))
    [incident] = fold.projections.incidents.query(open_only=True)
    closed = fold(ProviderPaused("A", "alice", T0 + 50))
    assert incident_notices(closed) == [("closed", 1, "critical")]
    assert incident.ended_at == fold.log.events[-1].recorded_at


def test_an_incident_never_starts_before_the_last_one_of_its_provider_ended() -> None:
    """A collection probe that started before the probe which ended the last outage, and was
    recorded after it, raises the failure rate at its own start: the incident it opens
    starts where the last one ended, so the two do not overlap."""
    fold = Harness()
    fold(MonitoringChanged(failure_ratio_min_probes=3), registration("A"))
    # Offline and 3 of 3 failed: both alerts, one incident.
    fold(*(probe("A", T0 + i, "failed") for i in range(3)))
    # Online at T0 + 20, the rate back at 3 of 6 at T0 + 30: closed then.
    fold(probe("A", T0 + 10), probe("A", T0 + 20), probe("A", T0 + 30))
    [first] = fold.projections.incidents.query()
    assert (alert_kinds(first), first.ended_at) == (["failure_rate", "offline"], T0 + 30)
    late = fold(probe("A", T0 + 5, "failed", kind="collection"))  # 4 of 7: over it again
    [opened] = [n for n in late if isinstance(n, IncidentOpened)]
    [alert] = opened.incident.alerts
    assert (alert.kind, alert.raised_at) == ("failure_rate", T0 + 5)
    assert opened.incident.started_at == first.ended_at == T0 + 30


def test_closed_incidents_are_dropped_after_the_retention_by_event_time() -> None:
    fold = Harness(ProjectionSettings(incident_retention_seconds=DAY))
    # No failure rate here: its alert would stay open (and its incident) until a probe
    # two days later shows the rate back under the threshold.
    fold(MonitoringChanged(failure_ratio_min_probes=50), registration("A"), registration("B"))
    fold(*(probe("A", T0 + i, "failed") for i in range(3)), probe("A", T0 + 10))
    fold(probe("A", T0 + 11))  # closed at T0 + 11
    fold(*(probe("B", T0 + 100 + i, "failed") for i in range(3)))  # stays open
    assert [i.id for i in fold.projections.incidents.query()] == [2, 1]
    # A day and more later a new incident opens: the first, closed a day before, goes.
    fold(*(probe("A", T0 + 2 * DAY + i, "failed") for i in range(3)))
    state = fold.projections.incidents.state
    assert sorted(state.incidents) == [2, 3] and state.next_id == 4
    assert all(incident_id in (2, 3) for incident_id in state.by_alert.values())
    assert [i for _, i in state.ended] == []


def test_a_snapshot_from_before_incidents_rebuilds_them_alone() -> None:
    """An upgrade to this version: the snapshot has no incidents, which are folded from the
    start of the log (with what they read); every other projection continues from it."""
    fold = Harness()
    fold(THRESHOLDS, registration("A"), *(probe("A", T0 + i, "failed") for i in range(3)))
    fold(probe("A", T0 + 10), probe("A", T0 + 11))
    snapshot = dict(fold.projections.snapshot_state())
    del snapshot["incidents"]
    restored = Projections.restore(snapshot, partial=True)
    assert restored.stale == ("incidents",)
    rebuilt = Projections(only=with_needs(restored.stale))
    for recorded in fold.log.events:
        rebuilt.fold(recorded)
    restored.adopt(rebuilt)
    assert restored.state_equal(fold.projections) == []
    assert [alert_kinds(i) for i in restored.incidents.query()] == [["offline", "failure_rate"]]


# ---- properties ------------------------------------------------------------------------

# Plans of outages: mostly failing probes seconds apart (so alerts overlap), collection
# probes (the failure rate), slow answers (degraded), certificates and rate limits (alerts
# that never join an incident), acknowledgements, pauses, thresholds changed, and now and
# then hours or days between two steps (SMALL keeps resolved alerts and incidents a day).
outage_probes = st.builds(
    probe,
    st.sampled_from(("A", "B")),
    st.just(0.0),
    st.sampled_from(["success", "success", "failed", "failed", "timeout", "rate_limited"]),
    st.sampled_from([100.0, 100.0, 100.0, 5000.0]),
    st.sampled_from(["health", "health", "collection"]),
)
rarely = st.one_of(
    st.builds(ProviderPaused, st.sampled_from(("A", "B")), st.just("alice"), st.just(T0)),
    st.builds(ProviderResumed, st.sampled_from(("A", "B")), st.just("alice"), st.just(T0)),
    st.builds(MonitoringChanged, failure_ratio_min_probes=st.one_of(st.none(), st.integers(1, 6))),
)
outage_others = st.one_of(
    st.builds(usage, st.sampled_from(("A", "B")), st.just(0.0), st.sampled_from([10.0, 90.0])),
    st.builds(
        lambda name, days: certified(name, 0.0, days), st.sampled_from(("A", "B")), st.just(2)
    ),
    st.builds(Ack, st.integers(0, 5)),
)


def weighted(choice: int) -> st.SearchStrategy[Any]:
    """Of 20 steps: 17 probes, 2 of the others, 1 pause, resume or change of thresholds."""
    return outage_probes if choice < 17 else outage_others if choice < 19 else rarely


outage_steps = st.lists(
    st.tuples(
        st.one_of(st.floats(0, 30), st.floats(0, 30), st.floats(0, 30), st.floats(0, 2 * DAY)),
        st.integers(0, 19).flatmap(weighted),
    ),
    min_size=20,
    max_size=150,
)
plans = st.one_of(outage_steps, steps)

# SMALL's thresholds, but incidents kept for ever: every one a plan opens is there to check.
KEEP_ALL = msgspec.structs.replace(SMALL, incident_retention_seconds=10_000 * DAY)


def live(
    events: Sequence[RecordedEvent], settings: ProjectionSettings = KEEP_ALL
) -> tuple[Projections, list[Notice]]:
    projections = Projections(settings)
    notices: list[Notice] = []
    for recorded in events:
        notices += projections.apply(recorded)
    return projections, notices


def check_incidents(projections: Projections, notices: Sequence[Notice]) -> None:
    """What must hold of the incidents a live fold built, given the notices it announced."""
    incidents = projections.incidents.state.incidents
    raised = {n.alert.id: n.alert for n in notices if isinstance(n, AlertRaised)}
    # Every availability alert is in exactly one incident; no other alert is in any.
    members: dict[int, list[int]] = defaultdict(list)
    for incident in incidents.values():
        for alert in incident.alerts:
            members[alert.id].append(incident.id)
    availability = {i for i, alert in raised.items() if alert.kind in INCIDENT_KINDS}
    assert set(members) == availability
    assert all(len(ids) == 1 for ids in members.values())
    assert projections.incidents.state.by_alert == {a: ids[0] for a, ids in members.items()}
    # Numbered 1, 2, 3... in the order opened, and opened in that order.
    assert list(incidents) == list(range(1, len(incidents) + 1))
    opened = [n.incident.id for n in notices if isinstance(n, IncidentOpened)]
    assert opened == list(incidents)
    closed = [n.incident.id for n in notices if isinstance(n, IncidentClosed)]
    assert sorted(closed) == [i.id for i in incidents.values() if i.ended_at is not None]
    by_provider: dict[str, list[Incident]] = defaultdict(list)
    alerts = projections.alerts
    for incident in incidents.values():
        by_provider[incident.provider].append(incident)
        assert {alert.id for alert in incident.alerts} <= set(raised)
        assert all(raised[a.id].provider == incident.provider for a in incident.alerts)
        # The worst severity of its alerts; open while one of them is.
        worst = "critical" if any(a.severity == "critical" for a in incident.alerts) else "warning"
        assert incident.severity == worst
        still_open = [a for a in incident.alerts if a.resolved_at is None]
        assert incident.open_alerts == len(still_open)
        assert (incident.ended_at is None) == bool(still_open)
        for entry in incident.alerts:
            kept = alerts.get(entry.id)
            if kept is not None:  # the alerts fold drops resolved alerts sooner
                assert (kept.resolved_at is None) == (entry.resolved_at is None)
                assert (kept.acknowledged, kept.acknowledged_by, kept.acknowledged_at) == (
                    entry.acknowledged,
                    entry.acknowledged_by,
                    entry.acknowledged_at,
                )
        if incident.ended_at is not None:
            assert incident.duration is not None and incident.duration >= 0
    # A provider's incidents never overlap: each starts when or after the one before ended,
    # and only its last may be open.
    for provider, own in by_provider.items():
        for before, after in pairwise(own):
            assert before.ended_at is not None, provider
            assert after.started_at >= before.ended_at, provider
        assert [i.id for i in own if i.ended_at is None] == [
            i.id for i in own[-1:] if i.ended_at is None
        ]
        open_id = projections.incidents.state.open.get(provider)
        assert open_id == (own[-1].id if own[-1].ended_at is None else None)


@settings(max_examples=100, deadline=None)
@given(plan=plans, lateness=st.lists(st.one_of(st.just(0.0), st.floats(0, 600)), max_size=150))
def test_every_availability_alert_is_in_one_incident_and_a_providers_never_overlap(
    plan: list[tuple[float, Any]], lateness: list[float]
) -> None:
    """Over made-up logs of two providers (failures, rate limits, registrations, removals,
    acknowledgements, thresholds changed), probes recorded late included."""
    events = late_by(materialize(plan), lateness)
    projections, notices = live(events)
    check_incidents(projections, notices)


@settings(max_examples=75, deadline=None)
@given(
    plan=plans,
    lateness=st.lists(st.one_of(st.just(0.0), st.floats(0, 600)), max_size=150),
    cuts=st.lists(st.integers(0, 150), max_size=8),
    split=st.floats(0, 1),
)
def test_a_replay_builds_the_incidents_the_live_fold_did_page_by_page_and_from_a_snapshot(
    plan: list[tuple[float, Any]], lateness: list[float], cuts: list[int], split: float
) -> None:
    """With SMALL's retention of a day, so incidents are pruned on the way."""
    events = late_by(materialize(plan), lateness)
    served, _ = live(events, SMALL)
    paged = Projections(SMALL)
    bounds = sorted({0, len(events), *(min(cut, len(events)) for cut in cuts)})
    for start, end in pairwise(bounds):
        page = events[start:end]
        paged.fold_columns(
            [r.position for r in page], [r.recorded_at for r in page], [r.event for r in page]
        )
    assert paged.state_equal(served) == []
    assert paged.incidents.state == served.incidents.state
    cut = round(split * len(events))
    prefix = Projections(SMALL)
    for recorded in events[:cut]:
        prefix.fold(recorded)
    resumed = Projections.restore(prefix.snapshot_state(), SMALL)
    for recorded in events[cut:]:
        resumed.apply(recorded)
    assert resumed.snapshot_state()["incidents"] == served.snapshot_state()["incidents"]


# ---- REST and the live feed, through the app ------------------------------------------


@pytest.fixture
async def service(tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient) -> Service:
    """The app of test_http (Up answers, Down refuses connections, Limited answers 429),
    not probing by itself: the test triggers the health checks."""
    config = tmp_path / "cryptomon.toml"
    config.write_text(config_text(standin))
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "x.db", environ={}, probing=False
    )
    client = await aiohttp_client(create_app(settings))
    return Service(client)


async def feed_until(ws: Any, kind: str, within: float = 10.0) -> dict[str, Any]:
    """The next live-feed message of type `kind` (others are skipped); fail at the deadline."""
    async with asyncio.timeout(within):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind:
                return cast(dict[str, Any], message)


async def test_an_outage_is_one_incident_in_rest_and_on_the_feed(service: Service) -> None:
    async with service.client.ws_connect("/ws/live") as ws:
        await feed_until(ws, "connection_established")
        alert_id = await service.take_down()  # three failed probes: offline
        opened = await feed_until(ws, "incident_opened")
        incident = opened["incident"]
        assert (incident["id"], incident["provider"], incident["severity"]) == (
            1,
            "Down",
            "critical",
        )
        assert (incident["open"], incident["ended_at"], incident["duration_seconds"]) == (
            True,
            None,
            None,
        )
        assert incident["alert_ids"] == [alert_id] and opened["position"] == incident["position"]

        listed = await service.get_json("/api/incidents")
        assert listed["count"] == 1 and listed["incidents"] == [
            await service.get_json("/api/incidents/1")
        ]
        assert listed["incidents"][0]["alerts"][0]["kind"] == "offline"
        # Limited's rate-limit alert is an alert, never an incident.
        alerts = (await service.get_json("/api/alerts"))["alerts"]
        assert {(a["provider"], a["kind"]) for a in alerts} == {
            ("Down", "offline"),
            ("Limited", "rate_limit"),
        }

        status, body = await service.acknowledge(alert_id, {"actor": "alice", "note": "on it"})
        assert status == 200, body
        acknowledged = await service.get_json("/api/incidents/1")
        [alert] = acknowledged["alerts"]
        assert (alert["acknowledged_by"], alert["note"]) == ("alice", "on it")
        assert alert["acknowledged_at"] is not None and acknowledged["acknowledged"] is True

        # Paused, Down's alerts resolve: its incident closes.
        status, _, body, _ = await service.request("POST", "/api/providers/Down/pause")
        assert status == 200, body
        closed = await feed_until(ws, "incident_closed")
    ended = closed["incident"]
    assert (ended["id"], ended["open"]) == (1, False)
    assert ended["ended_at"] is not None and ended["duration_seconds"] >= 0
    assert await service.get_json("/api/incidents/1") == ended


async def test_incident_filters(service: Service) -> None:
    await service.take_down()
    [incident] = (await service.get_json("/api/incidents"))["incidents"]
    started = datetime.fromisoformat(incident["started_at"]).timestamp()

    async def ids(query: str) -> list[int]:
        found = await service.get_json(f"/api/incidents?{query}")
        assert found["count"] == len(found["incidents"])
        return [i["id"] for i in found["incidents"]]

    assert await ids("provider=Down") == [1] and await ids("provider=Up") == []
    assert await ids("open=true") == [1] and await ids("open=false") == []
    # from/to: the incidents open at some time between them, both given as unix seconds
    # or ISO 8601 with an offset.
    assert await ids(f"from={started + 3600:.0f}") == [1]  # still open then
    assert await ids(f"to={started - 60:.3f}") == []  # it started after
    assert await ids(f"from={started - 60}&to={started + 60}") == [1]
    later = iso_time(started + 7200)
    earlier = iso_time(started - 7200)
    assert await ids(f"from={earlier}&to={later}") == [1]
    assert await ids("to=" + quote(iso_time(started - 7200).replace("Z", "+02:00"))) == []
    assert await ids(f"to={quote(earlier.replace('Z', '-03:00'))}") == [1]  # 1 h after start
    assert await ids(f"from={later}&to={earlier}") == []  # no time is in that window
    assert await ids("limit=1&open=true&provider=Down") == [1]


async def test_bad_incident_queries_are_400_problems_naming_the_parameter(
    service: Service,
) -> None:
    cases = [
        ("from=yesterday", "from"),
        ("from=2026-13-01T00:00:00Z", "from"),
        ("from=2026-02-30T00:00:00Z", "from"),
        ("from=2026-11-25T10:00:00", "from"),  # no offset: which time zone?
        ("from=2026-11-25", "from"),
        ("to=2026-11-25T25:00:00Z", "to"),
        ("to=2026-11-25T10:00:00%2B24:00", "to"),
        ("to=-5", "to"),
        ("to=1e400", "to"),
        ("from=nan", "from"),
        ("from=1&from=2", "from"),
        ("open=maybe", "open"),
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("provider=", "provider"),
        ("provider=" + "x" * 101, "provider"),
    ]
    for query, parameter in cases:
        problem = await service.problem("GET", f"/api/incidents?{query}", 400)
        assert problem.parameter == parameter, (query, problem)
        assert problem.type == "/problems/invalid-parameter"
    for path in ("/api/incidents/abc", "/api/incidents/0", "/api/incidents/-1"):
        problem = await service.problem("GET", path, 400)
        assert problem.parameter == "incident_id", path
    unknown = await service.problem("GET", "/api/incidents/99", 404)
    assert unknown.type == "/problems/unknown-incident"
    assert unknown.detail == "there is no incident with id 99"


def test_the_new_keys_are_checked_and_reach_the_folds(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[storage]\nincident_retention = "soon"\n[monitoring]\nfailure_ratio_min_probes = 0\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    errors = caught.value.errors
    assert len(errors) == 2, errors
    assert any(e.startswith(f"{path}: storage.incident_retention: 'soon' is not a") for e in errors)
    assert any(e.startswith(f"{path}: monitoring.failure_ratio_min_probes:") for e in errors)
    path.write_text(
        '[storage]\nincident_retention = "1d"\n[monitoring]\nfailure_ratio_min_probes = 3\n'
    )
    config = load_config(path)
    assert projection_settings(config).incident_retention_seconds == DAY
    assert monitoring_of(config).failure_ratio_min_probes == 3
    assert load_config(None).storage.incident_retention_seconds == 90 * DAY
    assert monitoring_of(load_config(None)).failure_ratio_min_probes == 5
