"""SIGKILL under load, many times over: nothing acknowledged is lost, the log stays sound.

One test, many cycles. Each cycle starts the real service (`python -m cryptomon serve`, a
subprocess) on the same SQLite file, with providers on a stand-in server that flap, fail,
crawl and rate-limit every few hundred milliseconds, so alerts keep being raised. While the
test drives REST reads, a live-feed client and acknowledgements (and job triggers) at it,
the service is SIGKILLed at a random moment, now and then during its start-up. After each
kill `verify` and `replay` must pass on the file as the crash left it; after each restart
every write the service answered 2xx for must be there: the alert still acknowledged, by
us, and its event at the position we were told. The live feed resumes after the last event
it saw with no gap. At the end the REST answers of a restart (snapshot plus tail) must equal
those of a service that rebuilt everything from the log.

The random moments come from a seed printed at the start (`-s` shows it); set
CRYPTOMON_CRASH_SEED to replay a run, CRYPTOMON_CRASH_CYCLES for more or fewer cycles.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standins import StandIn, closed_port

CYCLES = int(os.environ.get("CRYPTOMON_CRASH_CYCLES", "20"))
START_DEADLINE = 30.0
ACTOR = "crash-test"
# Providers failing never make these 503 (only cryptomon's own failures would): any 5xx
# from them here is a server error like any other.
HEALTH_PATHS = ("/health", "/readyz", "/livez", "/api/database/health")
READ_PATHS = (
    "/api/providers",
    "/api/providers/Flap-A",
    "/api/providers/Flap-B/stats?hours=1",
    "/api/alerts?open=true",
    "/api/status",
    "/api/rate-limits",
    "/api/logs/failure?limit=20",
    "/api/events?limit=50",
    "/api/database/stats",
    "/metrics",
    *HEALTH_PATHS,
)
# Answers compared between a restarted service and one that rebuilt from the log.
COMPARED_PATHS = (
    "/api/providers",
    "/api/providers/Flap-A/stats?hours=24",
    "/api/providers/Slow/series?hours=1",
    "/api/alerts?limit=5000",
    "/api/status",
    "/api/rate-limits",
    "/api/analytics/failures?hours=24",
)
# Fields that say when the answer was made, not what the read models hold.
VOLATILE_FIELDS = frozenset({"timestamp", "uptime_seconds", "started_at", "generated_at"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class CrashStandIn(StandIn):
    """The stand-ins, plus providers that flap (an alert raised every other probe) and a
    webhook receiver for the notifier."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}
        self.hooks = 0

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        super()._add_routes(router)
        router.add_get("/flap/{name}", self._flap)
        router.add_post("/hook", self._hook)

    async def _flap(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        count = self.calls[name] = self.calls.get(name, 0) + 1
        if count % 2:
            return web.json_response({"error": "flapping"}, status=503)
        return web.json_response({"ok": True})

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.hooks += 1
        return web.json_response({"ok": True})


def write_config(path: Path, standin: CrashStandIn, *, probing: bool = True) -> Path:
    base = f"http://127.0.0.1:{standin.port}"
    providers = [
        ("Flap-A", "exchanges", base, "/flap/a", "250ms"),
        ("Flap-B", "market_data", base, "/flap/b", "300ms"),
        ("Down", "news", base, "/error500", "400ms"),
        ("Slow", "rpc_nodes", base, "/slow?ms=120", "350ms"),
        ("Limited", "exchanges", base, "/ratelimited", "500ms"),
        ("Healthy", "sentiment", base, "/healthy", "300ms"),
        ("Refused", "blockchain_explorers", f"http://127.0.0.1:{closed_port()}", "/", "450ms"),
    ]
    text = [
        "[server]",
        # Every client here is 127.0.0.1: lift the per-address limits.
        "requests_per_second = 100000",
        "request_burst = 100000",
        "websocket_connections_per_address = 1000",
        "[storage]",
        # Snapshots (and the notifier's checkpoints) every second, so kills land on them too.
        'snapshot_interval = "1s"',
        "[websocket]",
        'status_interval = "500ms"',
        'heartbeat_interval = "5s"',
        "[monitoring]",
        "offline_after_failures = 1",
        "online_after_successes = 1",
    ]
    for name, category, url, health, interval in providers:
        text += [
            "[[providers]]",
            f'name = "{name}"',
            f'category = "{category}"',
            f'base_url = "{url}"',
            f'health_path = "{health}"',
            f'interval = "{interval}"',
            'timeout = "2s"',
            'degraded_latency = "100ms"',
            'rate_limit = { requests = 1000, per = "60s" }',
            f"enabled = {'true' if probing else 'false'}",
        ]
    if probing:
        text += [
            "[[notifications]]",
            'name = "hook"',
            'kind = "webhook"',
            f'url = "{base}/hook"',
            'timeout = "2s"',
        ]
    path.write_text("\n".join(text) + "\n")
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CRYPTOMON_API_TOKEN", None)  # writes from loopback need no token then
    return env


class Service:
    """One `python -m cryptomon serve` process; its log lines go to a file."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    @classmethod
    async def spawn(cls, config: Path, db: Path, log: Path) -> Service:
        port = free_port()
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
                "--db", str(db), "--port", str(port),
                stdout=asyncio.subprocess.PIPE, stderr=stderr, env=cli_env(),
            )  # fmt: skip
        return cls(process, port, log)

    async def listening(self) -> None:
        """Wait for the start-up lines (the last one says what it monitors)."""
        assert self.process.stdout is not None
        seen: list[bytes] = []
        try:
            async with asyncio.timeout(START_DEADLINE):
                while line := await self.process.stdout.readline():
                    seen.append(line)
                    if line.startswith(b"  monitoring"):
                        return
        except TimeoutError:
            pass
        else:  # the output ended: the process is gone
            await self.process.wait()
        raise AssertionError(
            f"the service did not start (exit {self.process.returncode}):\n"
            f"{b''.join(seen).decode(errors='replace')}\n{self.log.read_text()[-4000:]}"
        )

    async def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM: a clean stop, exit 0."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await self.process.wait() == 0, self.log.read_text()[-4000:]


@contextlib.asynccontextmanager
async def running(config: Path, db: Path, log: Path) -> AsyncIterator[Service]:
    service = await Service.spawn(config, db, log)
    try:
        yield service
    finally:
        await service.kill()


async def cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=cli_env(),
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@dataclass
class Ledger:
    """What the service acknowledged, across all cycles."""

    acknowledged: dict[int, int] = field(default_factory=dict)  # alert id -> event position
    notes: dict[int, str] = field(default_factory=dict)
    # Per job trigger answered 200: the log position its answer reported (the head once the
    # job had run, so its JobTriggered event is at that position or before).
    triggered: list[int] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    reads: int = 0
    feed_events: int = 0
    feed_since: int = 0  # the last event position the live feed delivered


async def acknowledge_loop(
    session: aiohttp.ClientSession, url: str, ledger: Ledger, cycle: int
) -> None:
    """Acknowledge every open, unacknowledged alert as it appears; record each 200."""
    while True:
        async with session.get(f"{url}/api/alerts?acknowledged=false&limit=50") as response:
            assert response.status == 200, await response.text()
            pending = (await response.json())["alerts"]
        for alert in pending:
            note = f"cycle {cycle}"
            async with session.post(
                f"{url}/api/alerts/{alert['id']}/acknowledge", json={"note": note, "actor": ACTOR}
            ) as response:
                body = await response.json()
                # 409: acknowledged already, by a request whose answer a kill swallowed.
                assert response.status in (200, 409), body
                if response.status == 200:
                    assert body["alert"]["id"] == alert["id"] and body["alert"]["acknowledged"]
                    ledger.acknowledged[alert["id"]] = body["position"]
                    ledger.notes[alert["id"]] = note
        if not pending:
            await asyncio.sleep(0.05)  # poll again: new alerts come with the next probes


async def trigger_loop(session: aiohttp.ClientSession, url: str, ledger: Ledger) -> None:
    while True:
        async with session.post(f"{url}/api/scheduler/trigger/health_checks") as response:
            body = await response.json()
            assert response.status == 200, body
            ledger.triggered.append(body["position"])


async def read_loop(session: aiohttp.ClientSession, url: str, ledger: Ledger, seed: int) -> None:
    rng = random.Random(seed)
    while True:
        path = rng.choice(READ_PATHS)
        async with session.get(url + path) as response:
            await response.read()
            if response.status >= 500:
                ledger.server_errors.append(f"{path}: {response.status}")
            ledger.reads += 1


async def feed_loop(session: aiohttp.ClientSession, url: str, ledger: Ledger) -> None:
    """Follow /ws/live from the last event seen: every event once, in order, no gap."""
    async with session.ws_connect(f"{url}/ws/live?since={ledger.feed_since}&topics=events") as ws:
        greeting = await ws.receive_json()
        assert greeting["type"] == "connection_established", greeting
        await ws.send_json({"type": "ping"})
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            if frame["type"] == "event":
                expected = ledger.feed_since + 1
                assert frame["position"] == expected, (
                    f"live feed: event {frame['position']} after {ledger.feed_since}"
                )
                ledger.feed_since = frame["position"]
                ledger.feed_events += 1


async def drive_load(
    session: aiohttp.ClientSession, url: str, ledger: Ledger, cycle: int, seed: int
) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(acknowledge_loop(session, url, ledger, cycle)),
        asyncio.create_task(trigger_loop(session, url, ledger)),
        asyncio.create_task(read_loop(session, url, ledger, seed)),
        asyncio.create_task(read_loop(session, url, ledger, seed + 1)),
        asyncio.create_task(feed_loop(session, url, ledger)),
    ]


async def settle(tasks: list[asyncio.Task[None]]) -> None:
    """After the kill every load task ends on a dropped connection; anything else
    (a failed assertion) is re-raised."""
    async with asyncio.timeout(15):
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, aiohttp.ClientError | ConnectionError | asyncio.TimeoutError):
            continue
        if isinstance(result, BaseException):
            raise result


async def all_events(
    session: aiohttp.ClientSession, url: str, event_type: str
) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    after: int | None = 0
    while after is not None:
        async with session.get(
            f"{url}/api/events?type={event_type}&after={after}&limit=1000"
        ) as response:
            assert response.status == 200
            page = await response.json()
        found.update({event["position"]: event for event in page["events"]})
        after = page["next_after"]
    return found


async def check_nothing_acknowledged_is_lost(
    session: aiohttp.ClientSession, url: str, ledger: Ledger
) -> None:
    async with session.get(f"{url}/api/alerts?acknowledged=true&limit=5000") as response:
        assert response.status == 200
        alerts = {alert["id"]: alert for alert in (await response.json())["alerts"]}
    lost = sorted(set(ledger.acknowledged) - set(alerts))
    assert not lost, f"acknowledged alerts no longer acknowledged after a restart: {lost}"
    for alert_id in ledger.acknowledged:
        alert = alerts[alert_id]
        assert alert["acknowledged_by"] == ACTOR, alert
        assert alert["note"] == ledger.notes[alert_id], alert
    acks = await all_events(session, url, "AlertAcknowledged")
    for alert_id, position in ledger.acknowledged.items():
        assert position in acks, f"the acknowledgement of {alert_id} at {position} is gone"
        assert acks[position]["payload"]["alert_id"] == alert_id, acks[position]
    # Only this test triggers jobs, one at a time: the k-th trigger answered 200 needs k
    # JobTriggered events at or before the position its answer reported.
    triggers = sorted(await all_events(session, url, "JobTriggered"))
    for k, reported in enumerate(sorted(ledger.triggered), 1):
        found = bisect.bisect_right(triggers, reported)
        assert found >= k, f"{k} triggers answered by position {reported}, {found} in the log"


async def check_log(db: Path, config: Path) -> None:
    """`verify` and `replay` on the file exactly as the kill left it."""
    (verify_rc, verified), (replay_rc, replayed) = await asyncio.gather(
        cli("verify", "--config", str(config), "--db", str(db)),
        cli("replay", "--config", str(config), "--db", str(db)),
    )
    assert verify_rc == 0, verified
    assert replay_rc == 0, replayed
    # Snapshots are written in one transaction: a kill never leaves a torn one behind.
    assert "snapshot was not used" not in replayed, replayed


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


async def answers(session: aiohttp.ClientSession, url: str, attempt: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in COMPARED_PATHS:
        # A parameter no view reads: a fresh answer, not one cached by an earlier attempt.
        fresh = f"{path}{'&' if '?' in path else '?'}attempt={attempt}"
        async with session.get(url + fresh) as response:
            assert response.status == 200, (path, await response.text())
            found[path] = without_volatile(await response.json())
    return found


async def check_rest_equals_rebuild(
    session: aiohttp.ClientSession,
    standin: CrashStandIn,
    db: Path,
    tmp_path: Path,
    ledger: Ledger,
) -> None:
    """Restart on the file the last kill left (snapshot plus tail) next to a service on a
    copy with no snapshot (a rebuild from the log), neither probing, and compare answers."""
    quiet = write_config(tmp_path / "quiet.toml", standin, probing=False)
    rebuilt_db = tmp_path / "rebuilt.db"
    with sqlite3.connect(db) as source, sqlite3.connect(rebuilt_db) as target:
        source.backup(target)
        target.execute("DELETE FROM snapshots")
    source.close()
    target.close()
    async with (
        running(quiet, db, tmp_path / "final-restart.log") as restarted,
        running(quiet, rebuilt_db, tmp_path / "final-rebuild.log") as rebuilt,
    ):
        await asyncio.gather(restarted.listening(), rebuilt.listening())
        await check_nothing_acknowledged_is_lost(session, restarted.url, ledger)
        # Both answer from a log that no longer grows; a window edge (a minute, an hour)
        # passing between the two reads is the only thing that could tell them apart.
        for attempt in range(3):
            first, second = await asyncio.gather(
                answers(session, restarted.url, attempt), answers(session, rebuilt.url, attempt)
            )
            if first == second:
                break
        for path in COMPARED_PATHS:
            assert first[path] == second[path], (
                f"{path}: restart and rebuild differ:\n{json.dumps(first[path])[:3000]}"
                f"\n{json.dumps(second[path])[:3000]}"
            )
        assert first["/api/alerts?limit=5000"]["count"] > 0
        await asyncio.gather(restarted.stop(), rebuilt.stop())


async def test_sigkill_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRYPTOMON_CRASH_SEED", random.randrange(2**32)))
    print(f"\ncrash test: seed {seed} (CRYPTOMON_CRASH_SEED={seed} replays it), {CYCLES} cycles")
    rng = random.Random(seed)
    began = time.monotonic()
    ledger = Ledger()
    db = tmp_path / "crash.db"
    kills_in_start_up = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        CrashStandIn.start() as standin,
        aiohttp.ClientSession(timeout=timeout) as session,
    ):
        config = write_config(tmp_path / "crash.toml", standin)
        for cycle in range(CYCLES):
            log = tmp_path / f"serve-{cycle}.log"
            async with running(config, db, log) as service:
                # The last cycle runs under load, so the final restart has a tail to fold.
                if 0 < cycle < CYCLES - 1 and rng.random() < 0.2:
                    # Killed while it starts: folding the tail, saving its first snapshot.
                    await asyncio.sleep(rng.uniform(0.05, 0.8))
                    kills_in_start_up += 1
                    continue
                await service.listening()
                await check_nothing_acknowledged_is_lost(session, service.url, ledger)
                tasks = await drive_load(session, service.url, ledger, cycle, rng.randrange(2**32))
                await asyncio.sleep(rng.uniform(0.3, 1.5))  # the random moment of the kill
                await service.kill()
                await settle(tasks)
            await check_log(db, config)
        await check_rest_equals_rebuild(session, standin, db, tmp_path, ledger)
        hooks = standin.hooks
    elapsed = time.monotonic() - began
    print(
        f"crash test: {CYCLES} kills ({kills_in_start_up} during start-up) in {elapsed:.1f}s;"
        f" {len(ledger.acknowledged)} acknowledgements and {len(ledger.triggered)} triggers"
        f" kept, {ledger.reads} REST reads, {ledger.feed_events} live-feed events,"
        f" {hooks} webhook deliveries"
    )
    assert not ledger.server_errors, ledger.server_errors[:20]
    # The load must have been real: many writes acknowledged and checked after kills.
    assert len(ledger.acknowledged) >= CYCLES // 2, len(ledger.acknowledged)
    assert ledger.triggered and ledger.feed_events
