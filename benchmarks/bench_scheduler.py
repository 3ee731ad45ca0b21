"""Probing at scale: 1,000 providers on loopback stand-ins, each every second.

    python benchmarks/bench_scheduler.py [--providers 1000] [--seconds 30]

The stand-in providers run in a separate process so their CPU is not ours.
Prints probes/s achieved against the rate asked, schedule lag p50/p99 (the
request leaving minus its planned start, from the recorded events), how many
planned probes did not run, and our CPU seconds per 1,000 probes.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptomon.config import load_config
from cryptomon.events.store import EventStore
from cryptomon.events.types import ProbeRecorded
from cryptomon.monitor import Monitor
from cryptomon.probes import create_probe_session

STANDIN = """
import sys
from aiohttp import web

async def ping(request):
    return web.Response(body=b'{"gecko_says":"(V3) To the Moon!"}', content_type="application/json")

app = web.Application()
app.router.add_get("/ping", ping)
ready = lambda *_: print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=ready)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_config(path: Path, providers: int, port: int) -> None:
    blocks = [
        f'[[providers]]\nname = "p{n:04d}"\ncategory = "market_data"\n'
        f'base_url = "http://127.0.0.1:{port}"\nhealth_path = "/ping"\ninterval = "1s"\n'
        'timeout = "5s"\ndegraded_latency = "2s"\n'
        for n in range(providers)
    ]
    path.write_text("\n".join(blocks))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(providers: int, seconds: float, port: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "bench.toml"
        write_config(config_path, providers, port)
        config = load_config(config_path)
        store = await EventStore.open(Path(tmp) / "bench.db")
        session = create_probe_session(limit=200, limit_per_host=200)
        monitor = Monitor(config, store, session, environ={}, max_concurrency=200)
        await monitor.register_providers()
        start_position = store.head
        cpu_before = cpu_seconds()
        await monitor.start()
        await asyncio.sleep(seconds)  # the benchmark's measured period
        await monitor.stop()
        cpu = cpu_seconds() - cpu_before
        stats = monitor.scheduler.stats
        lags = []
        async for recorded in store.subscribe(after=start_position):
            event = recorded.event
            if isinstance(event, ProbeRecorded) and event.scheduled_at is not None:
                lags.append((event.started_at - event.scheduled_at) * 1000)
            if recorded.position == store.head:
                break
        await store.close()
        await session.close()
    done = len(lags)
    quantiles = statistics.quantiles(lags, n=100)
    print(f"providers {providers}, interval 1s, {seconds:g}s")
    print(f"probes/s: {done / seconds:,.0f} of {providers:,} asked ({done:,} recorded)")
    print(f"planned {stats.planned:,}, skipped as overlapping {stats.skipped_overlap:,},")
    print(f"  skipped as late {stats.skipped_late:,}, cancelled at stop {stats.started - done:,}")
    print(
        f"schedule lag: p50 {quantiles[49]:.1f} ms, p99 {quantiles[98]:.1f} ms, max {max(lags):.1f}"
    )
    print(f"CPU seconds per 1,000 probes: {cpu / done * 1000:.2f}")
    print(f"goal lag p99 < 50 ms: {'met' if quantiles[98] < 50 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", STANDIN, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    server.stdout.readline()
    try:
        asyncio.run(run(args.providers, args.seconds, port))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
