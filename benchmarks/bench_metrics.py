"""`/metrics` for 100 providers: the hand-written exposition against the official
`prometheus_client`'s, over the same families, in one run.

    python benchmarks/bench_metrics.py [--events 200000] [--repeat 200]

Needs `prometheus_client` (`pip install prometheus-client`), the candidate measured; the
service does not depend on it. Builds the projections benchmark's log (100 providers
probed every 30 s with mixed outcomes, 20 of them chain nodes and 8 quote sources) and
starts the real app on it, in this process, listening on 127.0.0.1. The candidate is a
prometheus_client collector yielding the very families `/metrics` gathers
(`prometheus.families`, read at each scrape), written by the library's encoders. Both
are routed without the answer cache, so every request renders. Alternating the two so
that other load on the machine falls on both alike, it times:
- the handler alone, on the event loop (what a scrape holds the loop for): median wall
  time and CPU per render; the candidate in the text format and in OpenMetrics;
- a whole scrape over loopback HTTP (aiohttp client, one connection), median wall time;
and prints each against the hand-written one as a ratio (above 1 is slower), with the
answer's size and sample count.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from cryptomon.config import load_config
from cryptomon.http import prometheus
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

try:
    from prometheus_client import exposition, openmetrics
    from prometheus_client.metrics_core import Metric
except ImportError:
    raise SystemExit("the candidate is prometheus_client: pip install prometheus-client") from None

sys.path.insert(0, str(Path(__file__).parent))
from bench_projections import PROVIDERS, build_log, role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SameFamilies:
    """A prometheus_client collector of `/metrics`' own families, gathered at each scrape."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        for family in prometheus.families(self.app):
            counter = family.kind == "counter"
            # The library names a counter's family without `_total`, its samples with it.
            name = family.name.removesuffix("_total") if counter else family.name
            metric = Metric(name, family.help, family.kind)
            for sample, labels, value in family.samples:
                metric.add_sample(sample, dict(labels), value)
            yield metric


def candidate(app: web.Application, openmetrics_format: bool) -> Handler:
    collector = SameFamilies(app)
    if openmetrics_format:
        generate, content_type = (
            openmetrics.exposition.generate_latest,
            openmetrics.exposition.CONTENT_TYPE_LATEST,
        )
    else:
        generate, content_type = exposition.generate_latest, exposition.CONTENT_TYPE_PLAIN_0_0_4

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=generate(collector), headers={"Content-Type": content_type})

    return handler


def write_config(path: Path) -> None:
    """The log's 100 providers, with the chains and pairs they were registered with."""
    blocks = []
    for p in range(PROVIDERS):
        chain, pair = role(p)
        blocks.append(
            f'[[providers]]\nname = "provider-{p:03d}"\ncategory = "market_data"\n'
            'base_url = "https://api.example.com"\nhealth_path = "/ping"\ninterval = "30s"\n'
            'rate_limit = { requests = 100, per = "60s" }\n'
            + (f'chain = "{chain}"\nobserve = {{ head = "[BODY].result" }}\n' if chain else "")
            + (f'quote = "{pair}"\nobserve = {{ price = "[BODY].price" }}\n' if pair else "")
        )
    path.write_text("\n".join(blocks))


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def time_handlers(
    app: web.Application, handlers: dict[str, Handler], repeat: int
) -> dict[str, tuple[float, float, int, int]]:
    """label -> (median wall ms, CPU ms per render, bytes, samples), the handlers called
    in turn, `repeat` times each."""
    wall: dict[str, list[float]] = {label: [] for label in handlers}
    cpu: dict[str, float] = dict.fromkeys(handlers, 0.0)
    sizes: dict[str, tuple[int, int]] = {}
    for _ in range(repeat):
        for label, handler in handlers.items():
            request = make_mocked_request("GET", "/metrics", app=app)
            started, cpu_started = time.perf_counter(), time.process_time()
            response = await handler(request)
            wall[label].append(time.perf_counter() - started)
            cpu[label] += time.process_time() - cpu_started
            assert isinstance(response, web.Response) and isinstance(response.body, bytes)
            body = response.body
            samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            sizes[label] = (len(body), samples)
    return {
        label: (median_ms(wall[label]), cpu[label] / repeat * 1000, *sizes[label])
        for label in handlers
    }


async def time_scrapes(base: str, paths: list[str], repeat: int) -> dict[str, float]:
    """path -> median wall ms of a GET over loopback, the paths requested in turn."""
    wall: dict[str, list[float]] = {path: [] for path in paths}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(repeat):
            for path in paths:
                started = time.perf_counter()
                async with session.get(base + path) as response:
                    assert response.status == 200, (path, response.status)
                    await response.read()
                wall[path].append(time.perf_counter() - started)
    return {path: median_ms(times) for path, times in wall.items()}


async def run(events: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = Path(tmp) / "metrics.db"
        await build_log(database, events)
        config = Path(tmp) / "metrics.toml"
        write_config(config)
        settings = Settings.from_config(
            load_config(config), database=database, environ={}, probing=False
        )
        app = create_app(settings)
        handlers: dict[str, tuple[str, Handler]] = {
            "hand-written (baseline)": ("/bench/handwritten", prometheus.metrics),
            "prometheus_client, text": ("/bench/client", candidate(app, False)),
            "prometheus_client, OpenMetrics": ("/bench/openmetrics", candidate(app, True)),
        }
        for path, handler in handlers.values():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            await app[READ_MODELS].wait_for(app[STORE].head)
            print(f"{events:,} events, {PROVIDERS} providers; {repeat} renders each, alternating")
            timed = await time_handlers(
                app, {label: handler for label, (_, handler) in handlers.items()}, repeat
            )
            base_wall, base_cpu, _, _ = timed["hand-written (baseline)"]
            print("handler on the event loop (median wall, CPU per render):")
            for label, (wall, cpu, size, samples) in timed.items():
                print(
                    f"  {label:<31} {wall:7.2f} ms  CPU {cpu:7.2f} ms  {size:>8,} B"
                    f" {samples:>6,} samples   ratio {wall / base_wall:5.2f}"
                    f" (CPU {cpu / base_cpu:5.2f})"
                )
            host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
            paths = [path for path, _ in handlers.values()]
            scrapes = await time_scrapes(f"http://{host}:{port}", paths, repeat)
            base = scrapes["/bench/handwritten"]
            print("scrape over loopback HTTP (median wall):")
            for label, (path, _) in handlers.items():
                print(f"  {label:<31} {scrapes[path]:7.2f} ms   ratio {scrapes[path] / base:5.2f}")
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.repeat))


if __name__ == "__main__":
    main()
