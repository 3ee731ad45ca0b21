"""Two instances of the real service on one PostgreSQL log.

They divide the providers between them (each probe result names the instance that
recorded it), both serve the same live feed, and when one is killed the other takes
over its providers within one probe interval; the log stays gap-free and verifies.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from standins import StandIn
from test_service import free_port, wait_listening

from cryptomon.events.types import ProbeRecorded

# Rendezvous hashing puts every provider on one instance with probability 2 / 2**n:
# 16 makes that a one in 32,768 run, where the test waits for both to hold some.
PROVIDERS = [f"P{n}" for n in range(16)]
INTERVAL_S = 2.0
DEADLINE_S = 60.0


class Instance:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}"

    async def health(self, session: aiohttp.ClientSession) -> dict[str, object]:
        async with session.get(self.url + "/health") as response:
            body: dict[str, object] = await response.json()
            return body


@pytest.fixture
def instances(
    tmp_path: Path, standin: StandIn, postgres_url: str
) -> Iterator[tuple[Instance, Instance]]:
    config = tmp_path / "shared.toml"
    config.write_text(
        "[storage]\n"
        f'url = "{postgres_url}"\n'
        + "".join(
            f'[[providers]]\nname = "{name}"\ncategory = "market_data"\n'
            f'base_url = "{standin.url("")}"\nhealth_path = "/healthy"\n'
            f'interval = "{INTERVAL_S:g}s"\n'
            for name in PROVIDERS
        )
    )
    started: list[Instance] = []
    try:
        for _ in range(2):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
                 "--port", str(port)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            started.append(Instance(process, port))
        # Started together: both register the providers at once, and one must yield.
        for instance in started:
            wait_listening(instance.process)
        yield started[0], started[1]
    finally:
        for instance in started:
            if instance.process.poll() is None:
                instance.process.kill()
            instance.process.wait()
            assert instance.process.stdout is not None
            instance.process.stdout.close()


async def probes_by_instance(url: str, since: float) -> dict[str, set[str]]:
    """Which instances recorded a probe of each provider that started after `since`."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT payload, actor FROM events WHERE type = 'ProbeRecorded' ORDER BY position"
        )
    finally:
        await conn.close()
    seen: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        probe = msgspec.json.decode(row["payload"], type=ProbeRecorded)
        if probe.started_at > since:
            seen[probe.provider].add(row["actor"])
    return seen


async def until_probed(url: str, since: float, check: str) -> dict[str, set[str]]:
    """Poll until every provider has a probe after `since`; return who probed each."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        seen = await probes_by_instance(url, since)
        if set(seen) == set(PROVIDERS):
            return seen
        assert time.monotonic() < deadline, f"{check}: only {sorted(seen)} were probed"
        await asyncio.sleep(0.2)


async def test_two_instances_share_the_providers_and_one_takes_over_when_the_other_dies(
    instances: tuple[Instance, Instance], postgres_url: str
) -> None:
    first, second = instances
    async with aiohttp.ClientSession() as session:
        # Both instances divide the providers; together they probe all of them, each once.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            held = []
            for instance in instances:
                health = await instance.health(session)
                components = health["components"]
                assert isinstance(components, dict)
                held.append(components["scheduler"]["providers_probed"])
            if sum(held) == len(PROVIDERS) and all(held):
                break
            assert time.monotonic() < deadline, f"providers never divided: {held}"
            await asyncio.sleep(0.2)
        since = time.time() + INTERVAL_S  # past any probe started before the division settled
        seen = await until_probed(postgres_url, since, "both instances running")
        assert all(len(actors) == 1 for actors in seen.values()), seen
        actors = set().union(*seen.values())
        assert len(actors) == 2, actors  # the work is shared, not all on one instance

        # The second instance's feed shows the first instance's probes too.
        async with session.ws_connect(second.url + "/ws/live?topics=events") as feed:
            feed_deadline = time.monotonic() + DEADLINE_S
            providers_in_feed: set[str] = set()
            while not set(PROVIDERS) <= providers_in_feed:
                assert time.monotonic() < feed_deadline, providers_in_feed
                message = json.loads((await feed.receive(timeout=DEADLINE_S)).data)
                if message.get("type") == "event" and message.get("event_type") == "ProbeRecorded":
                    providers_in_feed.add(message["event"]["provider"])

        # Writes the first instance acknowledged just before it dies must survive it.
        acknowledged = []
        for _ in range(5):
            async with session.post(first.url + "/api/scheduler/trigger/health_checks") as answer:
                assert answer.status == 200, await answer.text()
                acknowledged.append((await answer.json())["position"])

        first.process.kill()
        first.process.wait()
        killed_at = time.time()
        # Every provider is probed by the survivor within one interval (plus a lease round).
        after = await until_probed(postgres_url, killed_at, "after the kill")
        taken_over_at = time.time()
        survivor = set().union(*after.values())
        assert len(survivor) == 1, after
        assert taken_over_at - killed_at < INTERVAL_S + 3.0, taken_over_at - killed_at

    # Nothing lost or doubled: gap-free positions, unique ids, and the chain verifies.
    conn = await asyncpg.connect(postgres_url)
    try:
        positions = [r[0] for r in await conn.fetch("SELECT position FROM events ORDER BY 1")]
        ids = await conn.fetchval("SELECT count(DISTINCT event_id) FROM events")
        registrations = await conn.fetchval(
            "SELECT count(*) FROM events WHERE type = 'ProviderRegistered'"
        )
        kept = await conn.fetchval(
            "SELECT count(*) FROM events WHERE position = ANY($1::bigint[])", acknowledged
        )
    finally:
        await conn.close()
    assert positions == list(range(1, len(positions) + 1))
    assert ids == len(positions)
    assert kept == len(acknowledged), acknowledged
    assert registrations == len(PROVIDERS)  # the instance that lost the race registered nothing
    second.process.terminate()
    assert second.process.wait(timeout=DEADLINE_S) == 0
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", "verify", "--db", postgres_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(verify.communicate(), timeout=120)
    assert verify.returncode == 0, output.decode()


def spawn(config: Path) -> Instance:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    return Instance(process, port)


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: object = None
) -> tuple[int, dict[str, Any]]:
    async with session.request(method, url, json=body) as response:
        answer: dict[str, Any] = await response.json(content_type=None)
        return response.status, answer


async def until(check: Callable[[], Awaitable[object]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)  # a poll interval, not a wait for something to happen


async def test_api_changes_reach_every_instance_and_files_that_disagree_are_a_conflict(
    tmp_path: Path, standin: StandIn, postgres_url: str
) -> None:
    def shared(path: str) -> str:
        return (
            f'[storage]\nurl = "{postgres_url}"\n[[providers]]\nname = "Shared"\n'
            f'category = "news"\nbase_url = "{standin.url("")}"\nhealth_path = "{path}"\n'
            'interval = "1h"\n'
        )

    first_config, second_config = tmp_path / "first.toml", tmp_path / "second.toml"
    first_config.write_text(shared("/healthy"))
    second_config.write_text(shared("/error500"))
    started: list[Instance] = []
    try:
        first = spawn(first_config)
        started.append(first)
        wait_listening(first.process)
        second = spawn(second_config)
        started.append(second)
        wait_listening(second.process)
        async with aiohttp.ClientSession() as session:
            # The second file defines Shared otherwise: reported there, not recorded.
            health = await second.health(session)
            config = health["components"]["config"]  # type: ignore[index]
            assert config["status"] == "conflict", config
            [conflict] = config["conflicts"]
            assert "'Shared'" in conflict and "running" in conflict, conflict
            assert health["status"] == "healthy"
            first_health = await first.health(session)
            assert first_health["components"]["config"]["status"] == "ok"  # type: ignore[index]
            status, events = await call(
                session, "GET", first.url + "/api/events?type=ProviderRegistered"
            )
            paths = [e["payload"]["health_path"] for e in events["events"]]
            assert paths == ["/healthy"], paths  # the first file's, once: no fight

            # A provider defined over the API on one instance is scheduled by both.
            made = {
                "name": "Made", "category": "news", "base_url": standin.url(""),
                "health_path": "/healthy", "interval": "1h",
            }  # fmt: skip
            status, created = await call(session, "POST", first.url + "/api/providers", made)
            assert status == 201, created

            def scheduled(instance: Instance, count: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    status, ran = await call(
                        session, "POST", instance.url + "/api/scheduler/trigger/health_checks"
                    )
                    assert status == 200, ran
                    return bool(ran["tasks_run"] == count)

                return check

            await until(scheduled(second, 2), "the second instance to schedule Made")
            # Paused on the second: the first stops probing it too.
            status, paused = await call(session, "POST", second.url + "/api/providers/Made/pause")
            assert (status, paused["status"]) == (200, "paused"), paused
            await until(scheduled(first, 1), "the first instance to stop probing Made")

            # The second file agrees now: its reload clears the conflict.
            second_config.write_text(shared("/healthy"))
            status, reloaded = await call(session, "POST", second.url + "/api/config/reload")
            assert (status, reloaded["conflicts"]) == (200, []), reloaded
            health = await second.health(session)
            assert health["components"]["config"]["status"] == "ok"  # type: ignore[index]
    finally:
        for instance in started:
            if instance.process.poll() is None:
                instance.process.kill()
            instance.process.wait()
            assert instance.process.stdout is not None
            instance.process.stdout.close()
