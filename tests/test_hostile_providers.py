"""Hostile providers next to healthy ones, all probed by the real monitor on a real clock.

Stand-ins on 127.0.0.1 hang, trickle their body, trickle their headers, offer 100 MB, reset the
connection before answering or partway through a body, and serve HTTPS with a certificate from
a CA nobody trusts. Every hostile probe must be recorded with its error kind within its timeout
plus a margin (measured from the events: planned time to commit), the healthy providers must
keep their schedule and their latency, and memory must stay far below what was offered.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest
import trustme
from standins import FLOOD_BYTES, RawStandIn, StandIn

from cryptomon.config import load_config
from cryptomon.events.sqlite import EventStore
from cryptomon.events.types import ProbeRecorded
from cryptomon.probing.monitor import Monitor
from cryptomon.probing.probes import create_probe_session

HEALTHY_INTERVAL = 1.0
HOSTILE_INTERVAL = 2.0
HOSTILE_TIMEOUT = 1.0
# Slack for a loaded machine (two shared cores): bounds are "timeout + margin", never exact.
MARGIN = 0.5
HEALTHY_LATENCY_MS = 250.0  # loopback answers in a few ms; this is "normal" with room to spare
ROUNDS = 3  # hostile probes recorded per hostile provider before the run ends
MEMORY_PEAK_BYTES = 20 * 1024 * 1024  # a fifth of what /flood offers
HEALTHY = [f"Healthy-{n}" for n in range(1, 5)]


class Hostile(NamedTuple):
    name: str
    kind: str  # the error kind every probe of it must record
    standin: str  # which stand-in serves it: "http", "raw" or "tls"
    path: str


HOSTILE = [
    Hostile("Hang", "timeout", "http", "/hang"),
    Hostile("Trickle", "timeout", "http", "/trickle"),
    Hostile("TrickleHeaders", "timeout", "raw", "/trickle-headers"),
    Hostile("Flood", "body_too_large", "http", "/flood"),
    Hostile("Reset", "connection_error", "raw", "/reset"),
    Hostile("ResetMidBody", "connection_error", "raw", "/reset-mid-body"),
    Hostile("BadTLS", "tls", "tls", "/healthy"),
]


class Recorded(NamedTuple):
    """A probe as committed: the event and its commit time."""

    event: ProbeRecorded
    recorded_at: float


@pytest.fixture
def untrusted_tls() -> ssl.SSLContext:
    """A server context whose certificate comes from a CA made just now, which nothing trusts."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    opened = await EventStore.open(tmp_path / "hostile.db")
    yield opened
    await opened.close()


def scheduled(event: ProbeRecorded) -> float:
    assert event.scheduled_at is not None  # the scheduler plans every run here
    return event.scheduled_at


def provider(name: str, url: str, interval: float, timeout: float) -> str:
    return (
        f'[[providers]]\nname = "{name}"\ncategory = "market_data"\nbase_url = "{url}"\n'
        f'interval = "{interval:g}s"\ntimeout = "{timeout:g}s"\n'
        f'degraded_latency = "{timeout / 2:g}s"\n'
    )


async def collect(store: EventStore, done: asyncio.Event) -> dict[str, list[Recorded]]:
    """Every probe committed, by provider, until the hostile ones have had their rounds."""
    probes: dict[str, list[Recorded]] = {}
    async for recorded in store.subscribe():
        event = recorded.event
        if not isinstance(event, ProbeRecorded):
            continue
        probes.setdefault(event.provider, []).append(Recorded(event, recorded.recorded_at))
        if all(len(probes.get(h.name, [])) >= ROUNDS for h in HOSTILE):
            done.set()
            return probes
    return probes


async def test_hostile_providers_fail_on_time_and_leave_the_others_alone(
    tmp_path: Path, store: EventStore, untrusted_tls: ssl.SSLContext
) -> None:
    async with (
        StandIn.start() as healthy,
        StandIn.start() as hostile,
        StandIn.start(ssl_context=untrusted_tls) as tls,
        RawStandIn.start() as raw,
    ):
        servers = {"http": hostile.url(""), "tls": tls.url(""), "raw": raw.url("")}
        blocks = [provider(n, healthy.url("/healthy"), HEALTHY_INTERVAL, 2.0) for n in HEALTHY]
        blocks += [
            provider(h.name, servers[h.standin] + h.path, HOSTILE_INTERVAL, HOSTILE_TIMEOUT)
            for h in HOSTILE
        ]
        config_path = tmp_path / "hostile.toml"
        config_path.write_text("\n".join(blocks))
        session = create_probe_session()
        monitor = Monitor(load_config(config_path), store, session, environ={})
        done = asyncio.Event()
        tracemalloc.start()
        try:
            collecting = asyncio.create_task(collect(store, done))
            await monitor.start()
            async with asyncio.timeout(ROUNDS * HOSTILE_INTERVAL + 20):
                probes = await collecting
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await monitor.stop()
            await session.close()

    # Each hostile probe: its error kind, and committed within its timeout of its plan.
    for h in HOSTILE:
        for probe in probes[h.name]:
            event = probe.event
            assert (event.outcome == "timeout") == (h.kind == "timeout"), (h.name, event)
            assert event.error_kind == h.kind, (h.name, event)
            assert event.latency_ms is not None
            took = probe.recorded_at - scheduled(event)
            assert took <= HOSTILE_TIMEOUT + MARGIN, (h.name, took, event)
            if h.kind == "timeout":
                assert event.latency_ms >= HOSTILE_TIMEOUT * 1000 - 50, (h.name, event)
            else:  # it failed on what it did, not by running out of time
                assert event.latency_ms < HOSTILE_TIMEOUT * 1000, (h.name, event)
    tls_message = probes["BadTLS"][0].event.error_message
    assert tls_message is not None
    assert tls_message.startswith(f"TLS with 127.0.0.1:{tls.port} failed: ")
    assert all(p.event.response_bytes <= 1_048_577 for p in probes["Flood"])
    assert raw.requests.keys() == {"/reset", "/reset-mid-body", "/trickle-headers"}

    # The healthy providers kept every planned run, on time, at loopback latency, throughout.
    hostile_span = (
        min(p.event.started_at for h in HOSTILE for p in probes[h.name]),
        max(p.recorded_at for h in HOSTILE for p in probes[h.name]),
    )
    for name in HEALTHY:
        runs = probes[name]
        planned = [scheduled(p.event) for p in runs]
        steps = [b - a for a, b in itertools.pairwise(planned)]
        assert all(abs(step - HEALTHY_INTERVAL) < 1e-6 for step in steps), (name, steps)
        assert planned[0] <= hostile_span[0] + HEALTHY_INTERVAL
        assert planned[-1] >= hostile_span[1] - HEALTHY_INTERVAL - MARGIN
        for probe in runs:
            event = probe.event
            assert event.outcome == "success", (name, event)
            assert event.latency_ms is not None and event.latency_ms < HEALTHY_LATENCY_MS
            assert event.started_at - scheduled(event) < MARGIN
            assert probe.recorded_at - scheduled(event) < MARGIN
    stats = monitor.scheduler.stats
    assert (stats.skipped_overlap, stats.skipped_late) == (0, 0)

    # Memory: /flood offered 100 MB a time; the probe stopped reading past its cap.
    # What got out is the cap plus the sockets' buffers, not the 100 MB.
    assert len(hostile.flood_written) >= ROUNDS
    assert max(hostile.flood_written) < FLOOD_BYTES / 10, hostile.flood_written
    assert peak < MEMORY_PEAK_BYTES, f"peak traced memory {peak / 2**20:.1f} MiB"
