"""A chain of 50 nodes probed every second: how current each node's lag state is.

    python benchmarks/bench_chains.py [--nodes 50] [--seconds 40]

The stand-in nodes run in a separate process so their CPU is not ours: one JSON-RPC
server answering `eth_blockNumber` + `eth_chainId` batches for every node, the chain
making a block a second. Node 1 falls 20 blocks behind for the middle third of the run
and node 2 freezes from its middle on. The service side is the real monitor and read
models (probing, appending, folding live) on a SQLite log.

Printed, from the events the run recorded:
- how long after a probe started the live read models had folded it (p50/p99), and the
  share folded before the node's next probe (1 s on): the lag state is current within
  one probe when that share is all of them;
- at which of its probes node 1 became lagging after falling behind (K = 2: its 2nd),
  and whether node 2 went stale;
- CPU seconds per 1,000 probes, and the same run without `chain` (the baseline), and
  their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptomon.config import load_config
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import ProbeRecorded, RecordedEvent
from cryptomon.probing.monitor import Monitor
from cryptomon.probing.probes import create_probe_session
from cryptomon.projections import Notice, Projections
from cryptomon.readmodels import ReadModels, projection_settings

STANDIN = """
import json, sys, time
from aiohttp import web

START, SECONDS = time.time(), float(sys.argv[2])

def head(node):
    now = time.time() - START
    block = 1_000_000 + int(now)  # a block a second
    if node == 1 and SECONDS / 3 <= now < 2 * SECONDS / 3:
        block -= 20  # behind for the middle third
    if node == 2 and now >= SECONDS / 2:
        block = 1_000_000 + int(SECONDS / 2)  # frozen from the middle on
    return block

async def rpc(request):
    node = int(request.match_info["node"])
    calls = await request.json()
    answers = {"eth_blockNumber": hex(head(node)), "eth_chainId": "0x1"}
    reply = [{"jsonrpc": "2.0", "id": c["id"], "result": answers[c["method"]]} for c in calls]
    return web.Response(body=json.dumps(reply).encode(), content_type="application/json")

app = web.Application()
app.router.add_post("/node/{node}", rpc)
ready = lambda *_: print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=ready)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_config(path: Path, nodes: int, port: int, chain: bool) -> None:
    path.write_text(
        "\n".join(
            f'[[providers]]\nname = "node-{n:02d}"\ncategory = "rpc_nodes"\n'
            f'base_url = "http://127.0.0.1:{port}/node/{n}"\ninterval = "1s"\ntimeout = "5s"\n'
            'rpc = [{ method = "eth_blockNumber" }, { method = "eth_chainId" }]\n'
            'observe = { head = "[BODY][0].result", chain_id = "[BODY][1].result" }\n'
            + ('chain = "ethereum"\n' if chain else "")
            for n in range(nodes)
        )
    )


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(nodes: int, seconds: float, chain: bool) -> tuple[float, Path | None]:
    """One run against fresh stand-ins; CPU seconds per 1,000 probes, and its log."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STANDIN, str(port), str(seconds), stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    await server.stdout.readline()
    tmp = Path(tempfile.mkdtemp(prefix="bench-chains-"))
    config_path = tmp / "bench.toml"
    write_config(config_path, nodes, port, chain)
    config = load_config(config_path)
    store = await EventStore.open(tmp / "bench.db")
    models = ReadModels(store, projection_settings(config))
    await models.start()
    folded_after: list[float] = []  # seconds from a probe's start to its fold

    def listen(recorded: RecordedEvent, notices: list[Notice]) -> None:
        if isinstance(recorded.event, ProbeRecorded):
            folded_after.append(time.time() - recorded.event.started_at)

    models.listeners.append(listen)
    session = create_probe_session(limit=100, limit_per_host=100)
    monitor = Monitor(config, store, session, environ={})
    await monitor.register_providers()
    cpu_before = cpu_seconds()
    await monitor.start()
    await asyncio.sleep(seconds)  # the measured period
    await monitor.stop()
    await models.wait_for(store.head)
    cpu = cpu_seconds() - cpu_before
    await models.stop()
    await store.close()
    await session.close()
    server.terminate()
    await server.wait()
    probes = len(folded_after)
    label = "with chain" if chain else "without chain (baseline)"
    quantiles = statistics.quantiles(folded_after, n=100)
    print(f"-- {label}: {nodes} nodes every 1 s for {seconds:g} s, {probes:,} probes")
    within = sum(1 for after in folded_after if after < 1.0)
    print(
        f"probe start to folded: p50 {quantiles[49] * 1000:.0f} ms,"
        f" p99 {quantiles[98] * 1000:.0f} ms; before the next probe: {within:,} of {probes:,}"
    )
    print(f"CPU seconds per 1,000 probes: {cpu / probes * 1000:.3f}")
    if not chain:
        shutil.rmtree(tmp)
        return cpu / probes * 1000, None
    return cpu / probes * 1000, tmp / "bench.db"


async def judge(path: Path) -> None:
    """Fold the recorded log: when node 1 became lagging, whether node 2 went stale."""
    store = await EventStore.open(path, readonly=True)
    projections = Projections()
    behind_at: int | None = None
    lagging_at: int | None = None
    stale_seen = False
    count = 0
    async for recorded in store.subscribe(after=0):
        projections.fold(recorded)
        event = recorded.event
        if not isinstance(event, ProbeRecorded) or not event.observations:
            if recorded.position == store.head:
                break
            continue
        node = projections.chains.node(event.provider)
        assert node is not None
        if event.provider == "node-01":
            count += 1
            if behind_at is None and node.lag is not None and node.lag > 3:
                behind_at = count
            if lagging_at is None and "lagging" in node.states:
                lagging_at = count
        stale_seen = stale_seen or (event.provider == "node-02" and "stale" in node.states)
        if recorded.position == store.head:
            break
    await store.close()
    if behind_at is not None and lagging_at is not None:
        print(
            f"node-01: more than 3 behind from its probe {behind_at}, lagging from its probe"
            f" {lagging_at} ({lagging_at - behind_at + 1} probes behind; K = 2)"
        )
    else:
        print(f"node-01: behind from probe {behind_at}, lagging from probe {lagging_at}")
    print(f"node-02 frozen: stale {'seen' if stale_seen else 'NOT seen'}")


async def main_async(nodes: int, seconds: float) -> None:
    baseline, _ = await run(nodes, seconds, chain=False)
    with_chain, path = await run(nodes, seconds, chain=True)
    assert path is not None
    await judge(path)
    shutil.rmtree(path.parent)
    print(f"CPU per 1,000 probes with chain / without: {with_chain / baseline:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    asyncio.run(main_async(args.nodes, args.seconds))


if __name__ == "__main__":
    main()
