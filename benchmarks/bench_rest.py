"""REST throughput with 100 providers and 1,000,000 events behind the service,
against a bare aiohttp handler returning bytes of the same size, in one run.

    python benchmarks/bench_rest.py [--events 1000000] [--seconds 10] [--keep PATH]

Needs wrk (Debian package `wrk`). The service and the bare server each run in
their own process; wrk runs with 2 threads and 50 connections. Prints req/s
and p99 latency for each endpoint, and the ratio to the bare handler
(goal: at least 0.6 on each).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ENDPOINTS = ("/api/providers", "/api/status", "/api/alerts")
PROVIDERS = 100

BARE = """
import sys
from aiohttp import web

sizes = [int(s) for s in sys.argv[2:]]
app = web.Application()
for size in sizes:
    body = b"x" * size
    async def handler(request, body=body):
        return web.Response(body=body, content_type="application/json")
    app.router.add_get(f"/bare/{size}", handler)
ready = lambda *_: print("ready", flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=ready)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def build_log(path: Path, events: int) -> None:
    """The projections benchmark's log: 100 providers, realistic mixed outcomes."""
    script = Path(__file__).with_name("bench_projections.py")
    subprocess.run(
        [sys.executable, str(script), "--build", str(path), "--events", str(events)], check=True
    )


def write_config(path: Path) -> None:
    closed = free_port()
    blocks = [
        f'[[providers]]\nname = "provider-{n:03d}"\ncategory = "market_data"\n'
        f'base_url = "http://127.0.0.1:{closed}"\nhealth_path = "/ping"\ninterval = "1h"\n'
        for n in range(PROVIDERS)
    ]
    # wrk's connections all come from 127.0.0.1: lift the per-address request limit.
    limits = "[server]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n"
    path.write_text(limits + "\n".join(blocks))


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.2)  # the server is still starting: poll with a deadline
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def body_size(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return len(response.read())


def wrk(url: str, seconds: float) -> tuple[float, float]:
    """(requests/s, p99 latency in ms) from one wrk run."""
    result = subprocess.run(
        ["wrk", "-t2", "-c50", f"-d{seconds:g}s", "--latency", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", result.stdout).groups()  # type: ignore[union-attr]
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rate, float(value) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, default=None, help="reuse or keep the log here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        database = args.keep or Path(tmp) / "rest.db"
        if not database.exists():
            build_log(database, args.events)
        config = Path(tmp) / "rest.toml"
        write_config(config)
        port = free_port()
        service = subprocess.Popen(
            [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
             "--db", str(database), "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        bare: subprocess.Popen[str] | None = None
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(base + "/api/status", 120)
            sizes = {path: body_size(base + path) for path in ENDPOINTS}
            bare_port = free_port()
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE, str(bare_port), *map(str, sizes.values())],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert bare.stdout is not None
            bare.stdout.readline()
            print(
                f"{args.events:,} events, {PROVIDERS} providers; wrk -t2 -c50 -d{args.seconds:g}s"
            )
            ratios = []
            for path, size in sizes.items():
                ours, our_p99 = wrk(base + path, args.seconds)
                theirs, their_p99 = wrk(f"http://127.0.0.1:{bare_port}/bare/{size}", args.seconds)
                ratio = ours / theirs
                ratios.append(ratio)
                print(
                    f"{path:<16} {size:>7,} B  {ours:>8,.0f} req/s p99 {our_p99:6.1f} ms"
                    f"   bare {theirs:>8,.0f} req/s p99 {their_p99:6.1f} ms   ratio {ratio:.2f}"
                )
            verdict = "met" if min(ratios) >= 0.6 else "NOT met"
            print(f"goal: every ratio >= 0.6: {verdict} (lowest {min(ratios):.2f})")
        finally:
            for process in (service, bare):
                if process is not None:
                    process.terminate()
                    process.wait()


if __name__ == "__main__":
    main()
