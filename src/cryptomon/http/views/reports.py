"""`/api/reports/uptime` and `python -m cryptomon report`: an SLA report per provider over
whole UTC days, as JSON or CSV, answered from the read models (never a scan of the log).

Downtime is time `offline`, from the durations read model (the status changes in the
log); incidents come from the incidents read model, latency from the metrics rollups. The
report names the read models' position and that position's chain hash, so anyone holding
the log can check it (`verify --position N --hash H`) and compute it again there
(`report --until N`).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from cryptomon.events.archive import hash_at
from cryptomon.http.errors import InvalidParameter, NotFound
from cryptomon.http.keys import ARGUMENTS
from cryptomon.http.schemas import ProviderUptimeReport, UptimeReport
from cryptomon.http.views import log_of, models_of, respond
from cryptomon.isotime import iso_time
from cryptomon.projections import Projections
from cryptomon.projections.durations import DAY, TimeKind
from cryptomon.projections.notices import Incident

CSV_TYPE = "text/csv"
# The longest period a report covers: the metrics and durations keep 400 days by default.
MAX_DAYS = 400
MONITORED: tuple[TimeKind, ...] = ("online", "degraded", "offline", "rate_limited")
NOT_MONITORED: tuple[TimeKind, ...] = ("unknown", "unconfigured", "paused", "not_probed")
CSV_COLUMNS = (
    *ProviderUptimeReport.__struct_fields__,
    "from",
    "to",
    "position",
    "chain_hash",
)


def _minutes(seconds: float) -> float:
    return round(seconds / 60, 2)


def uptime_report(
    projections: Projections,
    first_day: int,
    end_day: int,
    chain_hash: str | None,
    provider: str | None = None,
) -> UptimeReport:
    """The report over the UTC days [first_day, end_day) (midnights) from `projections`,
    whose position's hash is `chain_hash`: every provider (removed ones too, for a period
    they were monitored in), or only `provider`."""
    durations = projections.durations
    as_of = durations.state.as_of
    # Every incident open at some time in the period, by provider: one pass for them all.
    incidents_of: dict[str, list[Incident]] = {}
    for incident in projections.incidents.query(provider=provider, since=first_day):
        if incident.started_at < end_day:
            incidents_of.setdefault(incident.provider, []).append(incident)
    rows = []
    for state in projections.providers.all(removed=True):
        if provider is not None and state.name != provider:
            continue
        seconds = durations.seconds(state.name, first_day, end_day)
        monitored = sum(seconds[kind] for kind in MONITORED)
        if state.removed and not monitored and provider is None:
            continue  # gone before the period: not part of it
        offline = seconds["offline"]
        incidents = incidents_of.get(state.name, [])
        longest = max(
            incidents,
            key=lambda i: (i.ended_at if i.ended_at is not None else as_of) - i.started_at,
            default=None,
        )
        latency = projections.metrics.window(state.name, first_day, end_day, "health")
        rows.append(
            ProviderUptimeReport(
                provider=state.name,
                category=state.category,
                uptime_percent=(
                    round((monitored - offline) / monitored * 100, 4) if monitored else None
                ),
                monitored_minutes=_minutes(monitored),
                downtime_minutes=_minutes(offline),
                degraded_minutes=_minutes(seconds["degraded"]),
                rate_limited_minutes=_minutes(seconds["rate_limited"]),
                maintenance_minutes=_minutes(seconds["maintenance"]),
                not_monitored_minutes=_minutes(sum(seconds[kind] for kind in NOT_MONITORED)),
                incidents=len(incidents),
                longest_incident_id=None if longest is None else longest.id,
                longest_incident_minutes=(
                    None
                    if longest is None
                    else _minutes(max(0.0, (longest.ended_at or as_of) - longest.started_at))
                ),
                p95_latency_ms=None if latency.p95 is None else round(latency.p95, 1),
                probes=latency.count,
            )
        )
    return UptimeReport(
        from_=iso_time(first_day),
        to=iso_time(end_day),
        position=projections.position,
        chain_hash=chain_hash,
        as_of=iso_time(as_of) if as_of else None,
        count=len(rows),
        providers=rows,
    )


def report_csv(report: UptimeReport) -> str:
    """One row per provider, with the period and provenance on every row (a CSV has no
    other place for them). A text cell that a spreadsheet would run as a formula starts
    with a quote."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    tail = (report.from_, report.to, report.position, report.chain_hash or "")
    for row in report.providers:
        values: Iterable[object] = (getattr(row, name) for name in row.__struct_fields__)
        writer.writerow([_cell(value) for value in values] + list(tail))
    return out.getvalue()


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def month_days(month: str) -> tuple[int, int]:
    """A month `YYYY-MM` as its first midnight and the next month's (UTC)."""
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"expected a month like 2026-11, not {month[:40]!r}") from None
    following = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    return int(first.timestamp()), int(following.timestamp())


def _midnight(name: str, moment: float) -> int:
    if moment % DAY:
        raise InvalidParameter(
            name,
            f"{name} must be a UTC midnight (a report covers whole days),"
            f" like 2026-11-01T00:00:00Z, not {iso_time(moment)}",
        )
    return int(moment)


async def uptime(request: web.Request) -> web.Response:
    args = request[ARGUMENTS]
    now = time.time()
    given_from, given_to = args.moment("from"), args.moment("to")
    # By default the month so far: from its first midnight to the next one after now.
    today = int(now // DAY) * DAY
    first_day = (
        _midnight("from", given_from)
        if given_from is not None
        else month_days(datetime.fromtimestamp(now, UTC).strftime("%Y-%m"))[0]
    )
    end_day = _midnight("to", given_to) if given_to is not None else today + DAY
    # The parameter given names a bad period: `to` when both are.
    blamed = "to" if given_to is not None else "from"
    if end_day <= first_day:
        raise InvalidParameter(blamed, f"to ({iso_time(end_day)}) must be after from")
    if end_day - first_day > MAX_DAYS * DAY:
        days = (end_day - first_day) // DAY
        raise InvalidParameter(blamed, f"a report covers at most {MAX_DAYS} days, not {days}")
    name = args.text("provider")
    projections = models_of(request).projections
    if name is not None and projections.providers.get(name) is None:
        raise NotFound("provider", f"no provider named {name[:100]!r}; see /api/providers")
    # Computed before any await, so it is of one position, whose hash is then read.
    report = uptime_report(projections, first_day, end_day, None, name)
    if report.position:
        chain_hash = await hash_at(log_of(request), report.position)
        report = msgspec.structs.replace(report, chain_hash=chain_hash)
    if args.text("format") == "csv":
        return web.Response(text=report_csv(report), content_type=CSV_TYPE, charset="utf-8")
    return respond(report)
