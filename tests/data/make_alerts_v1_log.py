"""Write `alerts_v1.sqlite` and `alerts_v1.json`: an event log as cryptomon wrote it while an
alert's id was `position * 10 + slot of its kind` (AlertAcknowledged schema version 1, the
alerts projection at version 3), and what that cryptomon's alerts were at its head.

It must run against a tree from before alerts were numbered by the fold (commit 507d8ef or
earlier), never against the current one; `tests/test_alert_ids.py` reads what it wrote:

    git archive 507d8ef src migrations | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python tests/data/make_alerts_v1_log.py tests/data

Acknowledgements are appended as that version's REST handler appended them: to the stream
`alert:<id>`, at version 0, with the actor in the metadata. The log spans a month and a
day, so the first days' resolved alerts are past the 30-day retention and pruned. A
snapshot of that version's read models is saved before the last events.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from cryptomon.events.types import (
    AlertAcknowledged,
    EventMetadata,
    ProbeRecorded,
    ProviderRegistered,
    RateLimitChanged,
    RateLimitSpec,
)
from cryptomon.projections import AlertRaised, Projections
from cryptomon.projections.notices import ALERT_ID_FACTOR  # only in the old tree

# By its name in 507d8ef, the tree this runs against (it was renamed since).
EventStore = importlib.import_module("cryptomon.events.store").EventStore

T0 = 1_800_000_000.0
DAY = 86_400.0
ACTORS = ("alice", "bob", "carol")


def registration(name: str, limit: RateLimitSpec | None = None) -> ProviderRegistered:
    return ProviderRegistered(
        provider=name,
        category="market_data",
        base_url=f"https://{name.lower()}.example/api",
        health_path="/ping",
        schedule="30s",
        timeout_ms=10_000,
        degraded_latency_ms=2_000,
        rate_limit=limit,
    )


def probe(
    name: str, at: float, ok: bool = True, not_after: float | None = None, kind: str = "health"
) -> ProbeRecorded:
    return ProbeRecorded(
        provider=name,
        kind="health" if kind == "health" else "collection",
        endpoint="/ping" if kind == "health" else "/data",
        outcome="success" if ok else "timeout",
        started_at=at,
        latency_ms=120.0 if ok else 10_000.0,
        http_status=200 if ok else None,
        error_kind=None if ok else "timeout",
        error_message=None if ok else "no answer in 10s",
        certificate_not_after=not_after,
    )


def usage(name: str, at: float, percentage: float) -> RateLimitChanged:
    return RateLimitChanged(
        provider=name,
        used=round(percentage * 0.6),
        limit=60,
        window_seconds=60.0,
        percentage=percentage,
        observed_at=at,
        reset_at=at + 30,
    )


class Writer:
    def __init__(self, store: EventStore, clock: list[float]) -> None:
        self.store = store
        self.clock = clock
        self.projections = Projections()
        self.raised: list[int] = []  # the id of every alert raised, in the order raised
        self.acknowledged: list[int] = []  # the ids acknowledged, in order

    async def fold(self) -> None:
        for recorded in await self.store.read_all(after=self.projections.position, limit=10**6):
            for notice in self.projections.apply(recorded):
                if isinstance(notice, AlertRaised) and notice.alert.id not in self.raised:
                    self.raised.append(notice.alert.id)  # not a severity rising

    async def events(self, stream: str, *events: Any) -> None:
        for event in events:
            at = getattr(event, "started_at", None) or getattr(event, "observed_at", None)
            self.clock[0] = max(self.clock[0], at or self.clock[0])
            await self.store.append(stream, [event])
        await self.fold()

    async def acknowledge(self, alert_id: int) -> None:
        """As the REST handler did: check, then append to `alert:<id>` at version 0."""
        self.projections.alerts.check_acknowledge(alert_id)
        n = len(self.acknowledged)
        self.acknowledged.append(alert_id)
        actor = ACTORS[n % len(ACTORS)]
        self.clock[0] += 1.0
        note = None if n % 3 == 2 else f"on it ({n})"
        await self.store.append(
            f"alert:{alert_id}",
            [AlertAcknowledged(alert_id, actor, self.clock[0], note)],
            expected_version=0,
            metadata=EventMetadata(actor=actor),
        )
        await self.fold()


# A's probes in 15 minutes: the tenth is the third failure in a row, which takes it offline
# and its failure rate (7 of 10) over the threshold: two alerts raised by one event.
A_DOWN = (False, False, True, False, True, False, True, False, False, False)


async def write(database: Path) -> Writer:
    clock = [T0]
    store = await EventStore.open(database, clock=lambda: clock[0])
    w = Writer(store, clock)
    # The first events raise alerts with the smallest ids of the old scheme (11, 21), and
    # both are acknowledged: the alert the fold numbers 11 or 21 is another one.
    await w.events("provider:A", probe("A", T0 - 600, ok=False))
    await w.events("provider:C", probe("C", T0 - 599, ok=False))
    await w.acknowledge(11)
    await w.acknowledge(21)
    await w.events("config:A", registration("A"))
    await w.events("config:B", registration("B", RateLimitSpec(60, 60.0)))
    await w.events("config:C", registration("C"))
    await w.events("config:D", registration("D"))
    for day in (0, 1, 2, 29, 30, 31):
        at = T0 + day * DAY
        await w.events(
            "provider:A", *(probe("A", at + i * 60, ok=ok) for i, ok in enumerate(A_DOWN))
        )
        await w.events("provider:C", *(probe("C", at + 3600 + i, ok=False) for i in range(3)))
        if day in (0, 30):
            await w.events("usage:B", usage("B", at + 1800, 85.0), usage("B", at + 1900, 100.0))
        if day in (1, 29):
            await w.events("provider:D", probe("D", at + 2000, not_after=at + 10 * DAY))
            await w.events("provider:D", probe("D", at + 2100, not_after=at + 2 * DAY))
        # Acknowledge some open alerts before they resolve: all on days 0 and 2 (day 0's
        # are pruned at the end, day 2's kept), else the ones raised in an odd turn.
        for alert in sorted(w.projections.alerts.query(open_only=True), key=lambda a: a.id):
            if not alert.acknowledged and (day in (0, 2) or w.raised.index(alert.id) % 2 == 0):
                await w.acknowledge(alert.id)
        await w.events("provider:A", probe("A", at + 7200), probe("A", at + 7201))
        await w.events("provider:C", probe("C", at + 7300), probe("C", at + 7301))
        if day in (0, 30):
            await w.events("usage:B", usage("B", at + 7400, 10.0))
        if day in (1, 29):
            await w.events("provider:D", probe("D", at + 7500, not_after=at + 90 * DAY))
        if day == 30:
            await store.save_snapshots(w.projections.snapshot_state(), w.projections.position)
    # After the snapshot: an alert left open, acknowledged.
    at = T0 + 31.5 * DAY
    await w.events("provider:C", *(probe("C", at + i, ok=False) for i in range(3)))
    [open_alert] = [a for a in w.projections.alerts.query(open_only=True) if a.kind == "offline"]
    await w.acknowledge(open_alert.id)
    await store.close()
    return w


def main(directory: Path) -> None:
    database = directory / "alerts_v1.sqlite"
    for path in directory.glob("alerts_v1.sqlite*"):
        path.unlink()
    w = asyncio.run(write(database))
    conn = sqlite3.connect(database)
    try:  # no WAL, small pages: a small file to commit
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA page_size=1024")
        conn.execute("VACUUM")
    finally:
        conn.close()
    for path in directory.glob("alerts_v1.sqlite?*"):
        path.unlink()

    alerts = [
        {
            "old_id": a.id,
            "order": w.raised.index(a.id) + 1,  # the id the fold numbering them gives
            "position": a.position,
            "provider": a.provider,
            "kind": a.kind,
            "severity": a.severity,
            "message": a.message,
            "raised_at": a.raised_at,
            "resolved_at": a.resolved_at,
            "acknowledged": a.acknowledged,
            "acknowledged_by": a.acknowledged_by,
            "acknowledged_at": a.acknowledged_at,
            "note": a.note,
        }
        for a in reversed(w.projections.alerts.query())
    ]
    assert all(a["old_id"] // ALERT_ID_FACTOR == a["position"] for a in alerts)
    kinds = {a["kind"] for a in alerts}
    assert kinds == {"offline", "degraded", "rate_limit", "failure_rate", "certificate"}, kinds
    assert any(a["position"] == b["position"] for a in alerts for b in alerts if a is not b)
    # Some alert kept, not acknowledged, has a number whose old-scheme stream was used.
    assert any(not a["acknowledged"] and a["order"] in w.acknowledged for a in alerts)
    summary = {"head": w.projections.position, "acknowledged": w.acknowledged, "alerts": alerts}
    (directory / "alerts_v1.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{database}: {w.projections.position} events, {len(alerts)} alerts kept")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
