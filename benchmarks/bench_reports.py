"""A month's SLA report over a real log: 30 days of 100 providers probed every 60 s.

    python benchmarks/bench_reports.py [--providers 100] [--days 30] [--interval 60]
                                       [--repeat 20] [--keep PATH]

Builds a real SQLite log (about 4.3M events at the defaults; rows are appended in
batches of a few thousand, each batch one commit, through the store's own hash chain):
each provider registered, then probed every `--interval` seconds from the first of a
month, with two outages of 5 to 120 minutes each (failed probes) and, for one provider
in ten, an hour answering "maintenance" early on. Then it folds the whole log as the service's
start-up does without a snapshot (`load_projections`) and prints the fold's rate.

Over those read models, in the same run, it times (median and p95 of `--repeat` runs,
and the median CPU time) the report `GET /api/reports/uptime` and `report --month`
compute (`uptime_report` plus the JSON encoding):
- the month's report of every provider: the goal is under 200 ms;
- one provider's, the baseline: the ratio says how the report scales with providers.

It checks the numbers too: each provider's downtime is, by construction, its outages
less one probe each (offline from the third failure to the second success after).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from cryptomon.events.archive import hash_at
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import Event, MonitoringChanged, ProbeRecorded, ProviderRegistered
from cryptomon.http.views.reports import month_days, uptime_report
from cryptomon.projections import ProjectionSettings
from cryptomon.readmodels import load_projections

GOAL_MS = 200.0
MONTH = "2026-11"
BATCH = 5000

_encoder = msgspec.json.Encoder()


def registration(name: str) -> ProviderRegistered:
    return ProviderRegistered(
        provider=name,
        category="market_data",
        base_url=f"https://{name.lower()}.example/api",
        health_path="/ping",
        schedule="every 60s",
        timeout_ms=10_000,
        degraded_latency_ms=2000,
        rate_limit=None,
        key_configured=True,
    )


def plan(providers: int, days: int, interval: float, rng: random.Random) -> dict[str, object]:
    """Each provider's outages (first probe index, length in probes) and maintenance."""
    probes = int(days * 86_400 // interval)
    minute = 60 / interval
    outages: dict[int, list[tuple[int, int]]] = {}
    for index in range(providers):
        # Two outages, apart: one in each half of the month.
        outages[index] = [
            (rng.randrange(half, half + probes // 2 - 200), int(rng.randint(5, 120) * minute))
            for half in (100, probes // 2)
        ]
    # Early in the month, before any outage (the first starts at probe 100 or later).
    maintenance = {index: 20 for index in range(0, providers, 10)}
    return {"probes": probes, "outages": outages, "maintenance": maintenance}


async def build_log(path: Path, providers: int, days: int, interval: float) -> dict[int, float]:
    """The log; each provider's expected downtime in minutes, by construction."""
    rng = random.Random(7)
    start = float(month_days(MONTH)[0])
    names = [f"provider-{index:03d}" for index in range(providers)]
    layout = plan(providers, days, interval, rng)
    probes = int(layout["probes"])  # type: ignore[call-overload]
    outages: dict[int, list[tuple[int, int]]] = layout["outages"]  # type: ignore[assignment]
    maintenance: dict[int, int] = layout["maintenance"]  # type: ignore[assignment]
    failing = {
        index: {step for first, length in spans for step in range(first, first + length)}
        for index, spans in outages.items()
    }
    expected = {
        index: sum((length - 1) * interval / 60 for _, length in spans)
        for index, spans in outages.items()
    }
    clock = [start]
    store = await EventStore.open(path, clock=lambda: clock[0])
    await store.append("monitor", [MonitoringChanged(failure_ratio_min_probes=5)])
    for name in names:
        await store.append(f"config:{name}", [registration(name)])
    batch: dict[str, list[Event]] = {}
    pending = 0
    hour = int(3600 // interval)
    for step in range(probes):
        at = start + step * interval
        for index, name in enumerate(names):
            started = at + index * interval / providers
            first_maintenance = maintenance.get(index)
            if step in failing[index]:
                outcome, latency, status = "failed", 30.0, 503
            elif first_maintenance is not None and 0 <= step - first_maintenance < hour:
                outcome, latency, status = "maintenance", 80.0, 200
            else:
                outcome, latency, status = "success", rng.lognormvariate(5.0, 0.5), 200
            batch.setdefault(f"provider:{name}", []).append(
                ProbeRecorded(
                    name,
                    "health",
                    "/ping",
                    outcome,  # type: ignore[arg-type]
                    started_at=started,
                    latency_ms=latency,
                    http_status=status,
                    error_kind="http_5xx" if outcome == "failed" else None,
                )
            )
            pending += 1
        if pending >= BATCH or step == probes - 1:
            clock[0] = at + interval
            await asyncio.gather(*(store.append(s, events) for s, events in batch.items()))
            batch.clear()
            pending = 0
    await store.close()
    return expected


def timed(work: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Median and p95 wall time of `repeat` runs, and the median CPU time, in ms."""
    work()  # warm up
    runs, cpu = [], []
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        work()
        runs.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
    runs.sort()
    p95 = runs[min(len(runs) - 1, round(0.95 * (len(runs) - 1)))]
    return statistics.median(runs), p95, statistics.median(cpu)


async def run(args: argparse.Namespace, directory: Path) -> None:
    path = args.keep or directory / "bench.db"
    if path.exists():
        print(f"reusing the log at {path} (its downtime is not checked)")
        expected: dict[int, float] = {}
    else:
        began = time.perf_counter()
        expected = await build_log(path, args.providers, args.days, args.interval)
        print(f"built a log in {time.perf_counter() - began:.0f} s")
    store = await EventStore.open(path, readonly=True)
    began = time.perf_counter()
    projections, loaded = await load_projections(store, ProjectionSettings())
    folded = time.perf_counter() - began
    chain_hash = await hash_at(store, projections.position)
    await store.close()
    if args.keep is not None and loaded.tail_events:
        # A kept log gets a snapshot, so the next run starts in seconds, as the service does.
        writer = await EventStore.open(path)
        await writer.save_snapshots(projections.snapshot_state(), projections.position)
        await writer.close()
    print(
        f"read models: {loaded.tail_events:,} events folded after a snapshot at"
        f" {loaded.snapshot_position:,}, in {folded:.0f} s"
        f" ({loaded.tail_events / folded:,.0f} events/s)"
    )
    first_day, end_day = month_days(MONTH)
    names = [state.name for state in projections.providers.all()]

    def every() -> bytes:
        return _encoder.encode(uptime_report(projections, first_day, end_day, chain_hash))

    def one() -> bytes:
        return _encoder.encode(uptime_report(projections, first_day, end_day, chain_hash, names[0]))

    report = msgspec.json.decode(every())
    for index, minutes in expected.items():
        row = report["providers"][index]
        assert row["downtime_minutes"] == round(minutes, 2), (row, minutes)
    worst = min(row["uptime_percent"] for row in report["providers"])
    print(
        f"report of {MONTH}: {report['count']} providers, position {report['position']:,},"
        f" lowest uptime {worst}%; downtime as constructed:"
        f" {'checked' if expected else 'not checked'}"
    )
    all_median, all_p95, all_cpu = timed(every, args.repeat)
    one_median, one_p95, one_cpu = timed(one, args.repeat)
    print(
        f"month's report of all {len(names)} providers: median {all_median:.1f} ms,"
        f" p95 {all_p95:.1f} ms, CPU {all_cpu:.1f} ms; goal < {GOAL_MS:.0f} ms:"
        f" {'met' if all_median < GOAL_MS else 'NOT met'}"
    )
    print(
        f"baseline, one provider's report: median {one_median:.2f} ms, p95 {one_p95:.2f} ms,"
        f" CPU {one_cpu:.2f} ms; all / one = {all_median / one_median:.0f}x for"
        f" {len(names)}x the providers"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between probes")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None, help="reuse or keep the log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(args, Path(directory)))


if __name__ == "__main__":
    main()
