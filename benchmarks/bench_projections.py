"""Projections over a large log: replay rate, start-up from a snapshot, memory, bytes per event.

    python benchmarks/bench_projections.py [--events 1000000] [--keep PATH]

Builds a log of realistic events (100 providers probed every 30 s, mixed
outcomes, rate-limit changes; 20 chain nodes observing heads and 8 sources quoting
prices), then, over that log in the same run, prints the rate of reading and
decoding it alone (`replay_pages`, no fold), of the full replay into every
projection (`readmodels.fold_log`) and their ratio; the cost of the chains and
quotes folds (the replay with them against the replay without them, folded in
turn, see `paired_replay`); then the start-up time from a snapshot plus a
10,000-event tail, resident memory after the replay, and database bytes per event.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import (
    ErrorKind,
    Event,
    ProbeKind,
    ProbeOutcome,
    ProbeRecorded,
    ProviderRegistered,
    RateLimitChanged,
    RateLimitSpec,
)
from cryptomon.projections import Projections, ProjectionSettings
from cryptomon.readmodels import REPLAY_PAGE_SIZE, fold_log, load_projections

PROVIDERS = 100
# Events folded at a time by each side of `paired_replay` in turn.
PAIRED_SLICE = 2_000
START = 1_790_000_000.0
TAIL = 10_000
# The first providers are chain nodes (5 per chain, their heads observed), the next ones
# quote a pair (4 per pair, their prices observed); the rest are plain APIs.
CHAINS = {"ethereum": 1 / 12, "bitcoin": 1 / 600, "solana": 2.5, "base": 0.5}  # blocks/s
NODES_PER_CHAIN = 5
PAIRS = {"BTC-USD": 60_000.0, "ETH-USD": 3_000.0}
SOURCES_PER_PAIR = 4


def role(p: int) -> tuple[str | None, str | None]:
    """Provider p's chain and pair."""
    chains, pairs = list(CHAINS), list(PAIRS)
    if p < len(chains) * NODES_PER_CHAIN:
        return chains[p // NODES_PER_CHAIN], None
    p -= len(chains) * NODES_PER_CHAIN
    if p < len(pairs) * SOURCES_PER_PAIR:
        return None, pairs[p // SOURCES_PER_PAIR]
    return None, None


def observations(
    rng: random.Random, p: int, at: float
) -> dict[str, int | float | str | bool] | None:
    """What provider p's probe at `at` observes: a head (now and then a few blocks behind),
    or a price (now and then a few percent off), or nothing."""
    chain, pair = role(p)
    if chain is not None:
        behind = rng.choice((0, 0, 0, 0, 1, 2, 10))
        return {"head": hex(int((at - START) * CHAINS[chain]) + 1_000_000 - behind)}
    if pair is not None:
        off = rng.choice((0.0, 0.0, 0.0, 0.001, -0.001, 0.05))
        return {"price": round(PAIRS[pair] * (1 + off), 2), "price_time": at - 2}
    return None


def probe_events(count: int, seed: int = 7) -> list[tuple[str, Event]]:
    """(stream, event) in time order: each provider probed every 30 s."""
    rng = random.Random(seed)
    events: list[tuple[str, Event]] = []
    n = 0
    while len(events) < count:
        p = n % PROVIDERS
        provider = f"provider-{p:03d}"
        at = START + (n // PROVIDERS) * 30 + (n % PROVIDERS) * 0.3
        roll = rng.random()
        outcome: ProbeOutcome = "success"
        error: ErrorKind | None = None
        status: int | None = 200
        if roll < 0.03:
            outcome, error, status = "timeout", "timeout", None
        elif roll < 0.05:
            outcome, error, status = "failed", "http_5xx", 503
        elif roll < 0.055:
            outcome, error, status = "rate_limited", "rate_limited", 429
        kind: ProbeKind = "health" if n % 10 else "collection"
        latency = rng.lognormvariate(5, 0.6)
        events.append(
            (
                f"provider:{provider}",
                ProbeRecorded(
                    provider=provider,
                    kind=kind,
                    endpoint="/ping" if kind == "health" else "/simple/price?ids=bitcoin",
                    outcome=outcome,
                    started_at=at,
                    latency_ms=round(latency, 2),
                    http_status=status,
                    response_bytes=0 if status != 200 else 512,
                    error_kind=error,
                    error_message=None if error is None else f"{error} from api.example.com",
                    scheduled_at=at - 0.001,
                    observations=observations(rng, p, at) if outcome == "success" else None,
                ),
            )
        )
        if roll < 0.01:
            percentage = rng.choice([50.0, 80.0, 90.0, 100.0])
            events.append(
                (
                    f"provider:{provider}",
                    RateLimitChanged(provider, int(percentage), 100, 60.0, percentage, at),
                )
            )
        n += 1
    return events[:count]


async def build_log(path: Path, count: int) -> None:
    clock_now = [START]
    store = await EventStore.open(path, clock=lambda: clock_now[0])
    for p in range(PROVIDERS):
        chain, pair = role(p)
        registered = ProviderRegistered(
            f"provider-{p:03d}", "market_data", "https://api.example.com", "/ping", "every 30s",
            10_000, 2_000, RateLimitSpec(100, 60.0), chain=chain, quote=pair,
        )  # fmt: skip
        await store.append(f"config:provider-{p:03d}", [registered])
    events = probe_events(count - PROVIDERS)
    batch = 2000
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        last = chunk[-1][1]
        if isinstance(last, ProbeRecorded):
            clock_now[0] = last.started_at
        by_stream: dict[str, list[Event]] = {}
        for stream, event in chunk:
            by_stream.setdefault(stream, []).append(event)
        await asyncio.gather(*(store.append(s, e) for s, e in by_stream.items()))
    await store.close()


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS), or its peak so far (VmHWM), from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Timed:
    """The wall and CPU time of a block: CPU time of all this process's threads (SQLite
    reads run in aiosqlite's), steadier than the wall clock on a machine shared with other
    work; a child process's is not in it."""

    def __enter__(self) -> Timed:
        self.started, self.cpu_started = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started


async def decode_only(store: EventStore, until: int) -> int:
    """Read and decode the log up to `until` as a replay does (the same pages, the collector
    paused), folding nothing; the events read."""
    read = 0
    gc.disable()
    try:
        pages = store.replay_pages(after=0, to_position=until, page_size=REPLAY_PAGE_SIZE)
        async for _positions, _times, events in pages:
            read += len(events)
    finally:
        gc.enable()
    return read


async def paired_replay(
    store: EventStore, until: int, settings: ProjectionSettings
) -> tuple[int, float, float, float]:
    """The replay with the chains and quotes folds against the same replay without them
    (a cut no service makes: the providers projection then hears no judgement), folded
    in turn: each page is read and decoded once, then each slice of `PAIRED_SLICE`
    events folded by one side and the other, the side going first alternating. The two
    sides run within milliseconds of each other, so the noise of a shared machine (its
    rate moves by several percent from one second to the next) falls on both alike.

    Returns the events folded and the CPU seconds of reading and decoding them, of
    folding them with the chains and quotes folds, and without them."""
    judged = Projections(settings)
    unjudged = Projections(settings)
    unjudged.folds = tuple(n for n in unjudged.folds if n not in ("chains", "quotes"))
    unjudged._route()
    spent = {id(judged): 0.0, id(unjudged): 0.0}
    clock = time.process_time
    decoding = 0.0
    read = turn = 0
    gc.disable()
    try:
        pages = store.replay_pages(after=0, to_position=until, page_size=REPLAY_PAGE_SIZE)
        started = clock()
        async for positions, times, events in pages:
            decoding += clock() - started
            read += len(events)
            for start in range(0, len(events), PAIRED_SLICE):
                part = slice(start, start + PAIRED_SLICE)
                turn += 1
                for side in (judged, unjudged) if turn % 2 else (unjudged, judged):
                    began = clock()
                    side.fold_columns(positions[part], times[part], events[part])
                    spent[id(side)] += clock() - began
            started = clock()
    finally:
        gc.enable()
    assert judged.position == unjudged.position == until
    return read, decoding, spent[id(judged)], spent[id(unjudged)]


def line(label: str, events: int, timed: Timed) -> float:
    rate = events / timed.seconds
    print(
        f"{label}: {rate:,.0f} events/s ({events:,} in {timed.seconds:.2f} s;"
        f" {events / timed.cpu_seconds:,.0f} events per CPU second of this process)"
    )
    return rate


async def run(count: int, keep: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = keep or Path(tmp) / "bench.db"
        if not path.exists():
            # Built in another process, so its event list does not count in our memory.
            started = time.perf_counter()
            command = [sys.executable, __file__, "--build", str(path), "--events", str(count)]
            await (await asyncio.create_subprocess_exec(*command)).wait()
            print(f"built a log of {count:,} events in {time.perf_counter() - started:.1f} s")
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        settings = ProjectionSettings()

        store = await EventStore.open(path, readonly=True)
        head = store.head
        until = head - TAIL
        rss_before = rss_mb()
        with Timed() as decode_timed:
            read = await decode_only(store, until)
        projections = Projections(settings)
        with Timed() as replay_timed:
            folded = await fold_log(projections, store, until)
        rss_after, rss_peak = rss_mb(), rss_mb("VmHWM")  # the paired replay's two apart
        paired, decoding, judging, unjudging = await paired_replay(store, until, settings)
        await store.close()
        assert read == folded == paired

        store = await EventStore.open(path)
        await store.save_snapshots(projections.snapshot_state(), projections.position)
        await store.close()

        store = await EventStore.open(path, readonly=True)
        started = time.perf_counter()
        live, report = await load_projections(store, settings)
        startup = time.perf_counter() - started
        await store.close()

        print(f"events in the log: {head:,}")
        decode_rate = line("read and decode alone (no fold)", read, decode_timed)
        rate = line("replay into all projections", folded, replay_timed)
        with_rate, without_rate = paired / (decoding + judging), paired / (decoding + unjudging)
        print(
            "replay with / without the chains and quotes folds, folded in turn:"
            f" {with_rate:,.0f} / {without_rate:,.0f} events per CPU second"
            f" (decoding {paired / decoding:,.0f}) = {with_rate / without_rate:.2f}"
            f" (goal >= 0.85: {'met' if with_rate >= 0.85 * without_rate else 'NOT met'})"
        )
        chains = projections.chains.all()
        judged = sum(len(n.states) for c in chains for n in c.nodes.values())
        print(
            f"  {len(chains)} chains, {len(projections.quotes.all())} pairs, {judged} states held"
        )
        print(f"  goal >= 200,000 events/s: {'met' if rate >= 200_000 else 'NOT met'}")
        ratio = rate / decode_rate
        print(
            f"  replay / decode alone: {ratio:.2f} (goal >= 0.6:"
            f" {'met' if ratio >= 0.6 else 'NOT met'})"
        )
        print(
            f"start-up from snapshot at {report.snapshot_position:,} + {report.tail_events:,}"
            f"-event tail: {startup * 1000:.0f} ms (goal < 1,000 ms)"
        )
        print(
            f"resident memory: {rss_before:.0f} MB before replay, {rss_after:.0f} MB after,"
            f" {rss_peak:.0f} MB peak (goal < 300 MB)"
        )
        print(f"database: {size / 1e6:.1f} MB, {size / head:.0f} bytes per event")
        assert live.position == head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="reuse or keep the log here")
    parser.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build is not None:
        asyncio.run(build_log(args.build, args.events))
    else:
        asyncio.run(run(args.events, args.keep))


if __name__ == "__main__":
    main()
