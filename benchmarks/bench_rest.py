"""REST throughput of the read-model answers while the service probes, against a bare
aiohttp handler serving the same bytes, in one run.

    python benchmarks/bench_rest.py [--seconds 15] [--rounds 3] [--providers 100]
                                    [--interval 5] [--limit 100000]

The conditions the figures hold for, printed with them:
- the service (`python -m cryptomon serve`, its own process) probes `--providers`
  providers every `--interval` seconds: loopback stand-ins, an aiohttp server in a third
  process that answers like a real API (JSON, `X-RateLimit-*` headers, a few tens of ms);
  one provider in twenty always fails with a 500 and one in twenty flips between 200 and
  500 every minute, so statuses change and alerts are raised and resolved meanwhile;
- the per-client limiter (`[server] requests_per_second` and `request_burst`) is on, set
  at `--limit` for wrk's one address: above the offered load, so it counts every request
  and refuses none (checked: a run with any answer not 2xx fails the benchmark);
- the bare server (a fourth process) answers each endpoint with the bytes the service
  gave for it, fetched once the read models have every provider's first probe.

wrk (Debian package `wrk`) runs with 2 threads and 50 connections. Each round measures
every endpoint on the service and on the bare server, one after the other, the order
swapped every round (the machine is shared and noisy: only ratios measured minutes
apart mean anything). Prints each round's req/s, each server's CPU per request (from
/proc; the service's includes its probing) and the ratio, then per endpoint the median
ratio over the rounds (goal: at least 0.8 for the cached read-model answers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# The cached read-model answers the goal is about, then one more cached view for context.
GOAL_ENDPOINTS = ("/api/status", "/api/providers")
ENDPOINTS = (*GOAL_ENDPOINTS, "/api/alerts")
GOAL = 0.8
WRK = ("-t2", "-c50")
STANDIN_PORTS = 4  # the probe session allows 10 connections per host:port

# A provider's API as the probes meet it: /ping/<ms> answers 200 with a small JSON body and
# the rate-limit headers real APIs send, after <ms> milliseconds (a network's latency);
# /fail answers 500; /flap 500 in odd minutes and 200 in even ones.
STANDIN = r"""
import asyncio, sys, time
from aiohttp import web

LIMIT = 600

async def ping(request):
    await asyncio.sleep(int(request.match_info["ms"]) / 1000)  # the API's latency
    remaining = LIMIT - int(time.time()) % LIMIT
    headers = {
        "X-RateLimit-Limit": str(LIMIT),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(60 - int(time.time()) % 60),
    }
    return web.json_response({"status": "ok", "time": time.time()}, headers=headers)

async def fail(request):
    return web.json_response({"error": "internal"}, status=500)

async def flap(request):
    if int(time.time() // 60) % 2:
        return await fail(request)
    return web.json_response({"status": "ok"})

async def main():
    app = web.Application()
    app.router.add_get("/ping/{ms}", ping)
    app.router.add_get("/fail", fail)
    app.router.add_get("/flap", flap)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in sys.argv[1:]:
        await web.TCPSite(runner, "127.0.0.1", int(port)).start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

# The baseline: per endpoint, a handler returning the bytes the service answered with.
BARE = r"""
import json, sys
from aiohttp import web

app = web.Application()
for path, body in json.loads(sys.stdin.read()).items():
    async def handler(request, body=body.encode()):
        return web.Response(body=body, content_type="application/json")
    app.router.add_get(path, handler)
ready = lambda *_: print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=ready, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_config(path: Path, providers: int, interval: float, limit: int, ports: list[int]) -> None:
    blocks = [f"[server]\nrequests_per_second = {limit}\nrequest_burst = {limit}\n"]
    for n in range(providers):
        health = "/fail" if n % 20 == 19 else "/flap" if n % 20 == 9 else f"/ping/{20 + n % 5 * 20}"
        blocks.append(
            f'[[providers]]\nname = "p{n:03d}"\ncategory = "market_data"\n'
            f'base_url = "http://127.0.0.1:{ports[n % len(ports)]}"\nhealth_path = "{health}"\n'
            f'interval = "{interval:g}s"\ntimeout = "4s"\ndegraded_latency = "1s"\n'
            f'rate_limit = {{ requests = 600, per = "1m", source = "unverified" }}\n'
        )
    path.write_text("\n".join(blocks))


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
    return body


def wait_until_probed(base: str, providers: int, seconds: float) -> None:
    """Until the service answers and none of its providers is still unknown."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status = json.loads(get(base + "/api/status"))
            if status["total_apis"] == providers and status["unknown"] == 0:
                return
        except OSError:
            pass  # still starting
        time.sleep(0.5)  # poll, with a deadline
    raise SystemExit(f"the service's {providers} providers were not all probed in {seconds:.0f} s")


def ready(process: subprocess.Popen[str], what: str) -> None:
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {what} did not start")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: float, pid: int) -> tuple[float, float]:
    """Requests/s from one wrk run, and the server's CPU microseconds per request (its
    background work included); any answer not 2xx (a 429 from the limiter) fails it."""
    before = cpu_seconds(pid)
    result = subprocess.run(
        ["wrk", *WRK, f"-d{seconds:g}s", url], capture_output=True, text=True, check=True
    )
    used = cpu_seconds(pid) - before
    refused = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result.stdout)
    if refused is not None:
        raise SystemExit(f"{url}: {refused.group(1)} answers were not 2xx\n{result.stdout}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    requests = re.search(r"(\d+) requests in", result.stdout)
    assert rate is not None and requests is not None, result.stdout
    return float(rate.group(1)), used * 1e6 / int(requests.group(1))


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--providers", type=int, default=100)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between probes")
    parser.add_argument("--limit", type=int, default=100_000, help="requests/s and burst")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    processes: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ports = [free_port() for _ in range(STANDIN_PORTS)]
            standin = subprocess.Popen(
                [sys.executable, "-c", STANDIN, *map(str, ports)], stdout=subprocess.PIPE, text=True
            )
            processes.append(standin)
            ready(standin, "stand-in server")
            config = Path(tmp) / "rest.toml"
            write_config(config, args.providers, args.interval, args.limit, ports)
            port = free_port()
            service = subprocess.Popen(
                [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
                 "--db", str(Path(tmp) / "rest.db"), "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            processes.append(service)
            base = f"http://127.0.0.1:{port}"
            wait_until_probed(base, args.providers, 120)
            bodies = {path: get(base + path).decode() for path in ENDPOINTS}
            bare_port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE, str(bare_port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            processes.append(bare)
            assert bare.stdin is not None
            bare.stdin.write(json.dumps(bodies))
            bare.stdin.close()
            ready(bare, "bare server")
            print(
                f"service pid {service.pid}: {args.providers} providers probed every"
                f" {args.interval:g} s against loopback stand-ins (aiohttp, own process,"
                f" {STANDIN_PORTS} ports); per-client limiter at {args.limit:,} req/s, burst"
                f" {args.limit:,} (above the offered load: no answer may be a 429)"
            )
            print(
                f"wrk {' '.join(WRK)} -d{args.seconds:g}s, {args.rounds} rounds, order swapped"
                f" each round; load average at start {load()}"
            )
            pids = {"service": service.pid, "bare": bare.pid}
            ratios: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
            cpu: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
            for round_ in range(args.rounds):
                for path in ENDPOINTS:
                    urls = {"service": base + path, "bare": f"http://127.0.0.1:{bare_port}{path}"}
                    order = ("service", "bare") if round_ % 2 == 0 else ("bare", "service")
                    runs = {who: wrk(urls[who], args.seconds, pids[who]) for who in order}
                    (ours, our_cpu), (theirs, their_cpu) = runs["service"], runs["bare"]
                    ratios[path].append(ours / theirs)
                    cpu[path].append(our_cpu / their_cpu)
                    print(
                        f"round {round_ + 1} {path:<15} {len(bodies[path]):>7,} B"
                        f"  service {ours:>7,.0f} req/s {our_cpu:4.0f} us CPU/req"
                        f"  bare {theirs:>7,.0f} req/s {their_cpu:4.0f} us CPU/req"
                        f"  ratio {ours / theirs:.2f}  (load {load()})"
                    )
            print("median over the rounds: req/s ratio to bare (CPU per request, service/bare)")
            for path in ENDPOINTS:
                print(
                    f"  {path:<15} {statistics.median(ratios[path]):.2f}"
                    f"  ({statistics.median(cpu[path]):.2f}x)"
                )
            lowest = min(statistics.median(ratios[path]) for path in GOAL_ENDPOINTS)
            verdict = "met" if lowest >= GOAL else "NOT met"
            print(f"goal: {', '.join(GOAL_ENDPOINTS)} >= {GOAL} of bare: {verdict}")
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
