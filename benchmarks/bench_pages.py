"""Lighthouse on the pages a new user of the demo sees: `/`, a provider's page and `/status`.

    python benchmarks/bench_pages.py [--runs 3] [--no-desktop] [--provider Healthy]

Each round starts the demo afresh, as a new user would (`python -m cryptomon --demo` on
127.0.0.1, a free port and a new database), waits until every simulated provider has
been probed once, then runs Lighthouse on the three pages: with its defaults (a phone:
Moto G Power emulation, 4x CPU slowdown, a slow 4G link simulated), and with its desktop
preset unless `--no-desktop`. It prints each run, then the median of the rounds for each
page: the performance, accessibility and best-practices scores, cumulative layout shift
(CLS), largest contentful paint (LCP) and total blocking time (TBT), and whether each goal
is met (performance >= 0.95, CLS < 0.1, accessibility 1.0).

Lighthouse's performance figures are simulated from a trace of the page on this
machine, so other load on the machine moves them: the load average is printed at the
start and the end, and the median is what counts.

Lighthouse is the npm package (LIGHTHOUSE, the last line that runs on Debian's Node 20),
installed with npm on first use into ~/.cache/cryptomon/ (or $XDG_CACHE_HOME), outside the
repository; the browser is Debian's chromium (CHROME_PATH=/usr/bin/chromium, headless).
Nothing else is fetched: the pages and the demo are all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

LIGHTHOUSE = "12.8.2"
CHROMIUM = Path("/usr/bin/chromium")
CHROME_FLAGS = "--headless=new --no-sandbox"
CATEGORIES = ("performance", "accessibility", "best-practices")
GOAL_PERFORMANCE = 0.95
GOAL_CLS = 0.1
GOAL_ACCESSIBILITY = 1.0


@dataclass(frozen=True, slots=True)
class Run:
    performance: float
    accessibility: float
    best_practices: float
    cls: float
    lcp_ms: float
    tbt_ms: float

    def line(self) -> str:
        return (
            f"performance {self.performance:.2f}, accessibility {self.accessibility:.2f},"
            f" best practices {self.best_practices:.2f}; CLS {self.cls:.3f},"
            f" LCP {self.lcp_ms:,.0f} ms, TBT {self.tbt_ms:,.0f} ms"
        )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cryptomon" / f"lighthouse-{LIGHTHOUSE}"


def lighthouse_binary() -> Path:
    """The Lighthouse CLI, installed with npm into the cache the first time."""
    prefix = cache_dir()
    binary = prefix / "node_modules" / ".bin" / "lighthouse"
    if binary.exists():
        return binary
    if shutil.which("npm") is None or shutil.which("node") is None:
        sys.exit("Lighthouse needs Node.js and npm: apt-get install nodejs npm")
    print(f"installing lighthouse {LIGHTHOUSE} into {prefix} (once)", flush=True)
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"lighthouse@{LIGHTHOUSE}",
        ],
        check=True,
    )
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Demo:
    """`python -m cryptomon --demo` in a subprocess, on a port and database of its own."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cryptomon",
                "--demo",
                "--db",
                str(directory / "demo.db"),
                "--port",
                str(self.port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        listening = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:  # read to the end, so the demo never blocks
                self.lines.append(line)
                if line.strip().startswith("monitoring "):
                    listening.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not listening.wait(30):
            self.stop()
            raise SystemExit("the demo never listened:\n" + "".join(self.lines))

    def wait_for_probes(self, deadline_s: float = 60.0) -> None:
        """Until every provider has been probed once: the pages then have data to show."""
        deadline = time.monotonic() + deadline_s
        while True:
            request = urllib.request.Request(
                self.url + "/api/providers", headers={"Accept": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                providers = json.loads(response.read())["providers"]
            if providers and all(p["last_check"] for p in providers):
                return
            if time.monotonic() > deadline:
                raise SystemExit("the demo's providers were not all probed in time")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=10)


def lighthouse(binary: Path, url: str, desktop: bool) -> Run:
    command = [
        str(binary),
        url,
        "--output=json",
        "--output-path=stdout",
        "--quiet",
        f"--only-categories={','.join(CATEGORIES)}",
        f"--chrome-flags={CHROME_FLAGS}",
    ]
    if desktop:
        command.append("--preset=desktop")
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CHROME_PATH": str(CHROMIUM)},
    )
    if done.returncode != 0:
        raise SystemExit(f"lighthouse failed on {url}:\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    if report.get("runtimeError"):
        raise SystemExit(f"lighthouse could not measure {url}: {report['runtimeError']}")
    scores = {name: report["categories"][name]["score"] for name in CATEGORIES}
    audits = report["audits"]
    return Run(
        performance=scores["performance"],
        accessibility=scores["accessibility"],
        best_practices=scores["best-practices"],
        cls=audits["cumulative-layout-shift"]["numericValue"],
        lcp_ms=audits["largest-contentful-paint"]["numericValue"],
        tbt_ms=audits["total-blocking-time"]["numericValue"],
    )


def median(runs: list[Run]) -> Run:
    """Each figure's own median over the rounds."""

    def of(field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs)

    return Run(*(of(field.name) for field in fields(Run)))


def goals(run: Run) -> str:
    missed = []
    if run.performance < GOAL_PERFORMANCE:
        missed.append(f"performance {run.performance:.2f} < {GOAL_PERFORMANCE}")
    if run.cls >= GOAL_CLS:
        missed.append(f"CLS {run.cls:.3f} >= {GOAL_CLS}")
    if run.accessibility < GOAL_ACCESSIBILITY:
        missed.append(f"accessibility {run.accessibility:.2f} < {GOAL_ACCESSIBILITY}")
    return "goals met" if not missed else "NOT met: " + ", ".join(missed)


def chromium_version() -> str:
    done = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True)
    return done.stdout.strip() or "chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds, each on a fresh demo")
    parser.add_argument("--provider", default="Healthy", help="whose page to measure")
    parser.add_argument(
        "--no-desktop", action="store_true", help="only Lighthouse's default (a phone)"
    )
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"no chromium at {CHROMIUM}: apt-get install chromium")
    binary = lighthouse_binary()

    pages = ["/", f"/providers/{args.provider}", "/status"]
    factors = ["mobile"] if args.no_desktop else ["mobile", "desktop"]
    results: dict[tuple[str, str], list[Run]] = {(f, p): [] for f in factors for p in pages}
    print(
        f"lighthouse {LIGHTHOUSE}, {chromium_version()}, {args.runs} rounds on a fresh demo"
        f" each; load average {os.getloadavg()[0]:.2f} at the start",
        flush=True,
    )
    for round_ in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="bench-pages-") as directory:
            demo = Demo(Path(directory))
            try:
                demo.wait_for_probes()
                for factor in factors:
                    for page in pages:
                        run = lighthouse(binary, demo.url + page, factor == "desktop")
                        results[factor, page].append(run)
                        print(f"round {round_} {factor:7} {page:22} {run.line()}", flush=True)
            finally:
                demo.stop()

    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    for factor in factors:
        title = "Lighthouse's default, a phone" if factor == "mobile" else "desktop preset"
        print(f"{factor} ({title}), the median of {args.runs} rounds:")
        for page in pages:
            run = median(results[factor, page])
            print(f"  {page:22} {run.line()}; {goals(run)}")
    print(
        f"goals: performance >= {GOAL_PERFORMANCE}, CLS < {GOAL_CLS},"
        f" accessibility {GOAL_ACCESSIBILITY:.1f}"
    )


if __name__ == "__main__":
    main()
