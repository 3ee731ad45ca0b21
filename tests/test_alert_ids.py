"""Alert ids: numbered by the alerts fold in the order raised, any number per event, the same
on every replay; acknowledgements find their alert by name, and those a log written while
ids were `position * 10 + slot` holds (schema 1) still find theirs."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from pytest_aiohttp import AiohttpClient
from test_projections import SMALL, T0, Ack, Log, fold_all, probe, steps, usage

from cryptomon.config import load_config
from cryptomon.events.audit import verify_chain
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import (
    AlertAcknowledged,
    Event,
    EventMetadata,
    JobTriggered,
    ProbeRecorded,
    RateLimitChanged,
    RecordedEvent,
    decode_event,
    decode_events,
    encode_event,
)
from cryptomon.http.settings import Settings
from cryptomon.projections import (
    AlertRaised,
    AlreadyAcknowledgedError,
    Notice,
    Projections,
    ProjectionSettings,
    ProviderStatusChanged,
)
from cryptomon.readmodels import fold_log, load_projections
from cryptomon.service.app import create_app

DATA = Path(__file__).parent / "data"
# What the cryptomon of that time made of the log (tests/data/make_alerts_v1_log.py).
V1 = json.loads((DATA / "alerts_v1.json").read_text())
ALERT_FIELDS = (
    "position", "provider", "kind", "severity", "message", "raised_at", "resolved_at",
    "acknowledged", "acknowledged_by", "acknowledged_at", "note",
)  # fmt: skip


def described(alerts: list[Any]) -> list[dict[str, Any]]:
    """Alerts oldest first, as the fixture describes them: every field but the id."""
    return [{name: getattr(alert, name) for name in ALERT_FIELDS} for alert in alerts]


def v1_described() -> list[dict[str, Any]]:
    """The fixture's alerts, their messages' times spelled with a Z as cryptomon writes them
    now (that cryptomon wrote `+00:00`)."""
    return [
        {name: alert[name] for name in ALERT_FIELDS}
        | {"message": alert["message"].replace("+00:00", "Z")}
        for alert in V1["alerts"]
    ]


@pytest.fixture
async def v1_log(tmp_path: Path) -> AsyncIterator[EventStore]:
    """A copy of the log written by the cryptomon of schema-1 acknowledgements."""
    shutil.copy(DATA / "alerts_v1.sqlite", tmp_path / "v1.db")
    store = await EventStore.open(tmp_path / "v1.db")
    yield store
    await store.close()


# ---- a log written while ids were position * 10 + slot -----------------------------------


async def test_a_log_of_schema_1_acknowledgements_folds_to_the_same_acknowledged_alerts(
    v1_log: EventStore,
) -> None:
    assert (await verify_chain(v1_log)).ok  # the bytes that cryptomon wrote, untouched
    assert v1_log.head == V1["head"]
    with closing(sqlite3.connect(DATA / "alerts_v1.sqlite")) as conn:
        stored = conn.execute(
            "SELECT DISTINCT schema_version FROM events WHERE type = 'AlertAcknowledged'"
        ).fetchall()
    assert stored == [(1,)]
    acks = [e.event for e in await v1_log.read_by_type(["AlertAcknowledged"], limit=100)]
    assert all(isinstance(a, AlertAcknowledged) and a.alert_id is None for a in acks)
    legacy = sorted(a.legacy_alert_id for a in acks if isinstance(a, AlertAcknowledged))
    assert legacy == sorted(V1["acknowledged"])

    # At start-up: its snapshot's alerts (version 3) are folded again from the start of
    # the log, with the providers they follow; the rest continue from the snapshot.
    projections, report = await load_projections(v1_log, ProjectionSettings())
    assert "alerts" in report.rebuilt and "providers" in report.rebuilt
    assert report.discarded is None
    alerts = list(reversed(projections.alerts.query()))
    assert described(alerts) == v1_described()
    # Every alert that was acknowledged is, by the same actor, with the same note and time;
    # none other is, though some alerts kept today have the number an acknowledged one had.
    acknowledged = [a for a in V1["alerts"] if a["acknowledged"]]
    assert len(acknowledged) >= 8
    for old, new in zip(V1["alerts"], alerts, strict=True):
        assert (new.acknowledged, new.acknowledged_by, new.note, new.acknowledged_at) == (
            old["acknowledged"],
            old["acknowledged_by"],
            old["note"],
            old["acknowledged_at"],
        )
    # Numbered in the order raised, the pruned ones included (the counter is never reused).
    assert [a.id for a in alerts] == [a["order"] for a in V1["alerts"]]
    # One event raised two of them (offline, and the failure rate over the threshold), and
    # both were acknowledged: old ids 10*p and 10*p + 3.
    by_position: dict[int, list[Any]] = {}
    for alert in alerts:
        by_position.setdefault(alert.position, []).append(alert)
    assert any(
        len(group) == 2 and all(a.acknowledged for a in group) for group in by_position.values()
    )

    # A rebuild from nothing gives the same, ids included.
    rebuilt = Projections()
    await fold_log(rebuilt, v1_log, v1_log.head)
    assert rebuilt.state_equal(projections) == []


async def test_an_alert_numbered_as_an_old_acknowledged_one_was_can_be_acknowledged(
    v1_log: EventStore,
) -> None:
    """Schema-1 acknowledgements were appended to `alert:<old id>`; an alert now numbered
    the same must not find that stream taken (a false 409)."""
    projections, _ = await load_projections(v1_log, ProjectionSettings())
    alerts = projections.alerts
    [target, *_] = [a for a in alerts.query() if not a.acknowledged and a.id in V1["acknowledged"]]
    assert await v1_log.read_stream(f"alert:{target.id}") != []  # the old stream is there
    alerts.check_acknowledge(target.id)
    stream, event = alerts.acknowledgement(target.id, "dave", T0 + 99 * 86_400, "mine")
    [position] = await v1_log.append(
        stream, [event], expected_version=0, metadata=EventMetadata(actor="dave")
    )
    await fold_log(projections, v1_log, position)
    acked = alerts.get(target.id)
    assert acked is not None and (acked.acknowledged_by, acked.note) == ("dave", "mine")
    with pytest.raises(AlreadyAcknowledgedError, match="already acknowledged by dave"):
        alerts.check_acknowledge(target.id)
    # The rest is as it was.
    others = [a for a in reversed(alerts.query()) if a.id != target.id]
    assert described(others) == [
        a for a in v1_described() if a["position"] != target.position or a["kind"] != target.kind
    ]


async def test_the_service_on_that_log_acknowledges_alerts_by_their_new_ids(
    tmp_path: Path, v1_log: EventStore, aiohttp_client: AiohttpClient
) -> None:
    await v1_log.close()
    config = tmp_path / "v1.toml"
    config.write_text(
        "".join(
            f'[[providers]]\nname = "{name}"\ncategory = "market_data"\n'
            f'base_url = "https://{name.lower()}.example/api"\nhealth_path = "/ping"\n'
            'interval = "30s"\n'
            for name in "ABCD"
        )
    )
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "v1.db", environ={}, probing=False
    )
    client = await aiohttp_client(create_app(settings))
    # The ids are the new numbers (the first test shows they are the order raised); an
    # alert acknowledged then is acknowledged now, by the same person.
    for old in V1["alerts"]:
        if old["acknowledged"]:
            async with client.post(f"/api/alerts/{old['order']}/acknowledge") as response:
                assert response.status == 409, await response.text()
                assert f"already acknowledged by {old['acknowledged_by']}" in await response.text()
    # One not acknowledged, numbered as an acknowledged one was: its old stream is taken.
    [free, *_] = [
        a for a in V1["alerts"] if not a["acknowledged"] and a["order"] in V1["acknowledged"]
    ]
    body = {"actor": "erin", "note": "looking"}
    async with client.post(f"/api/alerts/{free['order']}/acknowledge", json=body) as response:
        assert response.status == 200, await response.text()
        alert = (await response.json())["alert"]
    assert (alert["id"], alert["position"], alert["kind"]) == (
        free["order"],
        free["position"],
        free["kind"],
    )
    assert (alert["acknowledged_by"], alert["note"]) == ("erin", "looking")
    async with client.get("/api/events?after=0&limit=500&type=AlertAcknowledged") as response:
        assert response.status == 200
        payloads = [e["payload"] for e in (await response.json())["events"]]
    *old_style, new_style = payloads
    assert [p["legacy_alert_id"] for p in old_style] == V1["acknowledged"]
    assert all(p["alert_id"] is None for p in old_style)
    assert new_style == {
        "type": "AlertAcknowledged",
        "alert_id": free["order"],
        "actor": "erin",
        "acknowledged_at": new_style["acknowledged_at"],
        "note": "looking",
        "raised_position": free["position"],
        "provider": free["provider"],
        "kind": free["kind"],
    }


# ---- schema 1 on read -------------------------------------------------------------------


def v1_ack(legacy_id: int, actor: str = "alice", at: float = T0) -> bytes:
    return msgspec.json.encode(
        {"type": "AlertAcknowledged", "alert_id": legacy_id, "actor": actor, "acknowledged_at": at}
    )


def test_a_schema_1_acknowledgement_is_upcast_to_a_name_and_a_legacy_id() -> None:
    assert decode_event(7, "AlertAcknowledged", 1, v1_ack(643)) == AlertAcknowledged(
        None, "alice", T0, raised_position=64, kind="failure_rate", legacy_alert_id=643
    )
    # Slots 5 to 9 never held a kind: the name stays unknown and nothing matches it.
    assert decode_event(7, "AlertAcknowledged", 1, v1_ack(645)) == AlertAcknowledged(
        None, "alice", T0, legacy_alert_id=645
    )


def test_a_page_with_a_schema_1_acknowledgement_upcasts_that_row_alone() -> None:
    probes = [probe("A", T0 + i, "failed" if i % 2 else "success") for i in range(6)]
    rows: list[tuple[int, str, int, bytes]] = [
        (i + 1, "ProbeRecorded", 3, encode_event(p)) for i, p in enumerate(probes)
    ]
    rows.insert(3, (99, "AlertAcknowledged", 1, v1_ack(20)))
    rows.append((100, "AlertAcknowledged", 2, encode_event(AlertAcknowledged(5, "bob", T0))))
    page = decode_events(*(list(column) for column in zip(*rows, strict=True)))
    assert page == [decode_event(*row) for row in rows]
    assert page[3] == AlertAcknowledged(
        None, "alice", T0, raised_position=2, kind="offline", legacy_alert_id=20
    )
    assert page[-1] == AlertAcknowledged(5, "bob", T0)


# ---- numbering ------------------------------------------------------------------------------


def test_one_position_raises_any_number_of_alerts_with_ids_of_their_own() -> None:
    """Today one event judges one provider; a group (a chain's nodes, a region) judges many
    at once. Twelve providers go offline at one position: twelve alerts, twelve ids."""
    projections = Projections()
    notices: list[Notice] = []
    for n in range(12):
        change = ProviderStatusChanged(7, T0, f"node-{n}", "online", "offline", "no answer")
        notices += projections.alerts.observe_status(change)
    ids = [n.alert.id for n in notices if isinstance(n, AlertRaised)]
    assert ids == list(range(1, 13))
    assert {a.position for a in projections.alerts.query()} == {7}
    # Each is acknowledged by its own name, provider included.
    stream, event = projections.alerts.acknowledgement(11, "alice", T0 + 1)
    assert stream == "alert:7:offline:node-10"
    assert event.raised_position == 7 and event.provider == "node-10"
    projections.fold(recorded(8, event))
    assert [a.id for a in projections.alerts.query(acknowledged=True)] == [11]
    # A schema-1 acknowledgement (position 7, offline, no provider) takes the first.
    projections.fold(recorded(9, decode_event(9, "AlertAcknowledged", 1, v1_ack(70))))
    assert [a.id for a in projections.alerts.query(acknowledged=True)] == [11, 1]


def recorded(position: int, event: Event) -> RecordedEvent:
    return RecordedEvent(position, f"e{position}", "test", position, T0, event, EventMetadata(), "")


def materialize(plan: list[tuple[float, Any]]) -> list[RecordedEvent]:
    """`test_projections.materialize`, with acknowledgements as the REST handler makes them
    (named, from `acknowledgement`), aimed at alerts existing then, or at an unknown id."""
    log = Log()
    reference = Projections(SMALL)
    now = T0
    for gap, step in plan:
        now += gap
        event: Event
        match step:
            case Ack(choice=choice):
                ids = [a.id for a in reference.alerts.query()]
                if ids and choice % 3:
                    _, event = reference.alerts.acknowledgement(
                        ids[choice % len(ids)], "alice", now
                    )
                else:
                    event = AlertAcknowledged(10**6 + choice, "alice", now)
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


@dataclass
class Raised:
    id: int
    name: tuple[int, str, str]  # position, provider, kind


def raised(events: list[RecordedEvent], projections: Projections | None = None) -> list[Raised]:
    """Every alert the live fold raises, in order (a severity rising is not a new alert)."""
    projections = projections or Projections(SMALL)
    seen: set[int] = set()
    found: list[Raised] = []
    for event in events:
        for notice in projections.apply(event):
            if isinstance(notice, AlertRaised) and notice.alert.id not in seen:
                seen.add(notice.alert.id)
                alert = notice.alert
                found.append(Raised(alert.id, (alert.position, alert.provider, alert.kind)))
    return found


@settings(max_examples=75, deadline=None)
@given(plan=steps)
def test_ids_are_unique_never_reused_and_the_same_on_every_replay(
    plan: list[tuple[float, Any]],
) -> None:
    events = materialize(plan)
    first = raised(events)
    # 1, 2, 3...: unique, in the order raised, however many an event raised and whatever
    # was pruned (SMALL keeps resolved alerts a day; the plans span days).
    assert [r.id for r in first] == list(range(1, len(first) + 1))
    assert len({r.name for r in first}) == len(first)  # the name is unique too
    assert raised(events) == first
    whole = fold_all(events)
    assert whole.alerts.state.next_id == len(first) + 1
    kept = {a.id: (a.position, a.provider, a.kind) for a in whole.alerts.query()}
    assert all(kept[r.id] == r.name for r in first if r.id in kept)
    # The index acknowledgements search holds exactly the alerts kept.
    index = whole.alerts.state.raised_by
    assert sorted(i for ids in index.values() for i in ids) == sorted(kept)
    assert all(kept[i][0] == position for position, ids in index.items() for i in ids)
    # Every named acknowledgement acknowledged the alert of that name, if still kept, and
    # an unknown id acknowledged nothing.
    for event in events:
        ack = event.event
        if isinstance(ack, AlertAcknowledged) and ack.raised_position is not None:
            name = (ack.raised_position, ack.provider, ack.kind)
            matches = [a for a in whole.alerts.query() if (a.position, a.provider, a.kind) == name]
            assert all(a.acknowledged for a in matches)
    assert all(a.acknowledged_by in (None, "alice") for a in whole.alerts.query())


def test_under_other_rules_an_acknowledgement_stays_with_its_alert() -> None:
    """A rebuild under other rules numbers alerts otherwise (here a failure-rate alert is
    raised first); the acknowledgement still names, and finds, the alert it was for."""
    log = Log()
    before = Projections(ProjectionSettings(failure_rate_threshold=1.0))  # it never fires
    for event in (
        *(probe("A", T0 + i, "failed", kind="collection") for i in range(10)),
        usage("B", T0 + 10, 85.0),
    ):
        before.fold(log.record(event))
    [rate_limit] = before.alerts.query()
    assert rate_limit.id == 1
    _, ack = before.alerts.acknowledgement(rate_limit.id, "alice", T0 + 20, "known")
    before.fold(log.record(ack))

    other_rules = Projections()
    for event in log.events:
        other_rules.fold(event)
    [renumbered, failure_rate] = other_rules.alerts.query()
    assert (failure_rate.id, failure_rate.kind, failure_rate.acknowledged) == (
        1,
        "failure_rate",
        False,
    )
    assert (renumbered.id, renumbered.kind) == (2, "rate_limit")
    assert (renumbered.acknowledged_by, renumbered.note) == ("alice", "known")
