"""Alert notifications with real receivers on 127.0.0.1.

The notifier runs against a real event store in tmp_path; events are appended
as the monitor would append them, and real aiohttp servers stand in for a
webhook, Slack, Discord and Telegram, answering 200, 500 or not at all as a
test asks. The crash test runs the real service (`python -m cryptomon serve`)
and kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import pytest
from aiohttp import web
from msgspec import structs
from pytest_aiohttp import AiohttpClient
from standins import closed_port

from cryptomon.config import ConfigError, load_config
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import (
    AlertAcknowledged,
    MaintenanceWindowScheduled,
    ProbeOutcome,
    ProbeRecorded,
    ProviderRegistered,
    RateLimitChanged,
    RegionJoined,
    RegionLost,
)
from cryptomon.http.settings import Settings
from cryptomon.notify import Notifier, outbox
from cryptomon.notify.messages import encode, renotification
from cryptomon.notify.notifier import FOLDS
from cryptomon.notify.outbox import OutboxRow
from cryptomon.probing.monitor import MONITORING_STREAM, monitoring_of
from cryptomon.projections import Projections
from cryptomon.readmodels import projection_settings
from cryptomon.service.app import create_app

T0 = 1_800_000_000.0
HMAC_SECRET = "hmac-secret-5a1f0e9c"
HEADER_SECRET = "header-secret-77d2b0"
QUERY_SECRET = "query-secret+9c1/e4"  # percent-encoded in the URL, decoded by the receiver
TELEGRAM_TOKEN = "123456:telegram-token-AAEh3k"
SECRETS = (HMAC_SECRET, HEADER_SECRET, QUERY_SECRET, TELEGRAM_TOKEN)

PROVIDERS = """
[monitoring]
offline_after_failures = 1
online_after_successes = 2

[[providers]]
name = "A"
category = "market_data"
base_url = "https://a.example"
interval = "1h"

[[providers]]
name = "R&D <B>"
category = "rpc_nodes"
base_url = "https://b.example"
interval = "1h"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def eventually(condition: Callable[[], bool], within: float = 30.0) -> None:
    """Poll `condition` until it holds; fail at the deadline."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


# ---- receivers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]


class Receiver:
    """A webhook receiver: records every request, and answers 200 unless told to answer
    500 (echoing the path and query it was called on and the credential of its
    Authorization header, secrets and all) or to hang first."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Received] = []
        self.delivered: Counter[str] = Counter()  # idempotency key -> 200s answered
        self.fail_next = 0
        self.hang_next = 0
        self.hanging = asyncio.Event()
        self.hung: list[Received] = []  # the requests it never answered

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ok(self, path: str | None = None) -> list[Received]:
        """Requests answered 200, in order, optionally on one path."""
        done = [r for r in self.requests if self.delivered[r.key]]
        seen: set[str] = set()
        unique = []
        for request in done:
            if (path is None or request.path == path) and request.key not in seen:
                seen.add(request.key)
                unique.append(request)
        return unique

    @classmethod
    @asynccontextmanager
    async def start(cls, port: int = 0) -> AsyncIterator[Receiver]:
        receiver = cls()
        app = web.Application()
        app.router.add_post("/{tail:.*}", receiver._handle)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            receiver.port = runner.addresses[0][1]
            yield receiver
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received(request.path, dict(request.headers), await request.read())
        self.requests.append(received)
        if self.hang_next:
            self.hang_next -= 1
            self.hung.append(received)
            self.hanging.set()
            await asyncio.Event().wait()  # until the client gives up
        if self.fail_next:
            self.fail_next -= 1
            echoed = f"boom at {request.path}"
            if request.query:
                echoed += f" {dict(request.query)}"
            if "Authorization" in request.headers:
                echoed += f", credential {request.headers['Authorization'].rpartition(' ')[2]}"
            return web.json_response({"error": echoed}, status=500)
        self.delivered[received.key] += 1
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver.start() as server:
        yield server


# ---- a notifier over a real store ---------------------------------------------------------


def registered(name: str, category: str) -> ProviderRegistered:
    return ProviderRegistered(name, category, "https://x.example", "/", "every 1h", 10_000, 2_000)


def probe(provider: str, at: float, outcome: ProbeOutcome = "failed") -> ProbeRecorded:
    return ProbeRecorded(
        provider,
        "health",
        "/",
        outcome,
        started_at=at,
        latency_ms=5.0,
        error_kind=None if outcome == "success" else "connection_refused",
        error_message=None if outcome == "success" else "connection refused",
    )


@dataclass
class Rig:
    store: EventStore
    notifier: Notifier

    async def append(self, stream: str, *events: Any) -> int:
        [*_, position] = await self.store.append(stream, list(events))
        await self.notifier.wait_for(position)
        return position

    async def take_down(self, provider: str = "A", at: float = T0) -> int:
        """A failed probe takes the provider offline; the offline alert's id."""
        position = await self.append(f"provider:{provider}", probe(provider, at))
        [alert] = self.notifier.projections.alerts.query(provider=provider, open_only=True)
        assert (alert.kind, alert.position) == ("offline", position)
        return alert.id

    def raised_at(self, alert_id: int) -> int:
        """The position of the event that raised the alert."""
        alert = self.notifier.projections.alerts.get(alert_id)
        assert alert is not None
        return alert.position

    async def bring_up(self, provider: str = "A", at: float = T0 + 60) -> None:
        await self.append(f"provider:{provider}", probe(provider, at, "success"))
        await self.append(f"provider:{provider}", probe(provider, at + 1, "success"))


Build = Callable[..., Any]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Build]:
    """Start a notifier for the channels in a TOML snippet; stop everything at the end."""
    started: list[Rig] = []

    async def build(channels: str, environ: Mapping[str, str] | None = None, **options: Any) -> Rig:
        path = tmp_path / "notify.toml"
        path.write_text(PROVIDERS + channels)
        config = load_config(path)
        store = await EventStore.open(tmp_path / "n.db")
        options = {"retry_base": 0.01, "retry_cap": 0.05, **options}
        notifier = Notifier(
            store,
            config.notifications,
            projection_settings(config),
            categories={p.name: p.category for p in config.providers},
            environ=environ or {},
            **options,
        )
        await notifier.start()
        built = Rig(store, notifier)
        started.append(built)
        await built.append("config:A", registered("A", "market_data"))
        await built.append("config:B", registered("R&D <B>", "rpc_nodes"))
        # The file's thresholds, recorded as the service's monitor records them at start-up.
        await built.append(MONITORING_STREAM, monitoring_of(config))
        return built

    yield build
    for built in started:
        await built.notifier.stop()
        await built.store.close()


def webhook(name: str, url: str, extra: str = "") -> str:
    return f'\n[[notifications]]\nname = "{name}"\nkind = "webhook"\nurl = "{url}"\n{extra}\n'


def database_bytes(directory: Path, name: str) -> bytes:
    """The database file and its WAL and shared-memory files, as stored."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob(name + "*")))


def outbox_rows(db: Path) -> list[tuple[str, str, int, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT idempotency_key, status, attempts, last_error FROM outbox ORDER BY position"
        ).fetchall()


# ---- message formats -----------------------------------------------------------------------


async def test_webhook_json_signature_headers_and_idempotency_key(
    rig: Build, receiver: Receiver
) -> None:
    channel = webhook(
        "ops",
        receiver.url("/hook"),
        'hmac_secret_env = "HOOK_SECRET"\n'
        'headers = { "X-Key" = "env:HOOK_HEADER", "X-Team" = "sre" }\n'
        'group = "alert"',  # each alert on its own (see the incident tests for the default)
    )
    env = {"HOOK_SECRET": HMAC_SECRET, "HOOK_HEADER": HEADER_SECRET}
    built = await rig(channel, env)
    alert_id = await built.take_down()
    await eventually(lambda: len(receiver.ok()) == 1)

    [request] = receiver.requests
    body = request.json
    position = built.raised_at(alert_id)
    assert request.key == f"ops:raised:{alert_id}:{position}" == body["idempotency_key"]
    assert body["event"] == "raised"
    assert (body["provider"], body["category"]) == ("A", "market_data")
    assert body["severity"] == "critical"
    assert body["position"] == position
    assert body["timestamp"] == "2027-01-15T08:00:00Z"
    assert body["alert"]["id"] == alert_id and body["alert"]["kind"] == "offline"
    assert body["alert"]["acknowledged"] is False
    assert "A is offline" in body["message"]
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Key"] == HEADER_SECRET
    assert request.headers["X-Team"] == "sre"
    expected = hmac.new(HMAC_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Cryptomon-Signature"] == f"sha256={expected}"


async def test_slack_discord_and_telegram_bodies(rig: Build, receiver: Receiver) -> None:
    # Each alert on its own (the incidents' bodies: test_incident_bodies_for_chats).
    channels = f"""
[[notifications]]
name = "slack"
kind = "slack"
url_env = "SLACK_URL"
group = "alert"

[[notifications]]
name = "discord"
kind = "discord"
url = "{receiver.url("/discord")}"
group = "alert"

[[notifications]]
name = "telegram"
kind = "telegram"
url_env = "TELEGRAM_URL"
chat_id = -100123
group = "alert"
"""
    env = {
        "SLACK_URL": receiver.url("/services/T0/B0/slack-secret"),
        "TELEGRAM_URL": receiver.url(f"/bot{TELEGRAM_TOKEN}/sendMessage"),
    }
    built = await rig(channels, env)
    await built.take_down("R&D <B>")
    await eventually(lambda: len(receiver.ok()) == 3)

    [slack] = receiver.ok("/services/T0/B0/slack-secret")
    body = slack.json
    # Slack reads <...> as a link or mention: &, < and > are escaped.
    assert body["text"] == "[CRITICAL] R&amp;D &lt;B&gt;: offline alert raised"
    assert body["blocks"][0]["type"] == "section"
    assert "R&amp;D &lt;B&gt; is offline" in body["blocks"][0]["text"]["text"]
    facts = body["blocks"][1]["fields"]
    assert {"type": "mrkdwn", "text": "*Category*\nrpc_nodes"} in facts
    assert {"type": "mrkdwn", "text": "*Provider*\nR&amp;D &lt;B&gt;"} in facts
    assert slack.key.startswith("slack:raised:")

    [discord] = receiver.ok("/discord")
    body = discord.json
    assert body["content"] == "[CRITICAL] R&D <B>: offline alert raised"
    [embed] = body["embeds"]
    assert embed["title"] == "R&D <B>: offline alert raised"
    assert embed["color"] == 0xE01E5A
    assert {"name": "Provider", "value": "R&D <B>", "inline": True} in embed["fields"]
    assert embed["footer"]["text"] == discord.key
    assert body["allowed_mentions"] == {"parse": []}

    [telegram] = receiver.ok(f"/bot{TELEGRAM_TOKEN}/sendMessage")
    body = telegram.json
    assert body["chat_id"] == -100123
    assert body["parse_mode"] == "HTML"
    assert body["text"].startswith("<b>[CRITICAL] R&amp;D &lt;B&gt;: offline alert raised</b>\n")
    assert "<B>" not in body["text"]


# ---- delivery: retries, time-outs, isolation ---------------------------------------------


async def test_retries_after_500s_then_delivers_once(
    rig: Build, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.fail_next = 2
    built = await rig(webhook("ops", receiver.url("/hook")))
    alert_id = await built.take_down()
    await eventually(lambda: len(receiver.ok()) == 1)
    keys = [request.key for request in receiver.requests]
    position = built.raised_at(alert_id)
    # The incident the offline alert opened (its first), the same key each time.
    assert keys == [f"ops:incident_opened:1:{position}"] * 3
    assert [r.body for r in receiver.requests[1:]] == [receiver.requests[0].body] * 2
    assert receiver.delivered[keys[0]] == 1
    await eventually(lambda: built.notifier.stats()[0].delivered == 1)
    [stats] = built.notifier.stats()
    assert (stats.pending, stats.retrying, stats.gave_up, stats.sent_total) == (0, 0, 0, 1)
    assert stats.failed_attempts_total == 2
    assert stats.last_error is not None and stats.last_error.startswith("HTTP 500")
    error = 'HTTP 500: {"error": "boom at /hook"}'
    assert outbox_rows(tmp_path / "n.db") == [(keys[0], "delivered", 3, error)]


async def test_a_receiver_that_hangs_is_timed_out_and_retried(
    rig: Build, receiver: Receiver
) -> None:
    receiver.hang_next = 1
    built = await rig(webhook("ops", receiver.url("/hook"), 'timeout = "200ms"'))
    await built.take_down()
    await eventually(lambda: len(receiver.ok()) == 1)
    assert len(receiver.requests) == 2
    assert receiver.requests[0].key == receiver.requests[1].key
    [stats] = built.notifier.stats()
    assert stats.last_error == "timed out after 0.2s"
    assert stats.failed_attempts_total == 1


async def test_a_hanging_channel_does_not_delay_another(rig: Build) -> None:
    async with Receiver.start() as stuck, Receiver.start() as healthy:
        stuck.hang_next = 100
        channels = webhook("stuck", stuck.url("/"), 'timeout = "30s"') + webhook(
            "healthy", healthy.url("/")
        )
        built = await rig(channels)
        await built.take_down()
        await asyncio.wait_for(stuck.hanging.wait(), 10)
        await eventually(lambda: len(healthy.ok()) == 1)
        await built.take_down("R&D <B>")
        await eventually(lambda: len(healthy.ok()) == 2)
        # The stuck channel still has its first request in flight, the second queued.
        assert len(stuck.requests) == 1 and not stuck.delivered

        # The receiver answers before the outbox row is marked: wait for the mark.
        def stats_by_name() -> dict[str, Any]:
            return {s.name: s for s in built.notifier.stats()}

        await eventually(lambda: stats_by_name()["healthy"].delivered == 2)
        stats = stats_by_name()
        assert stats["stuck"].pending == 2 and stats["stuck"].failed_attempts_total == 0
        await built.notifier.stop()  # abandons the stuck request: its row stays pending


async def test_gives_up_after_the_last_attempt(
    rig: Build, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.fail_next = 1000
    built = await rig(webhook("ops", receiver.url("/hook")), max_attempts=3)
    await built.take_down()
    await eventually(lambda: built.notifier.stats()[0].gave_up == 1)
    assert len(receiver.requests) == 3
    [stats] = built.notifier.stats()
    assert (stats.failed, stats.pending, stats.delivered) == (1, 0, 0)
    [(_, status, attempts, _)] = outbox_rows(tmp_path / "n.db")
    assert (status, attempts) == ("failed", 3)


async def test_missing_secret_env_is_a_failed_attempt_that_names_the_variable(
    rig: Build, receiver: Receiver
) -> None:
    built = await rig(
        webhook("ops", receiver.url("/hook"), 'hmac_secret_env = "UNSET_SECRET"'),
        max_attempts=1,
    )
    await built.take_down()
    await eventually(lambda: built.notifier.stats()[0].gave_up == 1)
    assert not receiver.requests
    error = built.notifier.stats()[0].last_error
    assert error == "hmac_secret_env: environment variable UNSET_SECRET is not set"


# ---- what is sent --------------------------------------------------------------------------


async def test_filters_by_severity_provider_category_and_event(
    rig: Build, receiver: Receiver
) -> None:
    each = 'group = "alert"\n'  # each alert on its own: acknowledgements are messages too
    channels = (
        webhook("critical", receiver.url("/critical"), each + 'severities = ["critical"]')
        + webhook("b-only", receiver.url("/b-only"), each + 'providers = ["r&d <b>"]')
        + webhook("market", receiver.url("/market"), each + 'categories = ["market_data"]')
        + webhook(
            "endings", receiver.url("/endings"), each + 'events = ["resolved", "acknowledged"]'
        )
        + webhook("limits", receiver.url("/limits"), each + 'events = ["rate_limit"]')
    )
    built = await rig(channels)
    alert_id = await built.take_down("A")
    usage = RateLimitChanged("R&D <B>", 85, 100, 60.0, 85.0, observed_at=T0 + 5)
    await built.append("provider:R&D <B>", usage)
    await built.append("alerts", AlertAcknowledged(alert_id, "alice", T0 + 30, "on it"))
    await built.bring_up("A")
    expected = {
        "/critical": [("raised", "A"), ("acknowledged", "A"), ("resolved", "A")],
        "/b-only": [("rate_limit", "R&D <B>"), ("raised", "R&D <B>")],
        "/market": [("raised", "A"), ("acknowledged", "A"), ("resolved", "A")],
        "/endings": [("acknowledged", "A"), ("resolved", "A")],
        "/limits": [("rate_limit", "R&D <B>")],
    }
    total = sum(len(v) for v in expected.values())
    await eventually(lambda: len(receiver.ok()) == total)
    for path, wanted in expected.items():
        got = sorted((r.json["event"], r.json["provider"]) for r in receiver.ok(path))
        assert got == sorted(wanted), path
    [ack] = [r.json for r in receiver.ok("/endings") if r.json["event"] == "acknowledged"]
    assert ack["title"] == "A: offline alert acknowledged by alice"
    assert ack["alert"]["note"] == "on it"
    [limit] = receiver.ok("/limits")
    assert limit.json["rate_limit"] == {"percentage": 85.0, "used": 85, "limit": 100}
    assert limit.key == f"limits:rate_limit:R&D <B>:{limit.json['position']}"


async def test_renotifies_an_open_alert_each_interval_until_acknowledged(
    rig: Build, receiver: Receiver
) -> None:
    now = [T0]
    built = await rig(
        webhook("ops", receiver.url("/hook"), 'renotify_interval = "10m"\ngroup = "alert"'),
        clock=lambda: now[0],
        renotify_check_every=3600.0,  # the test drives the checks
    )
    notifier = built.notifier
    alert_id = await built.take_down(at=T0)
    await eventually(lambda: len(receiver.ok()) == 1)

    for minutes, queued in [(5, 0), (10, 1), (10, 0), (19, 0), (20, 1), (21, 0)]:
        now[0] = T0 + minutes * 60
        assert await notifier.check_renotify() == queued, minutes
    await eventually(lambda: len(receiver.ok()) == 3)
    reminders = [r for r in receiver.ok() if r.json["event"] == "renotify"]
    assert [r.key for r in reminders] == [f"ops:renotify:{alert_id}:{n}" for n in (1, 2)]
    assert reminders[0].json["title"] == "A: offline alert still open"

    await built.append("alerts", AlertAcknowledged(alert_id, "bob", T0 + 25 * 60))
    for minutes in (30, 40, 120):
        now[0] = T0 + minutes * 60
        assert await notifier.check_renotify() == 0
    await eventually(lambda: len(receiver.ok()) == 4)
    assert receiver.ok()[-1].json["event"] == "acknowledged"


async def test_no_reminder_of_an_open_alert_goes_out_while_a_window_covers_its_provider(
    rig: Build, receiver: Receiver
) -> None:
    now = [T0]
    built = await rig(
        webhook("ops", receiver.url("/hook"), 'renotify_interval = "10m"\ngroup = "alert"'),
        clock=lambda: now[0],
        renotify_check_every=3600.0,  # the test drives the checks
    )
    await built.take_down(at=T0)
    await eventually(lambda: len(receiver.ok()) == 1)
    window = MaintenanceWindowScheduled(
        window_id="api:w", name="upgrade", source="api", providers=("A",),
        start=T0 + 5 * 60, end=T0 + 25 * 60,
    )  # fmt: skip
    await built.append("maintenance:api:w", window)
    for minutes, queued in [(10, 0), (20, 0), (24, 0), (25, 1), (26, 0)]:
        now[0] = T0 + minutes * 60
        assert await built.notifier.check_renotify() == queued, minutes
    await eventually(lambda: len(receiver.ok()) == 2)
    # One reminder after the window, for the interval it ends in: not one per interval missed.
    assert [r.json["event"] for r in receiver.ok()] == ["raised", "renotify"]


async def test_after_alerts_are_renumbered_a_restart_does_not_remind_twice_in_an_interval(
    tmp_path: Path, receiver: Receiver
) -> None:
    """An upgrade that numbers the alerts otherwise (the alerts fold's own numbers replaced
    `position * 10 + slot`): the reminder queued before it, keyed by the old id, is found
    by the alert's name, and the next interval's goes out under the new id."""
    path = tmp_path / "notify.toml"
    path.write_text(
        PROVIDERS
        + webhook("ops", receiver.url("/hook"), 'renotify_interval = "10m"\ngroup = "alert"')
    )
    config = load_config(path)
    now = [T0]

    def notifier(store: EventStore) -> Notifier:
        settings = projection_settings(config)
        # The test drives the checks.
        return Notifier(
            store, config.notifications, settings, clock=lambda: now[0], renotify_check_every=3600
        )

    async with await EventStore.open(tmp_path / "n.db") as store:
        first = notifier(store)
        await first.start()
        [position] = await store.append("provider:A", [probe("A", T0)])
        await first.wait_for(position)
        [alert] = first.projections.alerts.query(open_only=True)
        await eventually(lambda: len(receiver.ok()) == 1)  # raised
        # The first reminder as the cryptomon of `position * 10 + slot` queued it.
        now[0] = T0 + 11 * 60
        old_style = renotification("ops", structs.replace(alert, id=position * 10), 1, None, now[0])
        row = OutboxRow(old_style.idempotency_key, "ops", position, encode(old_style), T0, T0)
        await store.exclusive(lambda conn: outbox.store_rows(conn, [row], None, now[0]))
        await first.stop()

        second = notifier(store)
        await second.start()
        await eventually(lambda: len(receiver.ok()) == 2)  # the pending reminder, delivered
        now[0] = T0 + 12 * 60
        assert await second.check_renotify() == 0  # reminded in this interval already
        now[0] = T0 + 20 * 60
        assert await second.check_renotify() == 1
        await eventually(lambda: len(receiver.ok()) == 3)
        await second.stop()
    assert sorted(r.key for r in receiver.ok()) == sorted(
        [
            f"ops:raised:{alert.id}:{position}",
            f"ops:renotify:{position * 10}:1",
            f"ops:renotify:{alert.id}:2",
        ]
    )


async def test_a_restart_resumes_from_the_checkpoint_and_sends_nothing_twice(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "notify.toml"
    path.write_text(PROVIDERS + webhook("ops", receiver.url("/hook")))
    config = load_config(path)

    def notifier(store: EventStore) -> Notifier:
        return Notifier(store, config.notifications, projection_settings(config))

    async with await EventStore.open(tmp_path / "n.db") as store:
        first = notifier(store)
        await first.start()
        # The file's thresholds, as the service records them at start-up.
        await store.append(MONITORING_STREAM, [monitoring_of(config)])
        await store.append("provider:A", [probe("A", T0)])
        await eventually(lambda: len(receiver.ok()) == 1)
        await eventually(lambda: first.stats()[0].delivered == 1)
        await first.stop()
        # Appended while nobody follows: announced by the next notifier.
        await store.append("provider:A", [probe("A", T0 + 60, "success")] * 2)

        second = notifier(store)
        await second.start()
        await eventually(lambda: len(receiver.ok()) == 2)
        await second.wait_for(store.head)
        # One delivered before the restart (counted from the outbox) and one after it.
        await eventually(lambda: second.stats()[0].delivered == 2)
        await second.stop()
    # The channel groups by incident (the default): the outage opened one, and closed it.
    assert [r.json["event"] for r in receiver.requests] == ["incident_opened", "incident_closed"]
    assert all(count == 1 for count in receiver.delivered.values())


async def test_folds_only_what_it_reads_and_resumes_from_a_checkpoint_of_every_projection(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Providers, alerts, incidents and rate limits alone (and what they read) are folded
    and checkpointed; a checkpoint of every projection, as notifiers wrote before, is still
    resumed from: the others' versions do not matter."""
    path = tmp_path / "notify.toml"
    path.write_text(PROVIDERS + webhook("ops", receiver.url("/hook")))
    config = load_config(path)
    settings = projection_settings(config)

    async with await EventStore.open(tmp_path / "n.db") as store:
        first = Notifier(store, config.notifications, settings)
        await first.start()
        # The file's thresholds, as the service records them at start-up.
        await store.append(MONITORING_STREAM, [monitoring_of(config)])
        await store.append("provider:A", [probe("A", T0)])
        await first.wait_for(store.head)
        assert first.projections.folds == FOLDS
        assert not first.projections.metrics.state.health
        assert not first.projections.failures.state.hours
        await first.stop()
        saved = await store.exclusive(outbox.load_checkpoint)
        assert saved is not None
        assert set(msgspec.msgpack.decode(saved.state)) == {*FOLDS, "__meta__"}

        # As notifiers wrote before: every projection, metrics at a version no longer built.
        everything = Projections(settings)
        for recorded in await store.read_all():
            everything.fold(recorded)
        snapshot = everything.snapshot_state()
        snapshot["metrics"] = (1, snapshot["metrics"][1])
        older = outbox.Checkpoint(store.head, msgspec.msgpack.encode(snapshot))
        await store.exclusive(lambda conn: outbox.store_rows(conn, [], older, time.time()))
        await store.append("provider:A", [probe("A", T0 + 60, "success")] * 2)
        second = Notifier(store, config.notifications, settings)
        with caplog.at_level(logging.WARNING, logger="cryptomon.notify.notifier"):
            await second.start()
        await eventually(lambda: len(receiver.ok()) == 2)
        await second.stop()
    assert "discarding the checkpoint" not in caplog.text
    assert [r.json["event"] for r in receiver.requests] == ["incident_opened", "incident_closed"]


# ---- incidents: one message when an outage opens, one when it closes ----------------------


def collection(provider: str, at: float, outcome: ProbeOutcome = "failed") -> ProbeRecorded:
    return structs.replace(probe(provider, at, outcome), kind="collection", endpoint="/data")


async def test_an_incident_is_one_message_opening_one_escalating_and_one_closing(
    rig: Build, receiver: Receiver
) -> None:
    """A channel groups by incident by default: the failure rate (a warning) opens A's
    incident, offline (critical) escalates it, the acknowledgement and the alerts' own
    endings are no messages, and the incident closes with its last alert. A channel with
    `group = "alert"` gets each alert instead, and no incident; a rate limit goes to both."""
    channels = webhook("ops", receiver.url("/ops")) + webhook(
        "each", receiver.url("/each"), 'group = "alert"'
    )
    built = await rig(channels)
    # Five failed collection probes: 5 of 5, over the failure rate, from the fifth.
    for i in range(5):
        opened_at = await built.append("provider:A", collection("A", T0 + i))
    escalated_at = await built.append("provider:A", probe("A", T0 + 10))  # offline
    [offline] = built.notifier.projections.alerts.query(provider="A", severity="critical")
    await built.append("alerts", AlertAcknowledged(offline.id, "alice", T0 + 20, "on it"))
    await built.append("provider:R&D <B>", RateLimitChanged("R&D <B>", 85, 100, 60.0, 85.0, T0))
    # Back, long enough after for the failure rate's window to have let go of the failures.
    await built.append("provider:A", probe("A", T0 + 1000, "success"))
    closed_at = await built.append("provider:A", probe("A", T0 + 1001, "success"))

    await eventually(lambda: len(receiver.ok("/ops")) == 5 and len(receiver.ok("/each")) == 7)
    ops = [r.json for r in receiver.ok("/ops")]
    # The rate limit's alert and notice, in the order the fold announced them.
    limit_at = closed_at - 2
    assert sorted((n["position"], n["event"], n["severity"]) for n in ops) == [
        (opened_at, "incident_opened", "warning"),
        (escalated_at, "incident_escalated", "critical"),
        (limit_at, "raised", "warning"),
        (limit_at, "rate_limit", "warning"),
        (closed_at, "incident_closed", "critical"),
    ]
    assert sorted(r.key for r in receiver.ok("/ops")) == sorted(
        [
            f"ops:incident_opened:1:{opened_at}",
            f"ops:incident_escalated:1:{escalated_at}",
            f"ops:raised:{offline.id + 1}:{limit_at}",
            f"ops:rate_limit:R&D <B>:{limit_at}",
            f"ops:incident_closed:1:{closed_at}",
        ]
    )
    opened, escalated, closed = (n for n in ops if n["event"].startswith("incident_"))
    assert opened["title"] == "A: incident 1 opened (failure_rate)"
    assert opened["message"] == "A: 5 of 5 probes failed in the last 15 min (100%, threshold 50%)"
    assert (opened["alert"], opened["incident"]["open"]) == (None, True)
    assert opened["incident"]["started_at"] == "2027-01-15T08:00:04Z"
    assert escalated["title"] == "A: incident 1 escalated to critical (offline)"
    assert escalated["message"].startswith("A is offline: 1 consecutive failures")
    assert escalated["incident"]["alert_ids"] == [offline.id - 1, offline.id]
    assert closed["title"] == "A: incident 1 closed after 17 min"
    assert closed["message"].splitlines()[:2] == [
        "2 alerts (failure_rate, offline) over 17 min",
        "acknowledged by alice",
    ]
    incident = closed["incident"]
    assert (incident["open"], incident["ended_at"]) == (False, "2027-01-15T08:16:41Z")
    assert incident["duration_seconds"] == 997.0
    assert [(a["kind"], a["acknowledged_by"]) for a in incident["alerts"]] == [
        ("failure_rate", None),
        ("offline", "alice"),
    ]
    # Each alert on its own: raised, raised, acknowledged, resolved, resolved, and the rate
    # limit's alert and notice.
    each = [(r.json["event"], (r.json["alert"] or {}).get("kind")) for r in receiver.ok("/each")]
    assert sorted(each, key=str) == sorted(
        [
            ("raised", "failure_rate"),
            ("raised", "offline"),
            ("acknowledged", "offline"),
            ("raised", "rate_limit"),
            ("rate_limit", None),
            ("resolved", "failure_rate"),
            ("resolved", "offline"),
        ],
        key=str,
    )
    assert all(r.json["incident"] is None for r in receiver.ok("/each"))
    keys = [r.key for r in receiver.requests]
    assert len(set(keys)) == len(keys) == 12  # each delivered once, no key shared


async def test_incident_bodies_for_chats(rig: Build, receiver: Receiver) -> None:
    channels = f"""
[[notifications]]
name = "slack"
kind = "slack"
url = "{receiver.url("/slack")}"

[[notifications]]
name = "discord"
kind = "discord"
url = "{receiver.url("/discord")}"
"""
    built = await rig(channels)
    await built.take_down("R&D <B>")
    await built.bring_up("R&D <B>")
    await eventually(lambda: len(receiver.ok()) == 4)
    slack = [r.json for r in receiver.ok("/slack")]
    assert [body["text"] for body in slack] == [
        "[CRITICAL] R&amp;D &lt;B&gt;: incident 1 opened (offline)",
        "[RESOLVED] R&amp;D &lt;B&gt;: incident 1 closed after 1 min",
    ]
    facts = slack[0]["blocks"][1]["fields"]
    assert {"type": "mrkdwn", "text": "*Incident*\n1 (1 alert)"} in facts
    discord = [r.json["embeds"][0] for r in receiver.ok("/discord")]
    assert [embed["color"] for embed in discord] == [0xE01E5A, 0x2EB67D]
    assert discord[1]["description"].startswith("1 alert (offline) over 1 min")


async def test_an_open_incident_is_reminded_of_each_interval_until_acknowledged(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Reminders of an incident, not of its alerts, keyed by the intervals since it began;
    a restart remembers which went out; acknowledging its open alert stops them."""
    path = tmp_path / "notify.toml"
    path.write_text(PROVIDERS + webhook("ops", receiver.url("/hook"), 'renotify_interval = "10m"'))
    config = load_config(path)
    now = [T0]

    def notifier(store: EventStore) -> Notifier:
        # The test drives the checks.
        return Notifier(
            store,
            config.notifications,
            projection_settings(config),
            clock=lambda: now[0],
            renotify_check_every=3600,
        )

    async with await EventStore.open(tmp_path / "n.db") as store:
        first = notifier(store)
        await first.start()
        await store.append(MONITORING_STREAM, [monitoring_of(config)])
        [position] = await store.append("provider:A", [probe("A", T0)])
        await first.wait_for(position)
        await eventually(lambda: len(receiver.ok()) == 1)  # opened
        for minutes, queued in [(5, 0), (10, 1), (12, 0)]:
            now[0] = T0 + minutes * 60
            assert await first.check_renotify() == queued, minutes
        await eventually(lambda: len(receiver.ok()) == 2)
        await first.stop()

        second = notifier(store)
        await second.start()
        # Caught up with the log once it has folded an event more (B answering).
        [answered] = await store.append("provider:R&D <B>", [probe("R&D <B>", T0, "success")])
        await second.wait_for(answered)
        now[0] = T0 + 15 * 60
        assert await second.check_renotify() == 0  # reminded in this interval already
        now[0] = T0 + 20 * 60
        assert await second.check_renotify() == 1
        await eventually(lambda: len(receiver.ok()) == 3)
        [alert] = second.projections.alerts.query(open_only=True)
        [acked] = await store.append("alerts", [AlertAcknowledged(alert.id, "bob", now[0])])
        await second.wait_for(acked)
        for minutes in (30, 40):
            now[0] = T0 + minutes * 60
            assert await second.check_renotify() == 0
        await second.stop()
    reminders = [r for r in receiver.ok() if r.json["event"] == "incident_renotify"]
    assert [r.key for r in reminders] == [f"ops:incident_renotify:1:{n}" for n in (1, 2)]
    assert reminders[0].json["title"] == "A: incident 1 still open"
    assert reminders[0].json["message"].startswith("open for 10 min, not acknowledged: A is")
    assert [r.json["event"] for r in receiver.ok()] == [
        "incident_opened",
        *["incident_renotify"] * 2,
    ]


# ---- no secret leaves the process ---------------------------------------------------------


async def test_no_secret_in_the_database_or_the_logs(
    rig: Build, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.fail_next = 2  # its 500 bodies echo the path, telegram token and all
    channels = (
        webhook(
            "ops",
            receiver.url(f"/hook?token={quote(QUERY_SECRET, safe='')}"),
            'hmac_secret_env = "HOOK_SECRET"\nheaders = { "Authorization" = "env:HOOK_HEADER" }',
        )
        + '\n[[notifications]]\nname = "tg"\nkind = "telegram"\nurl_env = "TG_URL"\nchat_id = 7\n'
    )
    env = {
        "HOOK_SECRET": HMAC_SECRET,
        "HOOK_HEADER": f"Bearer {HEADER_SECRET}",
        "TG_URL": receiver.url(f"/bot{TELEGRAM_TOKEN}/sendMessage"),
    }
    built = await rig(channels, env)
    await built.take_down()
    await eventually(lambda: len(receiver.ok()) == 2)
    await built.notifier.stop()
    await built.store.close()

    stats = {s.name: s for s in built.notifier.stats()}
    errors = [s.last_error or "" for s in stats.values()]
    assert any("***" in error for error in errors)  # the echoed token was cut out
    stored = database_bytes(tmp_path, "n.db")
    # Every log line but the receiver's own access log, which shows the path it was called on.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert "failed (attempt 1)" in logged
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
        assert secret not in logged, secret
        assert all(secret not in error for error in errors)


# ---- configuration --------------------------------------------------------------------------


def test_bad_channels_are_reported_by_file_key_and_channel(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        PROVIDERS
        + """
[[notifications]]
name = "ops"
kind = "pager"
url = "ftp://hooks.example/T0/secret-path"
events = ["raised", "exploded"]
providers = ["Nobody"]
renotify_interval = "soon"

[[notifications]]
name = "tg"
kind = "telegram"
url_env = "TG_URL"
hmac_secret_env = "TG_SECRET"
headers = { "Idempotency-Key" = "mine" }
group = "provider"

[[notifications]]
name = "OPS"
kind = "slack"
url = "https://hooks.slack.example/x"
url_env = "SLACK_URL"
severities = ["fatal"]
color = "red"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    errors = caught.value.errors
    src = str(path)
    expected = [
        f"{src}: notifications[0].kind (channel 'ops'): Invalid enum value 'pager';"
        " expected one of: webhook, slack, discord, telegram",
        f"{src}: notifications[0].url (channel 'ops'): not an http(s) URL (value not shown)",
        f"{src}: notifications[0].events[1] (channel 'ops'): Invalid enum value 'exploded';"
        " expected any of: raised, acknowledged, resolved, rate_limit",
        f"{src}: notifications[0].renotify_interval (channel 'ops'): 'soon' is not a duration",
        f"{src}: notifications[0].providers (channel 'ops'): 'Nobody' is not a configured provider",
        f"{src}: notifications[1].headers (channel 'tg'): 'Idempotency-Key' is set by"
        " cryptomon itself",
        f"{src}: notifications[1].chat_id (channel 'tg'): missing: a telegram channel needs",
        f"{src}: notifications[1].hmac_secret_env (channel 'tg'): only applies to kind ="
        ' "webhook"',
        f"{src}: notifications[1].group (channel 'tg'): Invalid enum value 'provider';"
        " expected one of: incident, alert",
        f"{src}: notifications[2].severities[0] (channel 'OPS'): Invalid enum value 'fatal'",
        f"{src}: notifications[2].color (channel 'OPS'): unknown key; expected one of: name,",
        f"{src}: notifications[2].url_env (channel 'OPS'): set url or url_env, not both",
        f"{src}: notifications[2].name (channel 'OPS'): duplicate channel name:"
        " notifications[0] already uses it",
    ]
    assert len(errors) == len(expected), "\n".join(errors)
    for error, start in zip(sorted(errors), sorted(expected), strict=True):
        assert error.startswith(start), (error, start)
    assert not any("secret-path" in error for error in errors)


def test_channel_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(PROVIDERS + webhook("ops", "https://hooks.example/x"))
    [channel] = load_config(path).notifications
    assert channel.events == ("raised", "acknowledged", "resolved", "rate_limit")
    assert (channel.severities, channel.providers, channel.categories) == ((), (), ())
    assert channel.timeout_seconds == 10 and channel.renotify_interval_seconds is None
    assert channel.group == "incident"  # an availability alert is told of as its incident


# ---- the command line -------------------------------------------------------------------------


async def run_cli(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cryptomon", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_notify_test_sends_a_test_message(tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "cli.toml"
    path.write_text(
        PROVIDERS
        + webhook("ops", receiver.url("/hook"), 'hmac_secret_env = "HOOK_SECRET"')
        + webhook("dead", f"http://127.0.0.1:{closed_port()}/hook", 'timeout = "2s"')
    )
    code, out, _ = await run_cli(
        "notify-test", "ops", "--config", str(path), env={"HOOK_SECRET": HMAC_SECRET}
    )
    assert (code, out.strip()) == (0, "ops: HTTP 200, delivered")
    [request] = receiver.requests
    assert request.json["event"] == "test" and request.key.startswith("ops:test:")
    expected = hmac.new(HMAC_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Cryptomon-Signature"] == f"sha256={expected}"

    code, out, _ = await run_cli("notify-test", "dead", "--config", str(path))
    assert code == 1
    assert out.strip() == "dead: failed: cannot connect: Connection refused"

    code, _, err = await run_cli("notify-test", "nope", "--config", str(path))
    assert code == 2
    assert "has no notification channel 'nope' (channels: ops, dead)" in err


# ---- the service ---------------------------------------------------------------------------


async def test_api_and_metrics_show_each_channel(
    tmp_path: Path, receiver: Receiver, aiohttp_client: AiohttpClient
) -> None:
    path = tmp_path / "app.toml"
    path.write_text(
        "[monitoring]\noffline_after_failures = 1\n"
        f'[[providers]]\nname = "Down"\ncategory = "rpc_nodes"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1h"\n'
        + webhook("ops", receiver.url("/hook"))
        + webhook("dead", f"http://127.0.0.1:{closed_port()}/hook")
    )
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "app.db", environ={}, probing=False
    )
    client = await aiohttp_client(create_app(settings))
    async with client.post("/api/scheduler/trigger/health_checks") as response:
        assert response.status == 200
    await eventually(lambda: len(receiver.ok()) == 1)

    async def channels() -> dict[str, Any]:
        async with client.get("/api/notifications") as response:
            assert response.status == 200
            body = await response.json()
        assert body["enabled"] is True
        return {channel["name"]: channel for channel in body["channels"]}

    async def settled() -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            found = await channels()
            if found["ops"]["delivered"] == 1 and found["dead"]["last_error"]:
                return found
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.02)

    found = await settled()
    assert found["ops"]["pending"] == 0 and found["ops"]["last_delivered_at"].endswith("Z")
    assert found["ops"]["delivering"] and found["dead"]["delivering"]  # SQLite: every channel
    dead = found["dead"]
    assert (dead["pending"], dead["retrying"], dead["failed"], dead["delivered"]) == (1, 1, 1, 0)
    assert dead["last_error"] == "cannot connect: Connection refused"
    async with client.get("/metrics") as response:
        text = await response.text()
    assert 'cryptomon_notification_attempts_total{channel="ops",outcome="delivered"} 1\n' in text
    assert 'cryptomon_notification_attempts_total{channel="dead",outcome="failed"} 1\n' in text
    assert 'cryptomon_notifications_given_up_total{channel="dead"} 0\n' in text
    assert 'cryptomon_notifications_pending{channel="dead"} 1' in text
    assert 'cryptomon_notifications_pending{channel="ops"} 0' in text


class Service:
    """`python -m cryptomon serve` in a subprocess, its log lines in a file."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    async def start(cls, config: Path, db: Path, env: Mapping[str, str], log: Path) -> Service:
        port = free_port()
        with log.open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cryptomon", "serve", "--config", str(config),
                "--db", str(db), "--port", str(port),
                stdout=asyncio.subprocess.PIPE, stderr=log_file, env=dict(env),
            )  # fmt: skip
        assert process.stdout is not None
        async with asyncio.timeout(30):
            while b"monitoring" not in (line := await process.stdout.readline()):
                assert line, "the service exited before it listened"
        return cls(process, f"http://127.0.0.1:{port}")

    async def request(self, method: str, path: str) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path) as response,
        ):
            assert response.status == 200, await response.text()
            return await response.json()

    async def stop(self, signal_number: int) -> int:
        self.process.send_signal(signal_number)
        async with asyncio.timeout(30):
            code = await self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.feed_eof()
        return code


@pytest.mark.parametrize("outbox_first", [False, True], ids=["at-once", "outbox-stored"])
async def test_sigkill_between_append_and_delivery_loses_nothing_and_sends_each_key_once(
    tmp_path: Path, outbox_first: bool
) -> None:
    """Killed right after the append (the notice may not be in the outbox yet: it is
    derived again from the checkpoint), or once its rows wait in the outbox."""
    port = free_port()  # the receiver is down until the service has been killed
    config = tmp_path / "service.toml"
    config.write_text(
        "[monitoring]\noffline_after_failures = 1\n"
        f'[[providers]]\nname = "Down"\ncategory = "rpc_nodes"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1h"\n'
        + webhook(
            "ops",
            f"http://127.0.0.1:{port}/hook",
            'hmac_secret_env = "CM_HOOK_SECRET"\nheaders = { "X-Key" = "env:CM_HOOK_HEADER" }',
        )
        + '\n[[notifications]]\nname = "tg"\nkind = "telegram"\nurl_env = "CM_TG_URL"\n'
        "chat_id = -100123\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CRYPTOMON_API_TOKEN"}
    env |= {
        "CM_HOOK_SECRET": HMAC_SECRET,
        "CM_HOOK_HEADER": HEADER_SECRET,
        "CM_TG_URL": f"http://127.0.0.1:{port}/bot{TELEGRAM_TOKEN}/sendMessage",
    }
    db, log = tmp_path / "service.db", tmp_path / "service.log"

    service = await Service.start(config, db, env, log)
    triggered = await service.request("POST", "/api/scheduler/trigger/health_checks")
    assert triggered["position"] > 0  # the failed probe, and so the alert, is committed
    if outbox_first:
        deadline = time.monotonic() + 10
        while True:
            body = await service.request("GET", "/api/notifications")
            if all(c["retrying"] == 1 for c in body["channels"]):
                break  # stored, and tried once against the receiver that is down
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.02)
    assert await service.stop(signal.SIGKILL) == -signal.SIGKILL

    async with Receiver.start(port) as receiver:
        service = await Service.start(config, db, env, log)
        await eventually(lambda: len(receiver.ok()) == 2)
        for request in receiver.requests:  # Telegram's body says no event
            assert request.json.get("event", "incident_opened") == "incident_opened"
        [hook] = receiver.ok("/hook")
        assert hook.json["provider"] == "Down"
        assert hook.json["incident"]["alerts"][0]["kind"] == "offline"
        signature = hmac.new(HMAC_SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
        assert hook.headers["X-Cryptomon-Signature"] == f"sha256={signature}"
        [telegram] = receiver.ok(f"/bot{TELEGRAM_TOKEN}/sendMessage")
        assert telegram.json["chat_id"] == -100123

        async def delivered() -> dict[str, int]:
            body = await service.request("GET", "/api/notifications")
            return {c["name"]: c["delivered"] for c in body["channels"]}

        deadline = time.monotonic() + 10
        while await delivered() != {"ops": 1, "tg": 1}:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert await service.stop(signal.SIGTERM) == 0

        # Started again, and replayed for an audit: nothing is sent again.
        service = await Service.start(config, db, env, log)
        body = await service.request("GET", "/api/notifications")
        assert {c["name"]: (c["delivered"], c["pending"]) for c in body["channels"]} == {
            "ops": (1, 0),
            "tg": (1, 0),
        }
        assert await service.stop(signal.SIGTERM) == 0
        code, out, _ = await run_cli("replay", "--config", str(config), "--db", str(db))
        assert code == 0, out
        assert len(receiver.requests) == 2
        assert set(receiver.delivered.values()) == {1}

    stored = database_bytes(tmp_path, "service.db")
    logged = log.read_text()
    assert "notifications: 2 channels from position" in logged
    if outbox_first:
        assert "failed (attempt 1): cannot connect: Connection refused" in logged
        assert "2 channels from position 0; 2 waiting to be sent" in logged
    for secret in SECRETS:
        assert secret.encode() not in stored, secret
        assert secret not in logged, secret


async def test_the_region_lost_alert_is_delivered_through_provider_filters(
    rig: Build, receiver: Receiver
) -> None:
    # The service's own alert concerns every provider: a channel filtering providers and
    # categories hears of it, and of its resolution when the region joins again.
    channel = webhook("ops", receiver.url("/hook"), 'providers = ["A"]\ncategories = ["rpc_nodes"]')
    built = await rig(channel)
    await built.append("region:eu-west", RegionLost("eu-west", "host-b:7", T0))
    await built.append("region:eu-west", RegionJoined("eu-west", "host-a:9", T0 + 60))
    await eventually(lambda: len(receiver.ok()) == 2)
    raised, resolved = (request.json for request in receiver.ok())
    assert (raised["event"], resolved["event"]) == ("raised", "resolved")
    assert raised["provider"] is None and raised["category"] is None
    assert raised["title"] == "cryptomon: region_lost alert raised"
    assert raised["alert"]["kind"] == "region_lost" and raised["alert"]["regions"] == ["eu-west"]
    assert raised["severity"] == "critical" and "eu-west stopped reporting" in raised["message"]
