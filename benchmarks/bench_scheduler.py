"""Probing at scale: 1,000 providers on loopback stand-ins, each every second.

    python benchmarks/bench_scheduler.py [--providers 1000] [--seconds 30] [--rounds 2]

The stand-in providers run in a separate process so their CPU is not ours. Each
provider is a JSON-RPC node: a POST of `eth_getBlockByNumber` answered with about 1 KB
of JSON. The run alternates two configurations, `--rounds` times each: probes without
conditions (the baseline), and probes with two [BODY] JSON-path conditions and one hex
observation. For each it prints probes/s achieved against the rate asked, schedule lag
p50/p99 (the request leaving minus its planned start, from the recorded events), how
many planned probes did not run, and our CPU seconds per 1,000 probes; then the ratio
of CPU per 1,000 probes with checks to without (goal: within 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from cryptomon.config import load_config
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import ProbeRecorded
from cryptomon.probing.monitor import Monitor
from cryptomon.probing.probes import create_probe_session

STANDIN = """
import json, sys
from aiohttp import web

# About 1 KB: a block header as eth_getBlockByNumber(..., false) answers it, trimmed.
BLOCK = {
    "number": "0x13a5c8f", "hash": "0x" + "ab" * 32, "parentHash": "0x" + "cd" * 32,
    "miner": "0x" + "11" * 20, "stateRoot": "0x" + "22" * 32,
    "transactionsRoot": "0x" + "33" * 32, "receiptsRoot": "0x" + "44" * 32,
    "gasLimit": "0x1c9c380", "gasUsed": "0xe4e1c0", "timestamp": "0x6750c2af",
    "baseFeePerGas": "0x3b9aca00", "extraData": "0x" + "00" * 32,
    "transactions": ["0x" + format(n, "064x") for n in range(6)],
}

async def rpc(request):
    call = await request.json()
    reply = {"jsonrpc": "2.0", "id": call["id"], "result": BLOCK}
    return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

app = web.Application()
app.router.add_post("/rpc", rpc)
ready = lambda *_: print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=ready)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


CHECKS = """conditions = ["[BODY].result.number > 0x100", "len([BODY].result.transactions) > 0"]
observe = { head = "[BODY].result.number" }
"""


def write_config(path: Path, providers: int, port: int, checks: bool) -> None:
    blocks = [
        f'[[providers]]\nname = "p{n:04d}"\ncategory = "rpc_nodes"\n'
        f'base_url = "http://127.0.0.1:{port}"\nhealth_path = "/rpc"\ninterval = "1s"\n'
        'timeout = "5s"\ndegraded_latency = "2s"\n'
        'rpc = { method = "eth_getBlockByNumber", params = ["latest", false] }\n'
        + (CHECKS if checks else "")
        for n in range(providers)
    ]
    path.write_text("\n".join(blocks))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(providers: int, seconds: float, port: int, checks: bool) -> float:
    """One measured period; CPU seconds per 1,000 probes."""
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "bench.toml"
        write_config(config_path, providers, port, checks)
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
        outcomes: Counter[str] = Counter()
        async for recorded in store.subscribe(after=start_position):
            event = recorded.event
            if isinstance(event, ProbeRecorded) and event.scheduled_at is not None:
                lags.append((event.started_at - event.scheduled_at) * 1000)
                outcomes[event.outcome] += 1
                assert not checks or (event.observations or {}).get("head") == 0x13A5C8F, event
            if recorded.position == store.head:
                break
        await store.close()
        await session.close()
    done = len(lags)
    quantiles = statistics.quantiles(lags, n=100)
    label = "with 2 conditions + 1 observation" if checks else "without checks (baseline)"
    print(f"-- {label}: providers {providers}, interval 1s, {seconds:g}s")
    print(f"outcomes: {dict(outcomes)}")
    print(f"probes/s: {done / seconds:,.0f} of {providers:,} asked ({done:,} recorded)")
    print(f"planned {stats.planned:,}, skipped as overlapping {stats.skipped_overlap:,},")
    print(f"  skipped as late {stats.skipped_late:,}, cancelled at stop {stats.started - done:,}")
    print(
        f"schedule lag: p50 {quantiles[49]:.1f} ms, p99 {quantiles[98]:.1f} ms, max {max(lags):.1f}"
    )
    print(f"CPU seconds per 1,000 probes: {cpu / done * 1000:.3f}")
    print(f"goal lag p99 < 50 ms: {'met' if quantiles[98] < 50 else 'NOT met'}")
    return cpu / done * 1000


async def compare(providers: int, seconds: float, port: int, rounds: int) -> None:
    figures: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for checks in (False, True):  # alternated, so drift in the machine hits both
            figures[checks].append(await run(providers, seconds, port, checks))
    baseline = statistics.median(figures[False])
    checked = statistics.median(figures[True])
    print("== CPU seconds per 1,000 probes (median of rounds)")
    print(f"baseline {baseline:.3f} {[round(f, 3) for f in figures[False]]}")
    print(f"checks   {checked:.3f} {[round(f, 3) for f in figures[True]]}")
    ratio = checked / baseline
    verdict = "met" if ratio <= 1.1 else "NOT met"
    print(f"ratio checks / baseline: {ratio:.3f} (goal <= 1.10: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", STANDIN, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    server.stdout.readline()
    try:
        asyncio.run(compare(args.providers, args.seconds, port, args.rounds))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
