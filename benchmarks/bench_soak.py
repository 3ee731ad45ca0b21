"""Soak: the real service for a long stretch under steady load; does anything creep?

    python benchmarks/bench_soak.py [--minutes 30] [--providers 200] [--interval 5]
                                    [--clients 100] [--rest-rate 10] [--warmup SECONDS]

The service (`python -m cryptomon serve`) runs in its own process, probing `--providers`
loopback stand-ins (a third process, plain asyncio) every `--interval` seconds: most answer
200, one in twenty always answers 500 and one in twenty flips between 200 and 500 every
minute, so statuses change and alerts are raised and resolved all along. This process keeps
`--clients` WebSocket clients on /ws/live (all topics, answering the feed's pings) and sends
`--rest-rate` REST requests a second over the read endpoints.

Every 10 s it samples the service: RSS and open file descriptors from /proc/<pid>, event-loop
lag from /metrics (`cryptomon_event_loop_lag_max_seconds`: the worst timer wake-up delay of the
last 60 s), and the database's size on disk (file + WAL). Every minute it prints a line.

The verdict leaves out the first `--warmup` seconds (by default a third of the run, at least
60 s: the service's bounded buffers, such as the store's ring of recent events and the live
feed's replay ring, take minutes to fill at this rate) and compares the last third of the
remaining samples with their first third, per metric:
- RSS: flat when the last third's mean is within 5 % (or 4 MiB) of the first third's;
- file descriptors: flat when the last third's highest is at most 5 above the first third's;
- loop lag: flat when the last third's median is within 2x + 20 ms of the first third's;
- database: an append-only log must grow, so "flat" means it grows by a steady number of bytes
  per event (last third within 30 % of the first) while the WAL stays bounded (its last-third
  high within 1.5x + 4 MiB of the first third's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

# Loopback providers without an HTTP framework, so their CPU stays small next to the service's.
# /ping answers 200, /fail 500, /flap 500 in odd minutes and 200 in even ones.
STANDIN = r"""
import asyncio, sys, time

def response(status, reason, body):
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % (status, reason, len(body)) + body
    )

OK = response(200, b"OK", b'{"gecko_says":"(V3) To the Moon!"}')
FAIL = response(500, b"Internal Server Error", b'{"error":"internal"}')

class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path.startswith(b"/fail"):
                self.transport.write(FAIL)
            elif path.startswith(b"/flap"):
                self.transport.write(FAIL if int(time.time() // 60) % 2 else OK)
            else:
                self.transport.write(OK)

async def main():
    loop = asyncio.get_running_loop()
    for port in sys.argv[1:]:
        await loop.create_server(Answer, "127.0.0.1", int(port), backlog=1024)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

STANDIN_PORTS = 4  # the probe session allows 10 connections per host:port
SAMPLE_EVERY = 10.0
REST_PATHS = (
    "/api/providers",
    "/api/status",
    "/api/alerts",
    "/api/rate-limits",
    "/api/logs/connection?limit=50",
    "/api/providers/p007/stats",
    "/api/events?limit=100",
    "/api/status/metrics",
    "/api/scheduler/status",
    "/health",
)
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_config(path: Path, providers: int, interval: float, ports: list[int]) -> None:
    # Every client here comes from 127.0.0.1: lift the per-address limits.
    blocks = [
        "[server]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n"
        "websocket_connections_per_address = 100000\n"
    ]
    for n in range(providers):
        path_ = "/fail" if n % 20 == 19 else "/flap" if n % 20 == 9 else "/ping"
        blocks.append(
            f'[[providers]]\nname = "p{n:03d}"\ncategory = "market_data"\n'
            f'base_url = "http://127.0.0.1:{ports[n % len(ports)]}"\nhealth_path = "{path_}"\n'
            f'interval = "{interval:g}s"\ntimeout = "4s"\ndegraded_latency = "1s"\n'
        )
    path.write_text("\n".join(blocks))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(slots=True)
class Sample:
    at: float  # seconds since the load began
    rss: int
    fds: int
    lag_max: float  # seconds, worst of the service's last 60 s
    db: int  # file + WAL, bytes
    wal: int
    position: int  # the event log's head


@dataclass(slots=True)
class Load:
    ws_messages: int = 0
    ws_bytes: int = 0
    ws_connects: int = 0
    ws_closed_by_server: int = 0
    rest: Counter[int] | None = None
    rest_errors: int = 0
    rest_latency_ms: list[float] | None = None


async def ws_client(session: aiohttp.ClientSession, url: str, load: Load) -> None:
    """One live-feed client for the whole run; reconnects (and counts it) if dropped."""
    while True:
        try:
            async with session.ws_connect(url, autoping=True, heartbeat=None) as ws:
                load.ws_connects += 1
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    load.ws_messages += 1
                    load.ws_bytes += len(message.data)
                    # The feed pings silent clients and drops them after two; answer it.
                    if message.data.startswith('{"type":"ping"'):
                        await ws.send_str('{"type":"pong"}')
            load.ws_closed_by_server += 1
        except (aiohttp.ClientError, OSError):
            load.ws_closed_by_server += 1
        await asyncio.sleep(1.0)  # back off before reconnecting


async def rest_traffic(session: aiohttp.ClientSession, base: str, rate: float, load: Load) -> None:
    """`rate` GETs a second, cycling through the read endpoints, on a fixed schedule."""
    assert load.rest is not None and load.rest_latency_ms is not None
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def one(path: str) -> None:
        assert load.rest is not None and load.rest_latency_ms is not None
        began = time.perf_counter()
        try:
            async with session.get(base + path) as response:
                await response.read()
                load.rest[response.status] += 1
            load.rest_latency_ms.append((time.perf_counter() - began) * 1000)
        except (aiohttp.ClientError, OSError, TimeoutError):
            load.rest_errors += 1

    while True:
        task = asyncio.create_task(one(REST_PATHS[sent % len(REST_PATHS)]))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))


LAG_LINE = re.compile(rb"^cryptomon_event_loop_lag_max_seconds ([0-9.eE+-]+)$", re.M)
HEAD_LINE = re.compile(rb"^cryptomon_event_log_position (\d+)$", re.M)


async def sample(
    session: aiohttp.ClientSession, base: str, pid: int, db: Path, at: float
) -> Sample:
    async with session.get(base + "/metrics") as response:
        text = await response.read()
    lag = LAG_LINE.search(text)
    head = HEAD_LINE.search(text)
    if lag is None or head is None:
        raise SystemExit("/metrics has no cryptomon_event_loop_lag_max_seconds or log position")
    wal = file_size(db.with_name(db.name + "-wal"))
    return Sample(
        at=at,
        rss=rss_bytes(pid),
        fds=open_fds(pid),
        lag_max=float(lag.group(1)),
        db=file_size(db) + wal,
        wal=wal,
        position=int(head.group(1)),
    )


def thirds(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    third = max(1, len(samples) // 3)
    return samples[:third], samples[-third:]


def slope(part: list[Sample], name: str) -> float:
    """Least-squares growth of one measure over `part`, per hour."""
    if len(part) < 2:
        return 0.0
    xs = [s.at / 3600 for s in part]
    return statistics.linear_regression(xs, [float(getattr(s, name)) for s in part]).slope


def verdicts(samples: list[Sample]) -> list[tuple[str, bool, str]]:
    first, last = thirds(samples)
    out: list[tuple[str, bool, str]] = []

    rss_a = statistics.fmean(s.rss for s in first)
    rss_b = statistics.fmean(s.rss for s in last)
    span_h = max(1e-9, (last[-1].at - first[0].at) / 3600)
    out.append((
        "RSS",
        rss_b - rss_a <= max(0.05 * rss_a, 4 * MIB),
        f"{rss_a / MIB:.1f} -> {rss_b / MIB:.1f} MiB (mean of first and last third; "
        f"{(last[-1].rss - first[0].rss) / MIB / span_h:+.1f} MiB/h end to end, "
        f"{slope(last, 'rss') / MIB:+.1f} MiB/h over the last third)",
    ))  # fmt: skip

    fd_a = max(s.fds for s in first)
    fd_b = max(s.fds for s in last)
    out.append(("open fds", fd_b - fd_a <= 5, f"{fd_a} -> {fd_b} (highest of each third)"))

    lag_a = statistics.median(s.lag_max for s in first)
    lag_b = statistics.median(s.lag_max for s in last)
    out.append((
        "loop lag",
        lag_b <= 2 * lag_a + 0.020,
        f"{lag_a * 1000:.1f} -> {lag_b * 1000:.1f} ms (median of the 60 s worst, per third)",
    ))  # fmt: skip

    def per_event(part: list[Sample]) -> float | None:
        events = part[-1].position - part[0].position
        return (part[-1].db - part[0].db) / events if events > 0 else None

    rate_a, rate_b = per_event(first), per_event(last)
    wal_a = max(s.wal for s in first)
    wal_b = max(s.wal for s in last)
    wal_ok = wal_b <= 1.5 * wal_a + 4 * MIB
    if rate_a is None or rate_b is None or len(first) < 2:
        steady = True
        rates = "too few samples to compare growth"
    else:
        steady = rate_b <= 1.3 * max(rate_a, 1.0)
        rates = f"{rate_a:.0f} -> {rate_b:.0f} B/event"
    out.append((
        "database",
        steady and wal_ok,
        f"{samples[0].db / MIB:.1f} -> {samples[-1].db / MIB:.1f} MiB for "
        f"{samples[-1].position - samples[0].position:,} events; {rates}; "
        f"WAL high {wal_a / MIB:.1f} -> {wal_b / MIB:.1f} MiB",
    ))  # fmt: skip
    return out


def start_service(tmp: Path, config: Path, db: Path) -> tuple[subprocess.Popen[Any], int, Path]:
    port = free_port()
    output = tmp / "service.log"
    env = {k: v for k, v in os.environ.items() if k != "CRYPTOMON_API_TOKEN"}
    with output.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
             "--db", str(db), "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while "listening" not in output.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start:\n{output.read_text()[-2000:]}")
        time.sleep(0.1)  # the service is still starting: poll with a deadline
    return proc, port, output


async def soak(args: argparse.Namespace, pid: int, port: int, db: Path) -> None:
    base = f"http://127.0.0.1:{port}"
    load = Load(rest=Counter(), rest_latency_ms=[])
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        workers = [
            asyncio.create_task(ws_client(session, base.replace("http", "ws") + "/ws/live", load))
            for _ in range(args.clients)
        ]
        workers.append(asyncio.create_task(rest_traffic(session, base, args.rest_rate, load)))
        loop = asyncio.get_running_loop()
        began = loop.time()
        end = began + args.minutes * 60
        samples: list[Sample] = []
        print(
            f"soak: {args.providers} providers every {args.interval:g}s, {args.clients} "
            f"WebSocket clients, {args.rest_rate:g} REST req/s, {args.minutes:g} min "
            f"(service pid {pid})"
        )
        print(
            " min   RSS MiB   fds  lag60 ms   db MiB  wal MiB    events  ws clients  ws msg/s"
            "  REST req/s  REST p99 ms"
        )
        minute_start = (0.0, 0, 0)
        tick = 0
        while loop.time() < end:
            tick += 1
            await asyncio.sleep(max(0.0, began + tick * SAMPLE_EVERY - loop.time()))
            taken = await sample(session, base, pid, db, loop.time() - began)
            samples.append(taken)
            if tick % round(60 / SAMPLE_EVERY) == 0:
                assert load.rest is not None and load.rest_latency_ms is not None
                at0, messages0, rest0 = minute_start
                seconds = taken.at - at0
                rest_total = sum(load.rest.values())
                latencies = sorted(load.rest_latency_ms)
                p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
                load.rest_latency_ms.clear()
                live = load.ws_connects - load.ws_closed_by_server
                print(
                    f"{taken.at / 60:4.0f}  {taken.rss / MIB:8.1f}  {taken.fds:4d}  "
                    f"{taken.lag_max * 1000:8.1f}  {taken.db / MIB:7.1f}  {taken.wal / MIB:7.1f}"
                    f"  {taken.position:8,}  {live:10d}  "
                    f"{(load.ws_messages - messages0) / seconds:8,.0f}  "
                    f"{(rest_total - rest0) / seconds:10.1f}  {p99:11.1f}",
                    flush=True,
                )
                minute_start = (taken.at, load.ws_messages, rest_total)
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    assert load.rest is not None
    statuses = ", ".join(f"{status}: {count:,}" for status, count in sorted(load.rest.items()))
    print(f"REST answers by status: {statuses}; transport errors {load.rest_errors}")
    print(
        f"WebSocket: {load.ws_messages:,} messages ({load.ws_bytes / MIB:,.1f} MiB), "
        f"{load.ws_connects} connects, {load.ws_closed_by_server} closed by the server"
    )
    kept = [s for s in samples if s.at > args.warmup]
    if len(kept) < 3:
        print(f"verdict: too few samples after the {args.warmup:g} s warm-up to judge")
        return
    print(
        f"verdict (after {args.warmup:g} s warm-up, {len(kept)} samples every {SAMPLE_EVERY:g} s; "
        "last third against first third):"
    )
    for name, flat, detail in verdicts(kept):
        print(f"  {name:<9} {'flat' if flat else 'NOT flat':<8} {detail}")


def stop(proc: subprocess.Popen[Any]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--providers", type=int, default=200)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rest-rate", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=None, help="seconds; default: see above")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = max(60.0, args.minutes * 60 / 3)
    # Stopped by a signal (say, `timeout`), still stop the service and the stand-ins.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ports = [free_port() for _ in range(STANDIN_PORTS)]
        standin = subprocess.Popen(
            [sys.executable, "-c", STANDIN, *map(str, ports)], stdout=subprocess.PIPE, text=True
        )
        service: subprocess.Popen[Any] | None = None
        try:
            assert standin.stdout is not None
            standin.stdout.readline()
            config = tmp / "soak.toml"
            write_config(config, args.providers, args.interval, ports)
            db = tmp / "soak.db"
            service, port, _ = start_service(tmp, config, db)
            asyncio.run(soak(args, service.pid, port, db))
        finally:
            if service is not None:
                began = time.monotonic()
                code = stop(service)
                print(f"service stopped with exit code {code} in {time.monotonic() - began:.1f} s")
            stop(standin)


if __name__ == "__main__":
    main()
