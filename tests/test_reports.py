"""SLA reports: the time each provider spent in each status (the durations fold), checked
against a log whose uptime is known by construction, page by page and live alike; the
report over REST as JSON and CSV, with its provenance; and `report --month` in a
subprocess, at the head and `--until` an earlier position, checked with `verify`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from test_http import Start, start
from test_projections import DAY, T0, Harness, probe, registration

from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import (
    Event,
    MonitoringChanged,
    ProviderPaused,
    ProviderRegistered,
    ProviderResumed,
)
from cryptomon.isotime import iso_time
from cryptomon.projections import Projections
from cryptomon.projections.durations import TIME_KINDS

__all__ = ["start"]  # the real app over a log these tests write

MINUTE = 60.0
# T0 is 2023-11-15T00:00:00Z.
MONTH = "2023-11"
THRESHOLDS = MonitoringChanged(failure_ratio_min_probes=5)


def steady_log(name: str = "Steady", first: int = 0, minutes: int = 2880) -> list[Event]:
    """`name` probed every minute from T0 + `first` minutes for `minutes` minutes:
    - minutes 600 to 689 fail: degraded at 600, offline at the third failure (602) until
      the second success (691): 2 minutes degraded, 89 offline;
    - minutes 1500 to 1529 answer "maintenance": 30 minutes in maintenance;
    - minutes 2000 to 2099 are not probed (the service stopped): from 1999 to 2100, 101
      minutes more than three gaps long, not probed;
    - the rest succeed."""
    events: list[Event] = []
    for minute in range(first, first + minutes):
        if 2000 <= minute < 2100:
            continue
        at = T0 + minute * MINUTE
        if 600 <= minute < 690:
            events.append(probe(name, at, "failed"))
        elif 1500 <= minute < 1530:
            events.append(msgspec.structs.replace(probe(name, at), outcome="maintenance"))
        else:
            events.append(probe(name, at))
    return events


def minutes_by_kind(projections: Projections, name: str, first: float, end: float) -> dict:
    seconds = projections.durations.seconds(name, int(first), int(end))
    return {kind: value / MINUTE for kind, value in seconds.items() if value}


def test_the_time_in_each_status_is_known_by_construction_page_by_page_and_live() -> None:
    live = Harness()
    live(THRESHOLDS, registration("Steady"), *steady_log())
    got = minutes_by_kind(live.projections, "Steady", T0, T0 + 2 * DAY)
    # 2879 minutes from the first probe to the last: degraded from the first failure to
    # offline (two minutes), then offline until the second success makes it online.
    assert got["offline"] == 89
    assert got["maintenance"] == 30
    assert got["not_probed"] == 101
    assert got["degraded"] == 2
    assert sum(got.values()) == 2879
    assert set(got) <= set(TIME_KINDS)
    # The first day holds the outage and none of the rest; the second day the rest.
    first_day = minutes_by_kind(live.projections, "Steady", T0, T0 + DAY)
    assert (first_day["offline"], sum(first_day.values())) == (89, 1440)
    assert "maintenance" not in first_day and "not_probed" not in first_day
    # A replay, a page at a time, counts the same seconds.
    replay = Projections()
    events = [recorded.event for recorded in live.log.events]
    positions = [recorded.position for recorded in live.log.events]
    times = [recorded.recorded_at for recorded in live.log.events]
    for first in range(0, len(events), 1000):
        end = first + 1000
        replay.fold_columns(positions[first:end], times[first:end], events[first:end])
    assert replay.state_equal(live.projections) == []


def test_a_pause_is_paused_time_however_long_and_the_probe_after_it_counts_again() -> None:
    fold = Harness()
    fold(THRESHOLDS, registration("A"), *(probe("A", T0 + i * MINUTE) for i in range(10)))
    fold(ProviderPaused("A", "alice", T0 + 9.5 * MINUTE))
    fold(ProviderResumed("A", "alice", T0 + 600 * MINUTE))
    fold(*(probe("A", T0 + (600.5 + i) * MINUTE) for i in range(10)))
    got = minutes_by_kind(fold.projections, "A", T0, T0 + DAY)
    assert got["paused"] == 600 - 9.5
    assert got["online"] == 9.5 + 9
    # From the resumption to the first probe after it: nothing judged it yet.
    assert got["unknown"] == 0.5
    assert sum(got.values()) == 609.5


def test_days_older_than_the_retention_are_dropped() -> None:
    from cryptomon.projections import ProjectionSettings

    settings = ProjectionSettings(
        minute_retention_seconds=3600, hour_retention_seconds=DAY, day_retention_seconds=2 * DAY
    )
    fold = Harness(settings)
    fold(registration("A"), *(probe("A", T0 + i * 3600) for i in range(24 * 5)))
    days = fold.projections.durations.state.providers["A"].days
    assert sorted(days) == [int(T0 + d * DAY) for d in (2, 3, 4)]


# ---- the report over REST and the CLI ----------------------------------------------


async def write_log(path: Path, events: list[Event]) -> int:
    """Append `events` to the SQLite log at `path`, a few hundred at a time (a commit each),
    each batch recorded at its last probe's time; the head after them."""
    clock = [T0]
    store = await EventStore.open(path, clock=lambda: clock[0])
    try:
        for first in range(0, len(events), 500):
            batch = events[first : first + 500]
            clock[0] = max([clock[0], *(getattr(e, "started_at", T0) for e in batch)])
            # As the service writes them: a definition on its config stream, probes apart.
            for stream in ("config:Steady", "provider:Steady"):
                part = [e for e in batch if (type(e) is ProviderRegistered) == (stream[0] == "c")]
                if part:
                    await store.append(stream, part)
        return store.head
    finally:
        await store.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptomon", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


EXPECTED = {
    "provider": "Steady",
    "monitored_minutes": 2879 - 30 - 101,
    "downtime_minutes": 89.0,
    "degraded_minutes": 2.0,
    "rate_limited_minutes": 0.0,
    "maintenance_minutes": 30.0,
    "not_monitored_minutes": 101.0,
    "uptime_percent": round((2748 - 89) / 2748 * 100, 4),
    "incidents": 1,
}


def expected_in(row: dict) -> None:
    for key, value in EXPECTED.items():
        assert row[key] == value, (key, row[key], value)


async def test_the_report_over_rest_as_json_and_csv_names_its_position_and_hash(
    start: Start, tmp_path: Path
) -> None:
    database = tmp_path / "x.db"
    await write_log(database, [THRESHOLDS, registration("Steady"), *steady_log()])
    service = await start(database=database)
    await service.settle()
    period = f"from={iso_time(T0)}&to={iso_time(T0 + 2 * DAY)}"
    report = await service.get_json(f"/api/reports/uptime?{period}&provider=Steady")
    assert (report["from"], report["to"]) == (iso_time(T0), iso_time(T0 + 2 * DAY))
    [row] = report["providers"]
    expected_in(row)
    assert row["longest_incident_id"] is not None and row["longest_incident_minutes"] > 89
    assert row["p95_latency_ms"] == pytest.approx(100.0, rel=0.2)
    assert row["probes"] == 2880 - 100 - 30  # maintenance answers are no health statistics
    async with await EventStore.open(database, readonly=True) as reader:
        [at] = await reader.read_all(after=report["position"] - 1, limit=1)
    assert report["chain_hash"] == at.hash
    # Every provider by default: the config's (never probed here) have no monitored time.
    everyone = await service.get_json(f"/api/reports/uptime?{period}")
    names = {row["provider"]: row for row in everyone["providers"]}
    assert names["Steady"] == row
    assert names["Up"]["uptime_percent"] is None and names["Up"]["monitored_minutes"] == 0
    # CSV: a header, then a row per provider with the period and provenance on each.
    status, content_type, body, _ = await service.request(
        "GET", f"/api/reports/uptime?{period}&provider=Steady&format=csv"
    )
    assert (status, content_type) == (200, "text/csv")
    [csv_row] = list(csv.DictReader(io.StringIO(body.decode())))
    assert float(csv_row["downtime_minutes"]) == 89.0
    assert float(csv_row["uptime_percent"]) == EXPECTED["uptime_percent"]
    assert (csv_row["from"], csv_row["position"], csv_row["chain_hash"]) == (
        iso_time(T0),
        str(report["position"]),
        report["chain_hash"],
    )


async def test_bad_report_requests_get_clear_errors(start: Start) -> None:
    service = await start()
    cases = {
        "from=2023-11-15T10:00:00Z": ("from", "UTC midnight"),
        f"from={iso_time(T0)}&to={iso_time(T0)}": ("to", "after from"),
        f"from={iso_time(T0)}&to={iso_time(T0 + 401 * DAY)}": ("to", "at most 400 days"),
        "format=xml": ("format", "csv"),
        "from=yesterday": ("from", "ISO 8601"),
    }
    for query, (name, words) in cases.items():
        problem = await service.problem("GET", f"/api/reports/uptime?{query}", 400)
        assert problem.parameter == name and words in problem.detail, (query, problem.detail)
    missing = await service.problem("GET", "/api/reports/uptime?provider=Nobody", 404)
    assert "Nobody" in missing.detail


async def test_report_month_at_the_head_and_until_an_earlier_position(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    first = await write_log(database, [THRESHOLDS, registration("Steady"), *steady_log()])
    # A third day, failing for its first half: the head's report differs from the first's.
    later = [probe("Steady", T0 + 2 * DAY + i * MINUTE, "failed") for i in range(720)]
    await write_log(database, later)
    args = ["--db", str(database), "--month", MONTH, "--provider", "Steady", "--format", "json"]
    at_head = cli("report", *args)
    assert at_head.returncode == 0, at_head.stderr
    head_report = json.loads(at_head.stdout)
    assert head_report["providers"][0]["downtime_minutes"] > 89 + 700
    earlier = cli("report", *args, "--until", str(first))
    assert earlier.returncode == 0, earlier.stderr
    report = json.loads(earlier.stdout)
    assert (report["from"], report["to"]) == ("2023-11-01T00:00:00Z", "2023-12-01T00:00:00Z")
    assert report["position"] == first
    [row] = report["providers"]
    expected_in(row)
    # The log holds that position with that hash: anyone can check the report's provenance.
    verified = cli("verify", "--db", str(database), "--position", str(first), "--hash",
                   report["chain_hash"])  # fmt: skip
    assert verified.returncode == 0 and verified.stdout.startswith("OK"), verified.stdout
    # CSV, the default: the same numbers.
    as_csv = cli("report", *args[:-2], "--until", str(first))
    [csv_row] = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert float(csv_row["downtime_minutes"]) == 89.0
    assert csv_row["chain_hash"] == report["chain_hash"]


def test_report_refuses_a_bad_month_and_a_position_past_the_head(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    bad_month = cli("report", "--db", str(database), "--month", "2023-13")
    assert bad_month.returncode == 2 and "a month like 2026-11" in bad_month.stderr
    head = asyncio.run(write_log(database, [registration("Steady"), *steady_log(minutes=10)]))
    past = cli("report", "--db", str(database), "--month", MONTH, "--until", str(head + 1))
    assert past.returncode == 1 and f"ends at position {head}" in past.stderr
    nobody = cli("report", "--db", str(database), "--month", MONTH, "--provider", "Nobody")
    assert nobody.returncode == 1 and "Nobody" in nobody.stderr
