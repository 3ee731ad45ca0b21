"""The 90-day uptime bars of 100 providers: how long `GET /api/uptime/daily` takes to answer.

    python benchmarks/bench_uptime_bars.py [--providers 100] [--days 90] [--interval 1200]

Builds the read models the way the service does, by folding events through
`Projections` (the real folds, a replay's pages): each provider registered, then probed
every `--interval` seconds over the last `--days` days, with a failure now and then and
a bad day for some, so the rollups hold what a real log gives them: day buckets for the
older days, hour buckets for the last 8 and minute blocks for the last 2 hours. A denser
log only fills the same buckets with bigger counts; the answer costs the same.

Then it times, over the same read models in the same run (median and p95 of `--repeat`
runs each), the endpoint's whole computation (`views.uptime.uptime_days` plus the JSON
encoding `respond` does):
- the bars of every provider: the goal is under 50 ms (the median; the CPU time is
  printed too, as other load on the machine stretches the wall time);
- one provider's bar, the baseline: the ratio says how the answer scales with providers;
- the bars computed the obvious way, one `metrics.window` per provider and day, for
  comparison.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import msgspec

from cryptomon.events.types import Event, ProbeOutcome, ProbeRecorded, ProviderRegistered
from cryptomon.http.views.uptime import uptime_days
from cryptomon.projections import Projections
from cryptomon.projections.metrics import DAY

GOAL_MS = 50.0
PAGE = 10_000  # events folded at once, as a replay reads them

_encoder = msgspec.json.Encoder()


def registration(name: str) -> ProviderRegistered:
    return ProviderRegistered(
        provider=name,
        category="market_data",
        base_url=f"https://{name.lower()}.example/api",
        health_path="/ping",
        schedule="20m",
        timeout_ms=10_000,
        degraded_latency_ms=2000,
        rate_limit=None,
        key_configured=True,
    )


def build(providers: int, days: int, interval: float, now: float) -> tuple[Projections, int]:
    rng = random.Random(7)
    names = [f"Provider{i:03d}" for i in range(providers)]
    projections = Projections()
    position = 0
    positions: list[int] = []
    times: list[float] = []
    events: list[Event] = []

    def add(at: float, event: Event) -> None:
        nonlocal position
        position += 1
        positions.append(position)
        times.append(at)
        events.append(event)
        if len(events) >= PAGE:
            flush()

    def flush() -> None:
        if events:
            projections.fold_columns(positions, times, events)
            positions.clear()
            times.clear()
            events.clear()

    start = now - days * DAY
    for name in names:
        add(start, registration(name))
    # A bad day for a provider in ten: a third of its probes fail.
    bad = {(rng.randrange(providers), rng.randrange(days)) for _ in range(providers // 10 + 1)}
    rounds = int(days * DAY // interval)
    count = 0
    for step in range(rounds):
        at = start + step * interval
        day = int((at - start) // DAY)
        for index, name in enumerate(names):
            at_provider = at + index * interval / providers  # spread over the interval
            failing = 0.33 if (index, day) in bad else 0.004
            outcome: ProbeOutcome = "failed" if rng.random() < failing else "success"
            add(
                at_provider,
                ProbeRecorded(
                    name,
                    "health",
                    "/ping",
                    outcome,
                    started_at=at_provider,
                    latency_ms=rng.lognormvariate(5.0, 0.5) if outcome == "success" else 30.0,
                    http_status=200 if outcome == "success" else 503,
                    error_kind=None if outcome == "success" else "http_5xx",
                ),
            )
            count += 1
    flush()
    return projections, count


def timed(work: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """Median and p95 wall time of `repeat` runs, and the median CPU time (this process's:
    what other load on the machine inflates least), in milliseconds."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=100)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--interval", type=float, default=1200.0, help="seconds between probes")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    now = time.time()
    began = time.perf_counter()
    projections, probes = build(args.providers, args.days, args.interval, now)
    built = time.perf_counter() - began
    names = [state.name for state in projections.providers.all()]
    metrics = projections.metrics
    sample = metrics.state.health[names[0]]
    print(
        f"read models: {args.providers} providers, {probes:,} probes over {args.days} days"
        f" folded in {built:.1f} s; one provider's rollup holds {len(sample.days)} days,"
        f" {len(sample.hours)} hours, {len(sample.minutes)} minute blocks"
    )

    def every() -> bytes:
        return _encoder.encode(uptime_days(projections, names, now, args.days))

    def one() -> bytes:
        return _encoder.encode(uptime_days(projections, names[:1], now, args.days))

    first = int(now // DAY * DAY) - (args.days - 1) * DAY

    def obvious() -> list[list[int]]:
        return [
            [
                metrics.window(name, first + i * DAY, first + (i + 1) * DAY, "health").count
                for i in range(args.days)
            ]
            for name in names
        ]

    size = len(every())
    # The same numbers both ways.
    fast = msgspec.json.decode(every())
    assert [p["probes_by_day"] for p in fast["providers"]] == obvious()

    all_median, all_p95, all_cpu = timed(every, args.repeat)
    one_median, one_p95, one_cpu = timed(one, args.repeat)
    slow_median, slow_p95, slow_cpu = timed(obvious, max(3, args.repeat // 10))
    print(
        f"bars of all {len(names)} providers: median {all_median:.1f} ms, p95 {all_p95:.1f} ms,"
        f" CPU {all_cpu:.1f} ms ({size / 1024:.0f} KiB of JSON); goal < {GOAL_MS:.0f} ms:"
        f" {'met' if all_median < GOAL_MS else 'NOT met'}"
    )
    print(
        f"baseline, one provider's bar: median {one_median:.2f} ms, p95 {one_p95:.2f} ms,"
        f" CPU {one_cpu:.2f} ms; all / one = {all_median / one_median:.0f}x for"
        f" {len(names)}x the providers"
    )
    print(
        f"the obvious way, a window per provider and day: median {slow_median:.1f} ms,"
        f" p95 {slow_p95:.1f} ms, CPU {slow_cpu:.1f} ms; {slow_median / all_median:.1f}x slower"
    )


if __name__ == "__main__":
    main()
