"""The monitor against stand-in providers on loopback: every result into the log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from standins import StandIn, closed_port

from cryptomon.config import load_config
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import JobTriggered, ProbeRecorded, ProviderRegistered, RateLimitChanged
from cryptomon.probing.monitor import Monitor
from cryptomon.probing.probes import create_probe_session
from cryptomon.probing.scheduler import UnknownJobError

SECRET = "SECRET-KEY-0123456789abcdef"


def write_config(path: Path, standin: StandIn) -> Path:
    down = f"http://127.0.0.1:{closed_port()}"
    path.write_text(
        f"""
[[providers]]
name = "Healthy"
category = "market_data"
base_url = "{standin.url("")}"
health_path = "/healthy"
interval = "30s"
api_key_env = "HEALTHY_KEY"
api_key_header = "X-Api-Key"
rate_limit = {{ requests = 4, per = "60s" }}
[[providers.collections]]
path = "/healthy?ids=bitcoin"
expect_key = "data"

[[providers]]
name = "Broken"
category = "exchanges"
base_url = "{standin.url("")}"
health_path = "/error500"
interval = "30s"

[[providers]]
name = "Limited"
category = "news"
base_url = "{standin.url("")}"
health_path = "/ratelimited"
cron = "*/5 * * * *"

[[providers]]
name = "Down"
category = "rpc_nodes"
base_url = "{down}"
interval = "1m"

[[providers]]
name = "NeedsKey"
category = "blockchain_explorers"
base_url = "{standin.url("")}"
health_path = "/healthy"
interval = "1m"
api_key_env = "UNSET_KEY_FOR_TESTS"
api_key_query = "apikey"

[[providers]]
name = "Hanging"
category = "sentiment"
base_url = "{standin.url("")}"
health_path = "/hang"
interval = "1m"
timeout = "30s"
enabled = false
"""
    )
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = await EventStore.open(tmp_path / "monitor.db")
    yield opened
    await opened.close()


@pytest.fixture
async def monitor(tmp_path: Path, standin: StandIn, store: EventStore) -> AsyncIterator[Monitor]:
    config = load_config(write_config(tmp_path / "cryptomon.toml", standin))
    session = create_probe_session()
    made = Monitor(config, store, session, environ={"HEALTHY_KEY": SECRET})
    yield made
    await made.stop()
    await session.close()


def database_bytes(directory: Path) -> bytes:
    """The database file with its WAL and lock files, as they lie on disk."""
    return b"".join(file.read_bytes() for file in sorted(directory.glob("monitor.db*")))


async def probes_of(store: EventStore) -> dict[str, list[ProbeRecorded]]:
    found: dict[str, list[ProbeRecorded]] = {}
    for recorded in await store.read_all(limit=10_000):
        if isinstance(recorded.event, ProbeRecorded):
            found.setdefault(recorded.event.provider, []).append(recorded.event)
    return found


async def test_health_checks_record_every_outcome(
    monitor: Monitor, store: EventStore, standin: StandIn
) -> None:
    assert await monitor.register_providers() == 6
    assert await monitor.trigger("health_checks", actor="alice") == 4
    probes = await probes_of(store)
    assert sorted(probes) == ["Broken", "Down", "Healthy", "Limited"]
    assert probes["Healthy"][0].outcome == "success"
    assert probes["Broken"][0].error_kind == "http_5xx"
    assert probes["Down"][0].error_kind == "connection_refused"
    assert probes["Limited"][0].outcome == "rate_limited"
    assert standin.last_headers.get("X-Api-Key") == SECRET

    events = [e.event for e in await store.read_all(limit=10_000)]
    registered = {e.provider: e for e in events if isinstance(e, ProviderRegistered)}
    assert not registered["NeedsKey"].key_configured
    assert registered["Healthy"].key_configured
    [triggered] = [e for e in events if isinstance(e, JobTriggered)]
    assert (triggered.job_id, triggered.actor) == ("health_checks", "alice")
    changes = [e for e in events if isinstance(e, RateLimitChanged)]
    assert [(c.provider, c.reason) for c in changes] == [
        ("Limited", "limit_reported"),
        ("Limited", "blocked"),
    ]
    assert changes[-1].blocked_until is not None


async def test_a_rate_limited_provider_is_not_probed_until_it_resets(
    monitor: Monitor, store: EventStore
) -> None:
    await monitor.trigger("health_checks", actor="alice")
    await monitor.trigger("health_checks", actor="alice")
    probes = await probes_of(store)
    assert len(probes["Limited"]) == 1
    assert len(probes["Healthy"]) == 2
    assert monitor.counters.skipped_blocked == 1


async def test_usage_thresholds_become_events(monitor: Monitor, store: EventStore) -> None:
    for _ in range(4):  # a limit of 4 a minute: 50%, 100%
        await monitor.scheduler.run_now("health_checks")
    changes = [
        e.event
        for e in await store.read_all(limit=10_000)
        if isinstance(e.event, RateLimitChanged) and e.event.provider == "Healthy"
    ]
    assert [(c.percentage, c.reason) for c in changes] == [
        (50.0, "threshold_up"),
        (100.0, "threshold_up"),
    ]


async def test_collection_jobs_check_the_body(monitor: Monitor, store: EventStore) -> None:
    assert await monitor.trigger("market_data", actor="bob") == 1
    [collected] = (await probes_of(store))["Healthy"]
    assert collected.kind == "collection"
    assert collected.endpoint == "/healthy?ids=bitcoin"
    assert collected.outcome == "success"


async def test_registration_is_recorded_only_when_it_changes(
    monitor: Monitor, store: EventStore
) -> None:
    assert await monitor.register_providers() == 6
    assert await monitor.register_providers() == 0
    assert store.head == 6


async def test_a_definition_on_another_stream_does_not_stall_registration(
    monitor: Monitor, store: EventStore
) -> None:
    # No cryptomon writes one; a log that has one must not make every append expect
    # that stream's version (it used to retry for ever).
    foreign = ProviderRegistered(
        "Healthy", "market_data", "https://elsewhere.example", "/", "every 1h", 10_000, 2_000
    )
    await store.append("imported:Healthy", [foreign, foreign])
    async with asyncio.timeout(30):
        assert await monitor.register_providers() == 6
    ours = await store.read_by_type(["ProviderRegistered"], limit=100)
    assert sorted(r.stream for r in ours if r.event.provider == "Healthy") == [  # type: ignore[union-attr]
        "config:Healthy",
        "imported:Healthy",
        "imported:Healthy",
    ]


async def test_a_provider_the_config_no_longer_has_is_recorded_as_removed_once(
    monitor: Monitor, store: EventStore, tmp_path: Path, standin: StandIn
) -> None:
    assert await monitor.register_providers() == 6
    full = write_config(tmp_path / "cryptomon.toml", standin).read_text()
    # The same file without "Broken" and "Down".
    blocks = full.split("[[providers]]")
    kept = [b for b in blocks if 'name = "Broken"' not in b and 'name = "Down"' not in b]
    (tmp_path / "fewer.toml").write_text("[[providers]]".join(kept))
    session = create_probe_session()
    try:
        environ = {"HEALTHY_KEY": SECRET}
        fewer = Monitor(load_config(tmp_path / "fewer.toml"), store, session, environ=environ)
        assert await fewer.register_providers() == 2
        assert await fewer.register_providers() == 0  # removed once, not at every start
    finally:
        await session.close()
    removed = await store.read_by_type(["ProviderRemoved"], limit=10)
    assert sorted(r.event.provider for r in removed) == ["Broken", "Down"]  # type: ignore[union-attr]
    assert {r.stream for r in removed} == {"config:Broken", "config:Down"}
    # Configured again, it is registered again.
    assert await monitor.register_providers() == 2


async def test_unknown_job_is_a_clear_error_and_records_nothing(
    monitor: Monitor, store: EventStore
) -> None:
    with pytest.raises(UnknownJobError, match="unknown job 'nope'; known jobs: health_checks"):
        await monitor.trigger("nope", actor="alice")
    assert store.head == 0


async def test_the_key_never_reaches_the_database_file(
    monitor: Monitor, store: EventStore, tmp_path: Path
) -> None:
    await monitor.register_providers()
    for _ in range(3):
        await monitor.trigger("health_checks", actor="alice")
        await monitor.trigger("market_data", actor="alice")
    await store.close()
    assert SECRET.encode() not in database_bytes(tmp_path)


async def test_stopping_cancels_in_flight_probes_without_half_results(
    tmp_path: Path, standin: StandIn, store: EventStore
) -> None:
    text = write_config(tmp_path / "c.toml", standin).read_text()
    config_path = tmp_path / "hang.toml"
    config_path.write_text(text.replace("enabled = false", "enabled = true"))
    session = create_probe_session()
    monitor = Monitor(load_config(config_path), store, session, environ={})
    try:
        running = asyncio.create_task(monitor.scheduler.run_now("health_checks"))
        await asyncio.wait_for(standin.hanging.wait(), timeout=10)
        await monitor.stop()
        await running
        assert "Hanging" not in await probes_of(store)
        assert monitor.scheduler.status()[0].running == 0
    finally:
        await session.close()


def test_check_config_lists_providers_and_reports_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[[providers]]\nname = "A"\ncategory = "news"\nbase_url = "https://a.example"\n'
        'interval = "30s"\napi_key_env = "NOT_SET_ANYWHERE"\napi_key_query = "key"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "cryptomon", "check-config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "skipped: set NOT_SET_ANYWHERE to probe it" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[providers]]\nname = "A"\ncategory = "news"\nbase_url = "ftp://a"\n'
        'interval = "30s"\ncron = "* * *"\ncolour = "red"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "cryptomon", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert str(bad) in result.stderr
    for fragment in ("base_url", "colour", "provider 'A'"):
        assert fragment in result.stderr
    bundled = subprocess.run(
        [sys.executable, "-m", "cryptomon", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bundled.returncode == 0
    assert bundled.stdout.count("\n") >= 21
