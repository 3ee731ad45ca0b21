"""Notifications on PostgreSQL: several instances, one outbox, each channel delivered by
the instance holding its lock.

Against the throwaway cluster (`postgres_url`), with a real webhook receiver on 127.0.0.1.
In process: two notifiers on one log share the channels' locks, and when the holder's
session ends (its backend terminated) the other derives and delivers what follows. Then
two real services (`python -m cryptomon serve`): the one delivering is killed with
SIGKILL, with its notifications pending or one in flight, and the other delivers every
one of them, each idempotency key at least once, nothing lost.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from standins import closed_port
from test_notifications import (
    PROVIDERS,
    T0,
    Receiver,
    eventually,
    probe,
    registered,
    webhook,
)
from test_service import free_port, wait_listening

from cryptomon.config import Config, load_config
from cryptomon.events.postgres import PostgresEventStore
from cryptomon.events.types import ProbeRecorded
from cryptomon.notify import Notifier
from cryptomon.notify.postgres import PostgresOutbox
from cryptomon.probing.monitor import MONITORING_STREAM, monitoring_of
from cryptomon.readmodels import projection_settings

DEADLINE_S = 60.0


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver.start() as server:
        yield server


async def until(check: Any, what: str, within: float = DEADLINE_S) -> Any:
    """Poll the coroutine function `check` until it returns something true; return it."""
    deadline = time.monotonic() + within
    while not (found := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # a poll interval, not a wait for something to happen
    return found


async def outbox_rows(url: str) -> dict[str, tuple[str, str, int]]:
    """idempotency key -> (channel, status, position) of every outbox row."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT idempotency_key, channel, status, position FROM outbox")
    finally:
        await conn.close()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


# ---- two notifiers in this process ------------------------------------------------------


@dataclass
class Instance:
    store: PostgresEventStore
    notifier: Notifier

    def delivering(self) -> set[str]:
        return {stats.name for stats in self.notifier.stats() if stats.delivering}


@pytest.fixture
async def instances(tmp_path: Path, postgres_url: str, receiver: Receiver) -> AsyncIterator[Any]:
    started: list[Instance] = []
    path = tmp_path / "notify.toml"
    path.write_text(PROVIDERS + webhook("ops", receiver.url("/hook")))
    config = load_config(path)

    async def start(outbox_url: str = postgres_url) -> Instance:
        store = await PostgresEventStore.open(postgres_url)
        names = [channel.name for channel in config.notifications]
        notifier = Notifier(
            store,
            config.notifications,
            projection_settings(config),
            outbox=PostgresOutbox(outbox_url, names),
            categories={p.name: p.category for p in config.providers},
            environ={},
            retry_base=0.01,
            retry_cap=0.05,
        )
        await notifier.start()
        started.append(Instance(store, notifier))
        return started[-1]

    yield config, start
    for instance in started:
        await instance.notifier.stop()
        await instance.store.close()


async def test_one_notifier_delivers_a_channel_and_another_takes_over_when_its_session_ends(
    instances: tuple[Config, Any], receiver: Receiver, postgres_url: str
) -> None:
    config, start = instances
    admin = await asyncpg.connect(postgres_url)
    try:
        # The first notifier's outbox logs in as a role of its own, so the test can cut it
        # off: its session ended, and no new one until the role may log in again.
        await admin.execute("CREATE ROLE first_notifier LOGIN SUPERUSER")
        first = await start(postgres_url.replace("cryptomon:", "first_notifier:", 1))
        second = await start()
        assert (first.delivering(), second.delivering()) == ({"ops"}, set())
        await first.store.append("config:A", [registered("A", "market_data")])
        await first.store.append(MONITORING_STREAM, [monitoring_of(config)])
        await first.store.append("provider:A", [probe("A", T0)])  # offline: an incident opens
        await eventually(lambda: len(receiver.ok()) == 1)

        # As when its machine drops off the network: the session ends, its lock with it.
        await admin.execute("ALTER ROLE first_notifier NOLOGIN")
        terminated = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE usename = 'first_notifier'"
        )
        assert terminated == 1
        # The outage ends meanwhile: whichever way the second comes by the notice (from
        # the log as it follows it, or again from the checkpoint it takes the channel
        # from, where the incident's opening, delivered already, is found stored), it
        # sends what the first could not store.
        await second.store.append("provider:A", [probe("A", T0 + 60, "success")] * 2)

        async def moved() -> bool:
            return first.delivering() == set() and second.delivering() == {"ops"}

        await until(moved, "the channel to move to the second notifier")
        await eventually(lambda: len(receiver.ok()) == 2)

        # Back on the network, the first finds the lock taken and keeps out.
        await admin.execute("ALTER ROLE first_notifier LOGIN")

        async def reconnected() -> bool:
            sessions = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'first_notifier'"
            )
            return bool(sessions)

        await until(reconnected, "the first notifier's new session")
        await second.store.append("provider:A", [probe("A", T0 + 120)])  # a second outage
        await eventually(lambda: len(receiver.ok()) == 3)
        assert first.delivering() == set()
    finally:
        await admin.close()
    events = [r.json["event"] for r in receiver.ok()]
    assert events == ["incident_opened", "incident_closed", "incident_opened"]
    assert set(receiver.delivered.values()) == {1}
    rows = await outbox_rows(postgres_url)
    assert sorted(rows) == sorted(r.key for r in receiver.ok())
    assert {status for _, status, _ in rows.values()} == {"delivered"}


# ---- two real services, one killed ------------------------------------------------------


PROVIDER_NAMES = ("Down1", "Down2", "Down3")


class Service:
    """`python -m cryptomon serve` on the shared log, its log lines in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "CRYPTOMON_API_TOKEN"}
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
                 "--port", str(port)],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        try:
            wait_listening(self.process)
        except AssertionError:
            self.end()
            raise

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()

    async def channels(self, session: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
        async with session.get(self.url + "/api/notifications") as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        return {channel["name"]: channel for channel in body["channels"]}


@pytest.fixture
def services(tmp_path: Path, postgres_url: str) -> Iterator[Any]:
    started: list[Service] = []

    def start(config: Path, name: str) -> Service:
        service = Service(config, tmp_path / f"{name}.log")
        started.append(service)
        return service

    yield start
    for service in started:
        service.end()


def shared_config(path: Path, url: str, receiver: Receiver) -> Path:
    down = closed_port()
    path.write_text(
        f'[storage]\nurl = "{url}"\n[monitoring]\noffline_after_failures = 1\n'
        + "".join(
            f'[[providers]]\nname = "{name}"\ncategory = "rpc_nodes"\n'
            f'base_url = "http://127.0.0.1:{down}"\ninterval = "1h"\n'
            for name in PROVIDER_NAMES
        )
        + webhook("ops", receiver.url("/ops"))  # one message per incident
        + webhook("each", receiver.url("/each"), 'group = "alert"')  # one per alert
    )
    return path


async def failed_probes(url: str) -> dict[int, str]:
    """position -> provider of every failed probe in the log."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT position, payload FROM events WHERE type = 'ProbeRecorded'")
    finally:
        await conn.close()
    probes = {row[0]: msgspec.json.decode(row[1], type=ProbeRecorded) for row in rows}
    return {position: p.provider for position, p in probes.items() if p.outcome != "success"}


@pytest.mark.parametrize("when", ["at-once", "one-in-flight"])
async def test_a_killed_delivering_instance_s_notifications_are_delivered_by_another(
    tmp_path: Path, postgres_url: str, receiver: Receiver, services: Any, when: str
) -> None:
    """Killed right after the failures are appended (its rows may not be stored yet: the
    other derives them again from the checkpoint), or with every row stored and failing
    and one request in flight (which the other sends again: the one duplicate)."""
    receiver.fail_next = 10**9  # every request fails until the kill
    config = shared_config(tmp_path / "shared.toml", postgres_url, receiver)
    # The first to start takes both channels' locks; the second waits on them.
    first = services(config, "first")
    second = services(config, "second")
    async with aiohttp.ClientSession() as session:
        assert {n: c["delivering"] for n, c in (await first.channels(session)).items()} == {
            "ops": True,
            "each": True,
        }
        assert not any(c["delivering"] for c in (await second.channels(session)).values())

        # Each provider goes offline: an incident for "ops", an alert for "each".
        async with session.post(first.url + "/api/scheduler/trigger/health_checks") as answer:
            assert answer.status == 200, await answer.text()
        if when == "one-in-flight":

            async def all_stored_and_tried() -> bool:
                found = await first.channels(session)
                return all(c["pending"] == 3 and c["retrying"] for c in found.values())

            await until(all_stored_and_tried, "every row stored and tried")
            receiver.hanging.clear()
            receiver.hang_next = 1
            async with asyncio.timeout(DEADLINE_S):  # the next retry, within seconds
                await receiver.hanging.wait()
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        receiver.fail_next = 0
        killed_at = time.monotonic()

        async def everything_delivered() -> dict[str, dict[str, Any]] | None:
            found = await second.channels(session)
            done = all(
                c["delivering"] and c["pending"] == 0 and c["delivered"] == 3
                for c in found.values()
            )
            return found if done else None

        await until(everything_delivered, "the second instance to deliver everything")
        taken_over_in = time.monotonic() - killed_at

    # Every notice is in the outbox once, delivered, and was answered 200 (no loss).
    rows = await outbox_rows(postgres_url)
    assert len(rows) == 6, rows
    assert {status for _, status, _ in rows.values()} == {"delivered"}
    assert set(rows) == set(receiver.delivered), (rows, receiver.delivered)
    assert all(count >= 1 for count in receiver.delivered.values())
    failures = await failed_probes(postgres_url)
    for key, (channel, _, position) in rows.items():
        event = "incident_opened" if channel == "ops" else "raised"
        assert re.fullmatch(rf"{channel}:{event}:\d+:{position}", key), key
        assert position in failures, (key, failures)
    assert {failures[position] for _, _, position in rows.values()} == set(PROVIDER_NAMES)
    # Nobody answered 200 before the kill: the second instance sent each once...
    assert set(receiver.delivered.values()) == {1}
    if when == "one-in-flight":
        # ...and the request in flight at the kill once more: the same bytes under the
        # same key, a duplicate a receiver drops by its Idempotency-Key.
        [hung] = receiver.hung
        again = [r for r in receiver.requests if r.key == hung.key and r is not hung]
        assert again and all(r.body == hung.body for r in again)
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=DEADLINE_S) == 0
    assert taken_over_in < DEADLINE_S
