"""Read models kept current from a real log: snapshots, tails, rebuilds, replay."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from pytest_aiohttp import AiohttpClient

from cryptomon.config import load_config
from cryptomon.events.archive import archive_probe_events, segments
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import (
    ErrorKind,
    Event,
    ProbeOutcome,
    ProbeRecorded,
    ProviderRegistered,
    RateLimitChanged,
    RecordedEvent,
)
from cryptomon.http.settings import Settings
from cryptomon.projections import (
    AlertRaised,
    Notice,
    Projections,
    ProjectionSettings,
)
from cryptomon.readmodels import (
    CorruptLog,
    ReadModels,
    SnapshotAheadOfLog,
    fold_log,
    load_projections,
)
from cryptomon.service.app import create_app

SETTINGS = ProjectionSettings()


def probe(n: int, outcome: ProbeOutcome = "success") -> ProbeRecorded:
    return ProbeRecorded("A", "health", "/", outcome, started_at=1_800_000_000.0 + n, latency_ms=5)


REGISTERED = ProviderRegistered(
    "A", "market_data", "https://a.example", "/", "every 30s", 10_000, 2_000
)


async def fill(store: EventStore, outcomes: list[ProbeOutcome], start: int = 0) -> None:
    for n, outcome in enumerate(outcomes, start=start):
        await store.append("provider:A", [probe(n, outcome)])


def replay(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptomon", "replay", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_start_folds_the_log_follows_it_live_and_snapshots_at_stop(tmp_path: Path) -> None:
    store = await EventStore.open(tmp_path / "r.db")
    await store.append("config:A", [REGISTERED])
    await fill(store, ["success"] * 5)
    models = ReadModels(store, SETTINGS)
    report = await models.start()
    assert (report.snapshot_position, report.tail_events, report.discarded) == (0, 6, None)
    assert models.projections.providers.get("A") is not None

    heard: list[tuple[RecordedEvent, list[Notice]]] = []
    models.listeners.append(lambda recorded, notices: heard.append((recorded, notices)))
    await fill(store, ["failed"] * 3, start=5)
    await models.wait_for(store.head)
    state = models.projections.providers.get("A")
    assert state is not None and state.status == "offline"
    raised = [n for _, notices in heard for n in notices if isinstance(n, AlertRaised)]
    assert [a.alert.kind for a in raised] == ["degraded", "offline"]
    assert [r.position for r, _ in heard] == [7, 8, 9]
    await models.stop()
    await store.close()

    store = await EventStore.open(tmp_path / "r.db")
    again = ReadModels(store, SETTINGS)
    report = await again.start()
    assert (report.snapshot_position, report.tail_events) == (9, 0)
    assert again.projections.state_equal(models.projections) == []
    await again.stop()
    await store.close()

    result = replay(tmp_path / "r.db")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: replayed 9 events")


async def test_a_corrupt_snapshot_is_discarded_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await EventStore.open(path)
    await fill(store, ["success", "failed", "failed", "failed"])
    models = ReadModels(store, SETTINGS)
    await models.start()
    await models.stop()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE snapshots SET state = X'C0FFEE' WHERE name = 'alerts'")

    result = replay(path)
    assert "snapshot of alerts is corrupt" in result.stdout
    assert result.returncode == 0

    store = await EventStore.open(path)
    rebuilt = ReadModels(store, SETTINGS)
    report = await rebuilt.start()
    assert report.discarded is not None and "corrupt" in report.discarded
    assert report.tail_events == 4
    assert rebuilt.projections.state_equal(models.projections) == []
    await rebuilt.stop()
    await store.close()


async def test_a_snapshot_of_an_older_projection_version_rebuilds_that_one_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.db"
    store = await EventStore.open(path)
    await fill(store, ["success"] * 3)
    models = ReadModels(store, SETTINGS)
    await models.start()
    await models.stop()
    await fill(store, ["failed"] * 2, start=3)  # a tail after the snapshot
    full = Projections(SETTINGS)
    await fold_log(full, store, store.head)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE snapshots SET version = version - 1 WHERE name = 'metrics'")
    with caplog.at_level(logging.INFO, logger="cryptomon.readmodels"):
        async with await EventStore.open(path, readonly=True) as reader:
            projections, report = await load_projections(reader, SETTINGS)
    assert report.discarded is None
    assert report.rebuilt == ("metrics",)
    assert (report.snapshot_position, report.tail_events) == (3, 2)
    assert projections.position == 5
    assert projections.state_equal(full) == []
    [message] = [r.getMessage() for r in caplog.records if "no current state" in r.getMessage()]
    assert message == (
        "the snapshot has no current state of metrics; folding them from the start of the"
        " log up to position 3"
    )


async def test_a_snapshot_without_a_new_projection_rebuilds_it_and_what_reads_it(
    tmp_path: Path,
) -> None:
    """An upgrade that adds a projection (as chains and quotes were added) folds it from the
    start; the projections whose folds read its notices are folded again with it (the
    incidents follow the alerts'), and the others continue from the snapshot."""
    path = tmp_path / "r.db"
    store = await EventStore.open(path)
    await fill(store, ["success", "failed", "failed", "failed", "success"])
    models = ReadModels(store, SETTINGS)
    await models.start()
    await models.stop()
    full = Projections(SETTINGS)
    await fold_log(full, store, store.head)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM snapshots WHERE name = 'chains'")
    async with await EventStore.open(path, readonly=True) as reader:
        projections, report = await load_projections(reader, SETTINGS)
    assert report.rebuilt == ("chains", "providers", "durations", "alerts", "incidents")
    assert report.discarded is None
    assert projections.state_equal(full) == []


async def test_a_snapshot_ahead_of_the_log_refuses_to_serve(tmp_path: Path) -> None:
    ahead = await EventStore.open(tmp_path / "ahead.db")
    await fill(ahead, ["success"] * 6)
    projections = Projections(SETTINGS)
    for recorded in await ahead.read_all():
        projections.fold(recorded)
    await ahead.close()
    short = await EventStore.open(tmp_path / "short.db")
    await fill(short, ["success"] * 2)
    await short.save_snapshots(projections.snapshot_state(), projections.position)
    with pytest.raises(SnapshotAheadOfLog, match=r"covers position 6 but the log .* ends at 2"):
        await load_projections(short, SETTINGS)
    await short.close()


async def test_replay_reports_where_live_state_differs(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await EventStore.open(path)
    await fill(store, ["success", "success", "failed", "failed", "failed"])
    wrong = Projections(SETTINGS)
    for recorded in await store.read_all():
        # A live state that missed the last failure: what a bug in a fold would leave.
        if recorded.position < 5:
            wrong.fold(recorded)
    wrong.position = 5
    await store.save_snapshots(wrong.snapshot_state(), 5)
    await store.close()
    result = replay(path)
    assert result.returncode == 1
    assert result.stdout.startswith("DIFFERENT: a replay of 5 events")
    assert "providers.providers['A']" in result.stdout


async def test_replay_says_when_it_stopped_listing_differences(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await EventStore.open(path)
    for n in range(60):
        await store.append(f"provider:P{n}", [ProbeRecorded(f"P{n}", "health", "/", "success", n)])
    empty = Projections(SETTINGS)  # a live state that missed every provider
    empty.position = store.head
    await store.save_snapshots(empty.snapshot_state(), store.head)
    await store.close()
    result = replay(path)
    assert result.returncode == 1
    listed = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert len(listed) == 51, result.stdout
    assert listed[-1] == "  (listing stops at 50 differences; there may be more)"


async def edited_log(path: Path, *, snapshot_at: int, events: int, edit_at: int) -> None:
    """A log of `events` probes, snapshotted at `snapshot_at`, then edited at `edit_at`
    so that the row still decodes (only the hash chain shows it)."""
    store = await EventStore.open(path)
    await fill(store, ["success"] * snapshot_at)
    models = ReadModels(store, SETTINGS)
    await models.start()
    await models.stop()
    await fill(store, ["success"] * (events - snapshot_at), start=snapshot_at)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE events SET payload = replace(payload, 'success', 'failed') WHERE position = ?",
            (edit_at,),
        )


async def test_loading_a_log_whose_tail_breaks_the_chain_refuses(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    await edited_log(path, snapshot_at=3, events=6, edit_at=5)
    async with await EventStore.open(path, readonly=True) as store:
        with pytest.raises(CorruptLog, match="corrupt at position 5"):
            await load_projections(store, SETTINGS)


async def test_loading_a_log_whose_last_rows_were_deleted_refuses(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await EventStore.open(path)
    await fill(store, ["success"] * 6)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events WHERE position >= 5")  # no chain link breaks
    async with await EventStore.open(path, readonly=True) as store:
        assert store.head == 4
        with pytest.raises(CorruptLog, match="positions up to 6 were written"):
            await load_projections(store, SETTINGS)


async def test_archiving_everything_old_keeps_the_newest_row_and_the_head(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await EventStore.open(path)
    await fill(store, ["success"] * 6)
    assert await archive_probe_events(store, before=2e9, up_to_position=store.head) == 5
    await store.close()
    async with await EventStore.open(path) as store:
        assert store.head == 6
        projections, _ = await load_projections(store, SETTINGS)
        assert projections.position == 6
        assert await store.append("provider:A", [probe(6, "success")]) == [7]


async def test_an_edit_before_the_snapshot_makes_the_database_unhealthy(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "r.db"
    await edited_log(path, snapshot_at=6, events=6, edit_at=2)
    config = tmp_path / "empty.toml"
    config.write_text("providers = []\n")
    settings = Settings.from_config(load_config(config), database=path, environ={})
    client = await aiohttp_client(create_app(settings))  # start-up folds only the tail
    deadline = time.monotonic() + 30
    while True:
        async with client.get("/api/database/health") as response:
            database = await response.json()
        if database["history"] != "verifying":
            break
        assert time.monotonic() < deadline, "the history was never verified"
        await asyncio.sleep(0.05)
    assert (response.status, database["history"]) == (503, "broken")
    assert "corrupt at position 2" in database["error"]
    async with client.get("/health") as response:
        assert response.status == 503
        health = await response.json()
    assert health["components"]["database"]["history"] == "broken"
    assert [p["component"] for p in health["problems"]] == ["history"]
    # Still ready: every instance reads this log, so sending traffic elsewhere mends nothing.
    async with client.get("/readyz") as response:
        assert (response.status, (await response.json())["problems"]) == (200, [])


async def test_an_intact_history_is_said_to_be(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with await EventStore.open(path) as store:
        await fill(store, ["success"] * 6)
        models = ReadModels(store, SETTINGS)
        await models.start()  # folds all six and snapshots them
        await models.stop()
        models = ReadModels(store, SETTINGS)
        await models.start()
        assert models.load_report is not None and models.load_report.snapshot_position == 6
        deadline = time.monotonic() + 30
        while models.history == "verifying":
            assert time.monotonic() < deadline, "the history was never verified"
            await asyncio.sleep(0.01)
        await models.stop()
    assert (models.history, models.history_error) == ("intact", None)


async def test_an_unreadable_archive_leaves_the_history_unverified_and_stop_still_works(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    async with await EventStore.open(path) as store:
        await fill(store, ["success"] * 6)
        models = ReadModels(store, SETTINGS)
        await models.start()  # folds all six and snapshots them
        await models.stop()
        assert await archive_probe_events(store, before=2e9, up_to_position=store.head) == 5
        [(_first, _last, segment)] = segments(path)
        segment.write_bytes(b"not gzip")
        models = ReadModels(store, SETTINGS)
        await models.start()
        deadline = time.monotonic() + 30
        while models.history == "verifying":
            assert time.monotonic() < deadline, "the history check never ended"
            await asyncio.sleep(0.01)
        assert models.history == "unverified"
        assert models.history_error is not None and "could not verify" in models.history_error
        await fill(store, ["failed"], start=6)
        await models.stop()  # folds the new event and snapshots, the failed check aside
        assert models.position == 7


async def chain_reaches(models: ReadModels, position: int) -> None:
    """Poll the chain check until it has verified up to `position` (or stopped short)."""
    deadline = time.monotonic() + 30
    while models.chain.position < position and models.chain.state in ("verifying", "intact"):
        assert time.monotonic() < deadline, f"the chain check stayed at {models.chain.position}"
        await asyncio.sleep(0.01)


async def test_the_chain_check_follows_the_head_one_walk_a_burst(tmp_path: Path) -> None:
    async with await EventStore.open(tmp_path / "r.db") as store:
        await fill(store, ["success"] * 6)
        models = ReadModels(store, SETTINGS)
        await models.start()
        await chain_reaches(models, 6)
        assert (models.history, models.chain.position, models.chain.hash) == (
            "intact",
            6,
            store.last_hash,
        )
        walks = models.chain.walks
        # One commit of 300 events: the read models apply them one by one, and every one
        # wakes the check, which walks once, from position 6 to the head.
        await store.append("provider:A", [probe(n) for n in range(6, 306)])
        await chain_reaches(models, 306)
        assert (models.history, models.chain.hash) == ("intact", store.last_hash)
        assert models.chain.walks == walks + 1
        verified_at = models.chain.verified_at
        assert verified_at is not None
        await fill(store, ["failed"], start=306)
        await chain_reaches(models, 307)
        assert models.chain.walks == walks + 2
        assert models.chain.verified_at is not None and models.chain.verified_at >= verified_at
        await models.stop()


async def test_an_edit_of_a_row_committed_after_start_up_is_found_as_it_lands(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.db"
    async with await EventStore.open(path) as store:
        await fill(store, ["success"] * 3)
        models = ReadModels(store, SETTINGS)
        await models.start()
        await chain_reaches(models, 3)
        async with models.chain.rows_moving():  # holds off the check while the row is edited
            await fill(store, ["success"] * 4, start=3)  # positions 4..7
            with sqlite3.connect(path) as conn:
                conn.execute(
                    "UPDATE events SET payload = replace(payload, 'success', 'failed')"
                    " WHERE position = 6"
                )
        await chain_reaches(models, 7)
        assert models.history == "broken"
        assert (models.chain.broken_at, models.chain.position) == (6, 5)
        assert models.history_error is not None
        assert "corrupt at position 6" in models.history_error
        await fill(store, ["success"], start=7)
        await models.wait_for(8)
        assert (models.history, models.chain.position) == ("broken", 5)  # not walked past it
        await models.stop()


def test_serve_refuses_to_start_on_a_corrupt_tail(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    asyncio.run(edited_log(path, snapshot_at=3, events=6, edit_at=5))
    config = tmp_path / "empty.toml"
    config.write_text("providers = []\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "cryptomon", "serve", "--db", str(path), "--port", str(port),
         "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "corrupt at position 5" in result.stderr
    assert "refusing to serve" in result.stderr


# ---- folds over the archive and the database --------------------------------------------

T0 = 1_800_000_000.0


async def mixed_log(path: Path) -> EventStore:
    """Three providers probed every 40 s for ten hours with runs of failures (status changes,
    alerts), rate-limit changes, and the first four hours' probes archived (~1,100 events
    of ~2,750)."""
    rng = random.Random(4)
    now = [T0]
    store = await EventStore.open(path, clock=lambda: now[0])
    for name in "ABC":
        await store.append(f"config:{name}", [msgspec.structs.replace(REGISTERED, provider=name)])
    failing = dict.fromkeys("ABC", 0)
    for step in range(900):
        at = now[0] = T0 + 40 * step
        appends = []
        for name in "ABC":
            if failing[name] == 0 and rng.random() < 0.03:
                failing[name] = rng.randint(1, 6)
            outcome: ProbeOutcome = "success"
            error: ErrorKind | None = None
            if failing[name]:
                failing[name] -= 1
                outcome, error = rng.choice([("failed", "http_5xx"), ("timeout", "timeout")])
            events: list[Event] = [
                ProbeRecorded(name, "health" if step % 5 else "collection", "/", outcome, at,
                              rng.lognormvariate(5, 1.2), error_kind=error, error_message=error)
            ]  # fmt: skip
            if rng.random() < 0.02:
                used = rng.choice([50, 85, 100])
                events.append(RateLimitChanged(name, used, 100, 60.0, float(used), at))
            appends.append(store.append(f"provider:{name}", events))
        await asyncio.gather(*appends)
    assert await archive_probe_events(store, before=T0 + 4 * 3600, up_to_position=store.head)
    return store


@pytest.mark.parametrize("start", [0, 500, 2000])  # in the archive, after it
async def test_a_fold_resumed_from_a_snapshot_equals_one_straight_through(
    tmp_path: Path, start: int
) -> None:
    store = await mixed_log(tmp_path / "r.db")
    assert segments(store.path)
    straight = Projections(SETTINGS)
    assert await fold_log(straight, store, store.head) == store.head
    prefix = Projections(SETTINGS)
    await fold_log(prefix, store, start)
    resumed = Projections.restore(prefix.snapshot_state(), SETTINGS)
    assert await fold_log(resumed, store, store.head) == store.head - start
    assert resumed.position == straight.position == store.head
    assert resumed.state_equal(straight) == []
    assert resumed.snapshot_state() == straight.snapshot_state()
    # Every projection has something in it: the comparison is not of empty states.
    assert straight.alerts.state.alerts and straight.failures.state.hours
    assert straight.metrics.state.health and straight.rate_limits.state.limits
    await store.close()
