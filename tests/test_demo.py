"""Demo mode and log lines: the simulated providers driven with a real HTTP client, the
generated config, `python -m cryptomon --demo` as users run it, and `--log-format json`."""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cryptomon.cli.demo import (
    BEHIND_BLOCKS,
    CHAIN,
    CHAIN_ID,
    CYCLE_SECONDS,
    DRIFT,
    FLAP_SECONDS,
    PAIR,
    PROVIDERS,
    RATE_LIMIT_REQUESTS,
    RATE_LIMIT_WINDOW_SECONDS,
    SCENARIO,
    SimulatedProviders,
)
from cryptomon.cli.logformat import JsonFormatter, TextFormatter, configure_logging
from cryptomon.config import Config, load_config, parse_uint
from cryptomon.config.conditions import Answer, parse_observation
from cryptomon.probing.scheduler import Scheduler
from cryptomon.projections.quotes import as_price, as_time


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # a multiple of both the flap period and the window

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def simulated() -> AsyncIterator[tuple[SimulatedProviders, FakeClock]]:
    clock = FakeClock()
    providers = SimulatedProviders(clock=clock)
    try:
        async with providers.serving():
            yield providers, clock
    finally:
        providers.close()


async def fetch(url: str) -> tuple[int, dict[str, str], Any, float]:
    began = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json()
        return response.status, dict(response.headers), body, time.perf_counter() - began


async def test_healthy_answers_quickly(simulated: tuple[SimulatedProviders, FakeClock]) -> None:
    providers, _ = simulated
    status, _, body, seconds = await fetch(providers.url("/healthy") + "/ping")
    assert status == 200 and body["status"] == "ok" and seconds < 1.0
    status, _, body, _ = await fetch(providers.url("/healthy") + "/simple/price?ids=bitcoin")
    assert status == 200 and body["bitcoin"]["usd"] > 0


async def test_slow_is_slower_than_its_degraded_latency(
    simulated: tuple[SimulatedProviders, FakeClock], tmp_path: Path
) -> None:
    providers, _ = simulated
    config = load_config(providers.write_config(tmp_path / "demo.db"))
    slow = next(p for p in config.providers if p.name == "Slow")
    status, _, _, seconds = await fetch(slow.url(slow.health_path))
    assert status == 200
    assert slow.degraded_latency_seconds < seconds < slow.timeout_seconds


async def test_flapping_goes_up_and_down(simulated: tuple[SimulatedProviders, FakeClock]) -> None:
    providers, clock = simulated
    url = providers.url("/flapping") + "/ping"
    seen = []
    for step in range(4):
        clock.now = 1_800_000_000.0 + step * FLAP_SECONDS + 1
        seen.append((await fetch(url))[0])
    assert seen == [200, 503, 200, 503]


async def test_rate_limited_counts_down_then_answers_429(
    simulated: tuple[SimulatedProviders, FakeClock],
) -> None:
    providers, clock = simulated
    url = providers.url("/ratelimited") + "/ping"
    window_end = clock.now + RATE_LIMIT_WINDOW_SECONDS
    clock.now += 10
    remaining = []
    for _ in range(RATE_LIMIT_REQUESTS):
        status, headers, _, _ = await fetch(url)
        assert status == 200
        assert headers["X-RateLimit-Limit"] == str(RATE_LIMIT_REQUESTS)
        assert headers["X-RateLimit-Reset"] == str(int(window_end))
        remaining.append(int(headers["X-RateLimit-Remaining"]))
    assert remaining == list(range(RATE_LIMIT_REQUESTS - 1, -1, -1))
    status, headers, body, _ = await fetch(url)
    assert status == 429 and "error" in body
    assert headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["Retry-After"]) == RATE_LIMIT_WINDOW_SECONDS - 10
    clock.now = window_end  # a new window
    status, headers, _, _ = await fetch(url)
    assert status == 200 and headers["X-RateLimit-Remaining"] == str(RATE_LIMIT_REQUESTS - 1)


async def rpc(url: str, calls: Any) -> Any:
    async with aiohttp.ClientSession() as session, session.post(url, json=calls) as response:
        assert response.status == 200
        return await response.json()


def batch() -> list[dict[str, Any]]:
    return [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId"},
    ]


async def heads_at(
    providers: SimulatedProviders, clock: FakeClock, second: float
) -> dict[str, int]:
    """Each node's head, `second` seconds into the timeline, as its batch answers it."""
    clock.now = providers.started + second
    heads = {}
    for name, _, prefix, _ in PROVIDERS:
        if prefix.startswith("/node-"):
            head, chain_id = await rpc(providers.url(prefix), batch())
            assert parse_uint(chain_id["result"]) == CHAIN_ID and chain_id["id"] == 2
            number = parse_uint(head["result"])
            assert number is not None
            heads[name] = number
    return heads


async def test_the_nodes_follow_the_chain_but_one_falls_behind_and_one_freezes(
    simulated: tuple[SimulatedProviders, FakeClock],
) -> None:
    providers, clock = simulated
    behind, frozen = SCENARIO["behind"], SCENARIO["frozen"]
    start = await heads_at(providers, clock, 0)
    assert len(set(start.values())) == 1  # all at the tip
    tip = start["NodeA"]
    # A block a second; LaggingNode behind during its span, FrozenNode still during its.
    during = await heads_at(providers, clock, frozen[0] + 5)
    assert frozen[0] + 5 < behind[1]
    assert during["NodeA"] == during["NodeB"] == tip + frozen[0] + 5
    assert during["LaggingNode"] == during["NodeA"] - BEHIND_BLOCKS
    assert during["FrozenNode"] == tip + frozen[0]
    later = await heads_at(providers, clock, frozen[1] - 1)
    assert later["FrozenNode"] == tip + frozen[0]
    assert later["LaggingNode"] == later["NodeA"]  # caught up
    after = await heads_at(providers, clock, frozen[1])
    assert set(after.values()) == {tip + frozen[1]}  # the frozen node jumps to the tip
    # The timeline repeats.
    assert await heads_at(providers, clock, CYCLE_SECONDS + frozen[0] + 5) == {
        name: head + CYCLE_SECONDS for name, head in during.items()
    }
    # One call alone is answered alone; an unknown method with a JSON-RPC error.
    clock.now = providers.started
    one = await rpc(providers.url("/node-a"), {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId"})
    assert one == {"jsonrpc": "2.0", "id": 7, "result": hex(CHAIN_ID)}
    unknown = await rpc(providers.url("/node-a"), {"jsonrpc": "2.0", "id": 1, "method": "x"})
    assert unknown["error"]["code"] == -32601


async def prices_at(
    providers: SimulatedProviders, clock: FakeClock, config: Config, second: float
) -> dict[str, float]:
    """Each source's price, `second` seconds into the timeline, as the config observes it."""
    clock.now = providers.started + second
    prices = {}
    for provider in config.providers:
        if provider.quote == PAIR:
            status, _, body, _ = await fetch(provider.url(provider.health_path))
            assert status == 200
            answer = Answer(
                status=200, response_time_ms=1.0, headers={}, body=json.dumps(body).encode()
            )
            observed = {
                n: parse_observation(o).extract(answer) for n, o in provider.observe.items()
            }
            price = as_price(observed["price"])
            assert price is not None
            if "price_time" in observed:
                data_time = as_time(observed["price_time"])
                assert data_time is not None and 0 <= clock.now - data_time <= 3
            prices[provider.name] = price
    return prices


async def test_one_price_drifts_off_the_others_and_comes_back(
    simulated: tuple[SimulatedProviders, FakeClock], tmp_path: Path
) -> None:
    providers, clock = simulated
    config = load_config(providers.write_config(tmp_path / "demo.db"))
    drift = SCENARIO["drift"]
    for second, drifting in ((0, False), (drift[0] + 1, True), (drift[1], False)):
        prices = await prices_at(providers, clock, config, second)
        assert len(prices) == 4
        others = [price for name, price in prices.items() if name != "DriftingPrice"]
        median = statistics.median(prices.values())
        assert max(others) / min(others) < 1.002  # within a fifth of a percent
        off = prices["DriftingPrice"] / median - 1
        assert (abs(off - DRIFT) < 0.003) if drifting else (abs(off) < 0.002), (second, prices)


async def test_down_refuses_connections(simulated: tuple[SimulatedProviders, FakeClock]) -> None:
    providers, _ = simulated
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(providers.url("") + "/status")


def test_the_generated_config_watches_them_every_few_seconds(tmp_path: Path) -> None:
    providers = SimulatedProviders()
    try:
        path = providers.write_config(tmp_path / "demo.db")
        config = load_config(path)
    finally:
        providers.close()
    assert path == tmp_path / "demo.toml"
    assert config.storage.database == (tmp_path / "demo.db").as_posix()
    assert [p.name for p in config.providers] == [name for name, *_ in PROVIDERS]
    assert [p.name for p in config.providers][:2] == ["Healthy", "Slow"]
    assert {p.interval for p in config.providers} == {"5s"}
    assert all(p.base_url.startswith("http://127.0.0.1:") for p in config.providers)
    assert all(p.skip_reason({}) is None for p in config.providers)
    assert config.websocket.status_interval_seconds <= 5
    nodes = [p for p in config.providers if p.chain is not None]
    assert [p.name for p in nodes] == ["NodeA", "NodeB", "LaggingNode", "FrozenNode"]
    assert {p.chain for p in nodes} == {CHAIN}
    assert all(p.observed == {"head", "chain_id"} for p in nodes)
    assert parse_uint(config.chains[CHAIN].chain_id) == CHAIN_ID
    sources = [p for p in config.providers if p.quote is not None]
    assert [p.name for p in sources] == ["PriceA", "PriceB", "PriceC", "DriftingPrice"]
    assert {p.quote for p in sources} == {PAIR}
    # Each misbehaviour lasts long enough to be judged: two probes or more.
    probe = config.providers[0].interval_seconds
    assert probe is not None
    for begin, end in SCENARIO.values():
        assert end - begin >= 4 * probe
    assert 2 * config.quotes.deviation_percent < DRIFT * 100


def test_a_config_the_demo_did_not_write_is_never_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / "demo.toml"
    mine.write_text("[server]\nport = 8000\n")
    providers = SimulatedProviders()
    try:
        with pytest.raises(FileExistsError, match="not a demo config"):
            providers.write_config(tmp_path / "demo.db")
    finally:
        providers.close()
    assert mine.read_text() == "[server]\nport = 8000\n"


# ---- python -m cryptomon --demo -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_demo_moves_within_a_minute_and_logs_json(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "demo.db"
    stderr = (tmp_path / "stderr.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "cryptomon", "--demo", "--db", str(db), "--port", str(port),
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout is not None
        output = ""
        deadline = time.monotonic() + 30
        while "monitoring" not in output and time.monotonic() < deadline:
            output += process.stdout.readline()
        assert "DEMO MODE" in output
        assert f"listening on {base}" in output
        assert f"database: {db}" in output
        assert f"config: {tmp_path / 'demo.toml'}" in output
        assert f"monitoring {len(PROVIDERS)} providers, skipping 0" in output
        # Within a minute: statuses change, alerts raise and resolve, the log moves.
        deadline = time.monotonic() + 45
        while True:
            providers = {
                p["name"]: p["status"] for p in get_json(f"{base}/api/providers")["providers"]
            }
            alerts = get_json(f"{base}/api/alerts")["alerts"]
            resolved = [a for a in alerts if a["resolved_at"] is not None]
            if providers["Down"] == "offline" and providers["Slow"] == "degraded" and resolved:
                break
            assert time.monotonic() < deadline, (providers, alerts)
            time.sleep(0.5)
        assert providers["Healthy"] == "online"
        assert get_json(f"{base}/api/logs/connection?limit=5")["count"] == 5
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        process.stdout.close()
    stderr.seek(0)
    lines = [json.loads(line) for line in stderr.read().splitlines()]
    stderr.close()
    assert lines, "no log lines"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert line["time"].endswith("Z")
    assert any(line["message"].startswith("read models at position") for line in lines)


def test_demo_shows_a_lagging_a_stale_node_and_a_deviating_price_within_a_minute(
    tmp_path: Path,
) -> None:
    """The alerts a new user sees, from the start: one of each kind, on the provider
    the banner says misbehaves, and none on the nodes and sources that keep up."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cryptomon", "--demo", "--db", str(tmp_path / "demo.db"),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wanted = {("lagging", "LaggingNode"), ("stale", "FrozenNode"), ("deviation", "DriftingPrice")}
    judgements = {"lagging", "stale", "wrong_chain", "deviation", "quote_stale"}
    keeping_up = {"NodeA", "NodeB", "PriceA", "PriceB", "PriceC"}
    try:
        assert process.stdout is not None
        output = ""
        deadline = time.monotonic() + 30
        while "monitoring" not in output and time.monotonic() < deadline:
            output += process.stdout.readline()
        assert "monitoring" in output, output
        deadline = time.monotonic() + 60
        while True:
            alerts = get_json(f"{base}/api/alerts?limit=500")["alerts"]
            judged = {(a["kind"], a["provider"]) for a in alerts if a["kind"] in judgements}
            if wanted <= judged:
                break
            assert time.monotonic() < deadline, judged
            time.sleep(0.5)
        assert not {provider for _, provider in judged} & keeping_up, judged
        statuses = {p["name"]: p["status"] for p in get_json(f"{base}/api/providers")["providers"]}
        assert statuses["NodeA"] == statuses["NodeB"] == "online"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        process.stdout.close()


def test_demo_makes_its_own_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cryptomon", "--demo", "--config", str(tmp_path / "x.toml"),
         "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--demo writes its own config" in result.stderr


# ---- log lines --------------------------------------------------------------------------


def record(**extra: Any) -> logging.LogRecord:
    made = logging.LogRecord(
        "cryptomon.probing.scheduler",
        logging.WARNING,
        __file__,
        1,
        "run of %s failed",
        ("Kraken",),
        None,
    )
    made.__dict__.update(extra)
    return made


def test_json_lines_carry_level_logger_and_provider_and_nothing_else() -> None:
    line = json.loads(JsonFormatter().format(record(provider="Kraken", api_key="SECRET-KEY")))
    assert set(line) == {"time", "level", "logger", "message", "provider"}
    assert line["level"] == "WARNING" and line["logger"] == "cryptomon.probing.scheduler"
    assert line["message"] == "run of Kraken failed" and line["provider"] == "Kraken"
    assert "provider" not in json.loads(JsonFormatter().format(record()))
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record()
        failed.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


def test_text_lines_name_the_provider() -> None:
    text = TextFormatter().format(record(provider="Kraken"))
    assert text.endswith(
        "WARNING cryptomon.probing.scheduler: run of Kraken failed [provider=Kraken]"
    )


def test_configure_logging_replaces_the_handlers() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging("json", stream)
        logging.getLogger("cryptomon.test").info("hello", extra={"provider": "P"})
        assert len(root.handlers) == 1
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    line = json.loads(stream.getvalue())
    assert line["message"] == "hello" and line["provider"] == "P" and line["level"] == "INFO"


async def test_a_failed_run_is_logged_with_its_provider(caplog: pytest.LogCaptureFixture) -> None:
    scheduler = Scheduler()
    scheduler.add_job("health_checks", "health probes", "per provider")

    async def fails(planned: float) -> None:
        raise RuntimeError("the log refused it")

    scheduler.add_task("Kraken", "health_checks", fails, provider="Kraken")
    with caplog.at_level(logging.WARNING, logger="cryptomon.probing.scheduler"):
        assert await scheduler.run_now("health_checks") == 1
    [failed] = [r for r in caplog.records if r.name == "cryptomon.probing.scheduler"]
    line = json.loads(JsonFormatter().format(failed))
    assert line["provider"] == "Kraken" and line["task"] == "Kraken"
    assert line["level"] == "WARNING" and "the log refused it" in line["message"]


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cryptomon", "--demo", "--db", str(tmp_path / "x.db"),
             "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in result.stderr
    assert "Traceback" not in result.stderr
