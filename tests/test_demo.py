"""Demo mode and log lines: the simulated providers driven with a real HTTP client, the
generated config, `python -m cryptomon --demo` as users run it, and `--log-format json`."""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
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
    FLAP_SECONDS,
    PROVIDERS,
    RATE_LIMIT_REQUESTS,
    RATE_LIMIT_WINDOW_SECONDS,
    SimulatedProviders,
)
from cryptomon.cli.logformat import JsonFormatter, TextFormatter, configure_logging
from cryptomon.config import load_config
from cryptomon.probing.scheduler import Scheduler


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
        assert "monitoring 5 providers, skipping 0" in output
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
