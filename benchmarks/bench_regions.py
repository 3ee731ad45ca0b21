"""Regions on one PostgreSQL log: two regions of two instances each, probing every provider.

    python benchmarks/bench_regions.py [--providers 500] [--interval 5] [--seconds 60]
                                       [--warmup 20] [--url postgresql://...]

Without --url it starts a throwaway PostgreSQL cluster (Debian's binaries, durable settings).
Four real services (`python -m cryptomon serve --region ...`) share the log, two in `bench-a`
and two in `bench-b`; every provider is probed in both regions every `--interval` seconds, so
the rate asked is 2 x providers / interval probes per second. The providers are plain-asyncio
loopback stand-ins (bench_soak's, one more process).

After `--warmup` seconds, for `--seconds` it prints:
- probes per second achieved (from the log: ProbeRecorded events by region) against the
  number asked, and the log's append rate (all events);
- the lag from a probe in one region to the overall status that includes it, on an instance
  of the other region: a live-feed client of a `bench-b` instance receives the `new_log_entry`
  of each `bench-a` probe when that instance has folded it, with the provider's status; the lag
  runs from the probe's end (its start plus its latency) to that frame (p50/p99);
- the CPU use of every process (user + system, in % of one core) beside the figures: the run is
  near saturation on 2 cores, and the split says who is short of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_soak import STANDIN, free_port  # the same loopback providers as the soak
from pgcluster import PostgresCluster, find_binaries

REGIONS = ("bench-a", "bench-b")
INSTANCES_PER_REGION = 2
STANDIN_PORTS = 8  # the probe session allows 10 connections per host:port
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_config(path: Path, url: str, providers: int, interval: float, ports: list[int]) -> None:
    blocks = [
        f'[storage]\nurl = "{url}"\n',
        "[server]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n"
        "websocket_connections_per_address = 100000\n",
    ]
    for n in range(providers):
        blocks.append(
            f'[[providers]]\nname = "p{n:03d}"\ncategory = "market_data"\n'
            f'base_url = "http://127.0.0.1:{ports[n % len(ports)]}"\nhealth_path = "/ping"\n'
            f'interval = "{interval:g}s"\ntimeout = "4s"\n'
        )
    path.write_text("\n".join(blocks))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat (0 once gone: a
    PostgreSQL backend may end during the run)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_pids(cluster_dir: Path) -> list[int]:
    """The cluster's processes: the postmaster and its children (the backends)."""
    postmaster = int((cluster_dir / "data" / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


async def wait_healthy(session: aiohttp.ClientSession, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            async with session.get(f"http://127.0.0.1:{port}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the instance on port {port} did not become healthy")


async def follow_lag(
    session: aiohttp.ClientSession, port: int, region: str, lags: list[float], start: float
) -> None:
    """Record, for each probe of `region` folded by the instance on `port`, the seconds from
    the probe's end to the frame saying so (from `start` on)."""
    async with session.ws_connect(f"ws://127.0.0.1:{port}/ws/live?topics=logs.connection") as ws:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if frame.get("type") == "ping":
                await ws.send_json({"type": "pong"})
                continue
            data = frame.get("data") or {}
            if frame.get("type") != "new_log_entry" or data.get("region") != region:
                continue
            now = time.time()
            if now < start:
                continue
            began = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
            lags.append(now - began - (data.get("response_time_ms") or 0) / 1000)


async def probes_by_region(
    url: str, since: float, until: float
) -> tuple[dict[str | None, int], int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT convert_from(payload, 'UTF8')::jsonb ->> 'region', COUNT(*) FROM events"
            " WHERE type = 'ProbeRecorded' AND recorded_at >= $1 AND recorded_at < $2"
            " GROUP BY 1",
            since,
            until,
        )
        appended = await conn.fetchval(
            "SELECT COUNT(*) FROM events WHERE recorded_at >= $1 AND recorded_at < $2",
            since,
            until,
        )
    finally:
        await conn.close()
    return {row[0]: row[1] for row in rows}, int(appended)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start(
    args: argparse.Namespace, url: str, directory: Path
) -> tuple[subprocess.Popen[str], list[tuple[str, int, subprocess.Popen[bytes]]]]:
    """The stand-in providers, then the instances, each region's two."""
    ports = [free_port() for _ in range(STANDIN_PORTS)]
    standin = subprocess.Popen(
        [sys.executable, "-c", STANDIN, *map(str, ports)], stdout=subprocess.PIPE, text=True
    )
    assert standin.stdout is not None and standin.stdout.readline().strip() == "ready"
    config = directory / "regions.toml"
    write_config(config, url, args.providers, args.interval, ports)
    services = []
    for region in REGIONS:
        for _ in range(INSTANCES_PER_REGION):
            port = free_port()
            command = [
                sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
                "--region", region, "--port", str(port),
            ]  # fmt: skip
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            services.append((region, port, process))
    return standin, services


def stop(
    standin: subprocess.Popen[str], services: list[tuple[str, int, subprocess.Popen[bytes]]]
) -> None:
    for _region, _port, process in services:
        process.terminate()
    for _region, _port, process in services:
        process.wait(timeout=30)
    standin.terminate()
    standin.wait()


async def measure(
    args: argparse.Namespace,
    url: str,
    pids: dict[str, int],
    cluster_dir: Path | None,
    services: list[tuple[str, int, subprocess.Popen[bytes]]],
) -> None:
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 120
        for _region, port, _process in services:
            await wait_healthy(session, port, deadline)
        print(
            f"{len(services)} instances in {len(REGIONS)} regions, {args.providers}"
            f" providers every {args.interval:g} s per region; warming up {args.warmup:g} s"
        )
        lags: list[float] = []
        started = time.time() + args.warmup
        observer = next(port for region, port, _ in services if region == REGIONS[1])
        following = asyncio.create_task(follow_lag(session, observer, REGIONS[0], lags, started))
        await asyncio.sleep(args.warmup)
        # The backends now connected (each instance's pool, leases, listener).
        postgres = postgres_pids(cluster_dir) if cluster_dir is not None else []
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        pg_before = sum(cpu_seconds(pid) for pid in postgres)
        began = time.time()
        await asyncio.sleep(args.seconds)
        ended = time.time()
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        if postgres:
            cpu["postgresql (all backends)"] = sum(cpu_seconds(pid) for pid in postgres) - pg_before
        following.cancel()
    by_region, appended = await probes_by_region(url, began, ended)
    seconds = ended - began
    asked = args.providers / args.interval
    print(f"over {seconds:.0f} s:")
    for region in REGIONS:
        got = by_region.get(region, 0) / seconds
        print(f"  probes/s in {region}: {got:,.1f} of {asked:,.1f} asked ({got / asked:.2f})")
    total = sum(by_region.get(region, 0) for region in REGIONS) / seconds
    print(
        f"  probes/s in all: {total:,.1f} of {asked * len(REGIONS):,.1f} asked"
        f" ({total / asked / len(REGIONS):.2f})"
    )
    print(f"  append rate: {appended / seconds:,.1f} events/s")
    if lags:
        print(
            f"  lag from a {REGIONS[0]} probe's end to the status on a {REGIONS[1]} instance:"
            f" p50 {statistics.median(lags) * 1000:,.0f} ms, p99"
            f" {percentile(lags, 0.99) * 1000:,.0f} ms ({len(lags):,} probes)"
        )
    print("CPU, % of one core, per process:")
    for name, used in cpu.items():
        print(f"  {name}: {used / seconds * 100:.0f}%")
    print(
        f"  all: {sum(cpu.values()) / seconds * 100:.0f}% (the machine has {os.cpu_count()} cores)"
    )


def run(args: argparse.Namespace, url: str, cluster_dir: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        standin, services = start(args, url, Path(tmp))
        try:
            pids = {f"{region}:{port}": p.pid for region, port, p in services}
            pids["stand-in providers"] = standin.pid
            pids["this process (feed client)"] = os.getpid()
            asyncio.run(measure(args, url, pids, cluster_dir, services))
        finally:
            stop(standin, services)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--providers", type=int, default=500)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--url", default=None, help="a PostgreSQL database to use (emptied)")
    args = parser.parse_args()
    if args.url is not None:
        run(args, args.url, None)
        return
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL binaries found (apt install postgresql)")
    cluster = PostgresCluster(binaries, durable=True)
    try:
        cluster.start()
        run(args, cluster.url(), cluster.directory)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
