"""Reload without restart, through the service as users run it (`python -m cryptomon
serve` in a subprocess) with a stand-in provider on 127.0.0.1: SIGHUP,
`POST /api/config/reload` and `[server] watch_config` apply the file's difference, refuse
an invalid file without changing anything, and leave the live feed's clients connected."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from standins import StandIn
from test_service import free_port

TOKEN = "reload-test-token"


def provider(name: str, url: str, *, category: str = "news") -> str:
    return (
        f'[[providers]]\nname = "{name}"\ncategory = "{category}"\nbase_url = "{url}"\n'
        'health_path = "/healthy"\ninterval = "1h"\n'
    )


class Running:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"


@asynccontextmanager
async def serve(
    config: Path, db: Path, environ: dict[str, str] | None = None
) -> AsyncIterator[Running]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", "serve", "--config", str(config), "--db", str(db),
        "--port", str(port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(environ or {})},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(30):
            while b"monitoring" not in (line := await process.stdout.readline()):
                assert line, "the service ended before it listened"
        yield Running(process, port)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 20.0) -> Any:
    """Poll `check` until it returns something truthy, within a deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.05)  # a poll interval, not a wait for something to happen
    raise AssertionError(f"timed out waiting for {what}")


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, await response.json(content_type=None)


async def post(
    session: aiohttp.ClientSession, url: str, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(url, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def provider_names(session: aiohttp.ClientSession, url: str) -> set[str]:
    status, body = await get(session, f"{url}/api/providers")
    assert status == 200, body
    return {p["name"] for p in body["providers"]}


async def test_sighup_applies_a_valid_file_refuses_an_invalid_one_and_keeps_the_live_feed(
    standin: StandIn, tmp_path: Path
) -> None:
    config = tmp_path / "service.toml"
    config.write_text(provider("Kept", standin.url("")) + provider("Dropped", standin.url("")))
    async with (
        serve(config, tmp_path / "service.db") as service,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{service.url}/ws/live") as feed,
    ):
        hello = await feed.receive_json(timeout=10)
        assert hello["type"] == "connection_established"
        assert await provider_names(session, service.url) == {"Kept", "Dropped"}

        # A valid file: one provider added, one removed, one kept as it was.
        config.write_text(provider("Kept", standin.url("")) + provider("Added", standin.url("")))
        service.process.send_signal(signal.SIGHUP)

        async def applied() -> bool:
            return await provider_names(session, service.url) == {"Kept", "Added"}

        await until(applied, "the reload's providers in /api/providers")
        status, removed = await get(session, f"{service.url}/api/events?type=ProviderRemoved")
        assert status == 200
        assert [e["payload"]["provider"] for e in removed["events"]] == ["Dropped"]
        # Added is scheduled: a run of the health checks probes Kept and Added, no more.
        status, triggered = await post(
            session, f"{service.url}/api/scheduler/trigger/health_checks"
        )
        assert (status, triggered["tasks_run"]) == (200, 2)

        # An invalid file: nothing changes, /health stays 200 and names the errors.
        config.write_text(provider("Kept", standin.url("")) + 'interval = "often"\n')
        service.process.send_signal(signal.SIGHUP)

        async def refused() -> Any:
            status, health = await get(session, f"{service.url}/health")
            assert status == 200, health
            component = health["components"]["config"]
            return component if component["status"] == "error" else None

        component = await until(refused, "the config error in /health")
        assert any(str(config) in error for error in component["errors"]), component
        status, health = await get(session, f"{service.url}/health")
        assert (status, health["status"], health["problems"]) == (200, "healthy", [])
        assert await provider_names(session, service.url) == {"Kept", "Added"}
        status, ready = await get(session, f"{service.url}/readyz")
        assert status == 200, ready

        # The API's answer to the same file: 422, every error listed.
        status, problem = await post(session, f"{service.url}/api/config/reload")
        assert status == 422, problem
        assert problem["errors"] == component["errors"]

        # A valid file again, with a port the running server cannot take without a restart.
        config.write_text(
            f"[server]\nport = {free_port()}\n"
            + provider("Kept", standin.url(""))
            + provider("Added", standin.url(""), category="sentiment")
        )
        status, answer = await post(session, f"{service.url}/api/config/reload")
        assert status == 200, answer
        assert (answer["added"], answer["removed"], answer["changed"]) == ([], [], ["Added"])
        assert answer["needs_restart"] == ["server.port"]
        status, health = await get(session, f"{service.url}/health")
        assert health["components"]["config"]["status"] == "ok"
        status, added = await get(session, f"{service.url}/api/providers/Added")
        assert (status, added["category"]) == (200, "sentiment")

        # The live feed's client was never dropped: still connected, and still fed.
        assert not feed.closed
        await post(session, f"{service.url}/api/scheduler/trigger/health_checks")
        async with asyncio.timeout(10):
            while (message := await feed.receive_json())["type"] != "new_log_entry":
                assert message["type"] != "close", message
        assert not feed.closed


async def test_a_threshold_change_by_reload_then_replay_equals_live(
    standin: StandIn, tmp_path: Path
) -> None:
    config = tmp_path / "service.toml"
    failing = (
        '[[providers]]\nname = "Failing"\ncategory = "news"\n'
        f'base_url = "{standin.url("")}"\nhealth_path = "/error500"\ninterval = "1h"\n'
    )
    config.write_text("[monitoring]\nonline_after_successes = 1\n" + failing)
    db = tmp_path / "service.db"
    environ = {"CRYPTOMON_API_TOKEN": TOKEN}
    trigger = "/api/scheduler/trigger/health_checks"
    async with serve(config, db, environ) as service, aiohttp.ClientSession() as session:
        # A token is configured: the reload is a write like the others.
        status, problem = await post(session, f"{service.url}/api/config/reload")
        assert status == 401, problem
        assert (await post(session, service.url + trigger, TOKEN))[0] == 200
        status, failed = await get(session, f"{service.url}/api/providers/Failing")
        # One failure of the three the file began with (and one probe, too few to judge a
        # failure ratio from): not judged yet.
        assert (failed["status"], failed["consecutive_failures"]) == ("unknown", 1)

        config.write_text("[monitoring]\noffline_after_failures = 2\n" + failing)
        status, answer = await post(session, f"{service.url}/api/config/reload", TOKEN)
        assert status == 200, answer
        assert answer["thresholds_changed"] == ["offline_after_failures", "online_after_successes"]
        assert (answer["added"], answer["removed"], answer["changed"]) == ([], [], [])
        assert (await post(session, service.url + trigger, TOKEN))[0] == 200
        status, failed = await get(session, f"{service.url}/api/providers/Failing")
        assert failed["status"] == "offline"  # two failures: the new threshold judged it

        status, changes = await get(session, f"{service.url}/api/events?type=MonitoringChanged")
        thresholds = [
            (e["payload"]["offline_after_failures"], e["payload"]["online_after_successes"])
            for e in changes["events"]
        ]
        assert sorted(thresholds) == [(2, 2), (3, 1)]  # at start-up, then by the reload
        service.process.send_signal(signal.SIGTERM)
        assert await service.process.wait() == 0

    replay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", "replay", "--config", str(config), "--db", str(db),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(replay.communicate(), 60)
    assert replay.returncode == 0, output.decode()
    assert "OK: replayed" in output.decode()
    assert "snapshot was not used" not in output.decode()


async def test_watch_config_reloads_when_the_file_changes(standin: StandIn, tmp_path: Path) -> None:
    """`[server] watch_config = true`: a changed modification time is a reload, with no
    signal and no request (the watch looks every WATCH_INTERVAL_SECONDS)."""
    config = tmp_path / "service.toml"
    watched = "[server]\nwatch_config = true\n"
    config.write_text(watched + provider("Kept", standin.url("")))
    async with (
        serve(config, tmp_path / "service.db") as service,
        aiohttp.ClientSession() as session,
    ):
        assert await provider_names(session, service.url) == {"Kept"}
        status, health = await get(session, f"{service.url}/health")
        assert health["components"]["config"]["last_reload_applied"] is None

        # Written aside and renamed over the file, so the watch never reads it half
        # written; its modification time set 10 s past the old one, so that a file system
        # with a coarse clock cannot give the new file the old file's time.
        before = config.stat().st_mtime_ns
        staged = tmp_path / "service.toml.new"
        staged.write_text(
            watched + provider("Kept", standin.url("")) + provider("Added", standin.url(""))
        )
        changed = before + 10 * 10**9
        os.utime(staged, ns=(changed, changed))
        os.replace(staged, config)
        assert config.stat().st_mtime_ns == changed != before

        async def applied() -> bool:
            return await provider_names(session, service.url) == {"Kept", "Added"}

        await until(applied, "the watched file's provider in /api/providers")
        status, health = await get(session, f"{service.url}/health")
        component = health["components"]["config"]
        assert (component["status"], component["errors"]) == ("ok", [])
        assert component["last_reload_applied"] is not None
        status, registered = await get(session, f"{service.url}/api/events?type=ProviderRegistered")
        names = [e["payload"]["provider"] for e in registered["events"]]
        assert sorted(names) == ["Added", "Kept"]  # one reload: Added registered once
        # Added is scheduled: a run of the health checks probes both.
        status, triggered = await post(
            session, f"{service.url}/api/scheduler/trigger/health_checks"
        )
        assert (status, triggered["tasks_run"]) == (200, 2)
