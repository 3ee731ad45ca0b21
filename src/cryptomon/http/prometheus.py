"""`/metrics` in the Prometheus text format (0.0.4), from the read models and the process.

Every family is gathered at scrape time (`families`), from the read models and the running
parts, then written by one encoder (`encode`) that escapes label values. Names follow
Prometheus's naming guide: base units (seconds, bytes, ratios), `_total` on counters,
`_info` for series that carry labels only; the process and interpreter families have the
names every official client library gives them (`process_*`, `python_*`).

Written by hand rather than by the official `prometheus_client`: over the same families for
100 providers a scrape through it took 1.9 times the CPU in the text format and 3 times in
OpenMetrics, some 50 to 110 ms more each time on the event loop that also times the probes
(benchmarks/bench_metrics.py); the text format is all Prometheus needs.

Counters and the latency histogram cover every probe the rollups still hold (400 days by
default), so they only grow between restarts of a scrape.

Regions (probes carrying `[instance] region`): the probe counters and the latency
histogram split a provider's probes by a `region` label, the probes without one (if any)
keeping the series without it, so a sum over `region` is the provider's whole. The status
gauges stay the provider's overall judgement (the README's table), one series each; how
each region judges it is in families of their own (`cryptomon_provider_region_status`,
`cryptomon_provider_region_up`), beside each region's share of a rate limit and whether
each region reports (`cryptomon_region_reporting`). A service whose probes never carried a
region exports none of these families, so its output is what it was before regions.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import platform
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal

from aiohttp import web

from cryptomon import __version__
from cryptomon.events.types import PROBE_KINDS, ProbeOutcome
from cryptomon.http.keys import HUB, LOOP_LAG, MONITOR, NOTIFIER, READ_MODELS, STORE
from cryptomon.projections import Projections
from cryptomon.projections.base import regional
from cryptomon.projections.metrics import BINS, LATENCY_BOUNDS_MS, Bucket
from cryptomon.projections.notices import PROVIDER_STATUSES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The outcomes a probe counter shows; a maintenance answer counts as a success.
OUTCOMES: tuple[ProbeOutcome, ...] = ("success", "failed", "timeout", "rate_limited")
# The histogram's `le` bounds: the metrics projection's own latency bins in seconds, so each
# bucket is exactly a bin's running count (1 ms to 30 s, roughly log-spaced).
LE_SECONDS: tuple[str, ...] = (*(str(bound / 1000) for bound in LATENCY_BOUNDS_MS), "+Inf")

Labels = tuple[tuple[str, str], ...]
Kind = Literal["counter", "gauge", "histogram"]


@dataclass(slots=True)
class Family:
    """One metric family: its samples as (sample name, labels, value)."""

    name: str
    kind: Kind
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, *labels: tuple[str, str], suffix: str = "") -> None:
        """A sample; a histogram's are named with a suffix (`_bucket`, `_sum`, `_count`)."""
        self.samples.append((self.name + suffix, labels, value))


def encode(families: Iterator[Family]) -> bytes:
    """The text format of `families`; a family without samples keeps its HELP and TYPE."""
    escaped: dict[str, str] = {}  # a provider's name is in dozens of samples: escape it once
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for name, labels, value in family.samples:
            if not labels:
                lines.append(f"{name} {value}")
                continue
            pairs = []
            for key, raw in labels:
                text = escaped.get(raw)
                if text is None:
                    text = escaped[raw] = (
                        raw.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                    )
                pairs.append(f'{key}="{text}"')
            lines.append(f"{name}{{{','.join(pairs)}}} {value}")
    lines.append("")
    return "\n".join(lines).encode()


def families(app: web.Application) -> Iterator[Family]:
    """Every family `/metrics` answers, read now."""
    projections = app[READ_MODELS].projections
    yield from _process()
    build = Family("cryptomon_build_info", "gauge", "the running cryptomon's version (always 1)")
    build.add(1, ("version", __version__))
    yield build
    yield from _providers(projections)
    yield from _probes(projections)
    yield from _chains_and_quotes(projections)
    yield from _service(app, projections)


@functools.cache
def _start_time() -> float | None:
    """When this process started, in seconds since the epoch (Linux: from /proc), as the
    official clients compute it."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            # Field 22, after the command in parentheses (which may hold spaces).
            started = int(stat.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith(b"btime "))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return boot + started / os.sysconf("SC_CLK_TCK")


def _process() -> Iterator[Family]:
    """The process and the interpreter, by the names the official clients use."""
    cpu = Family("process_cpu_seconds_total", "counter", "user and system CPU time spent")
    times = os.times()
    cpu.add(times.user + times.system)
    yield cpu
    virtual = Family("process_virtual_memory_bytes", "gauge", "virtual memory size")
    resident = Family("process_resident_memory_bytes", "gauge", "resident memory size")
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = statm.read().split()
    except OSError:  # not Linux: the families stay, without samples
        pages = []
    if pages:
        size = os.sysconf("SC_PAGE_SIZE")
        virtual.add(int(pages[0]) * size)
        resident.add(int(pages[1]) * size)
    yield virtual
    yield resident
    start = Family(
        "process_start_time_seconds", "gauge", "when the process started, since the epoch"
    )
    started = _start_time()
    if started is not None:
        start.add(started)
    yield start
    open_fds = Family("process_open_fds", "gauge", "open file descriptors")
    with contextlib.suppress(OSError):  # no /proc: the family stays, without a sample
        open_fds.add(len(os.listdir("/proc/self/fd")))
    yield open_fds
    max_fds = Family("process_max_fds", "gauge", "the limit of open file descriptors")
    max_fds.add(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    yield max_fds
    python = Family("python_info", "gauge", "the Python interpreter (always 1)")
    major, minor, patchlevel = platform.python_version_tuple()
    python.add(
        1,
        ("implementation", platform.python_implementation()),
        ("major", major),
        ("minor", minor),
        ("patchlevel", patchlevel),
        ("version", platform.python_version()),
    )
    yield python
    stats = gc.get_stats()
    for name, key, help_text in (
        ("python_gc_objects_collected_total", "collected", "objects collected by the gc"),
        (
            "python_gc_objects_uncollectable_total",
            "uncollectable",
            "uncollectable objects the gc found",
        ),
        ("python_gc_collections_total", "collections", "times each generation was collected"),
    ):
        family = Family(name, "counter", help_text + ", by generation")
        for generation, generation_stats in enumerate(stats):
            family.add(generation_stats[key], ("generation", str(generation)))
        yield family


def _providers(projections: Projections) -> Iterator[Family]:
    states = projections.providers.all()
    info = Family(
        "cryptomon_provider_info", "gauge", "each provider's category, to filter or join on"
    )
    up = Family("cryptomon_provider_up", "gauge", "1 when the provider is online or degraded")
    status = Family(
        "cryptomon_provider_status", "gauge", "1 for the provider's current status, else 0"
    )
    maintenance = Family(
        "cryptomon_provider_in_maintenance",
        "gauge",
        "1 while the provider's last health probe fell inside a maintenance window",
    )
    expiry = Family(
        "cryptomon_certificate_expiry_timestamp_seconds",
        "gauge",
        "when the provider's TLS certificate expires, as its last HTTPS probe saw it",
    )
    for state in states:
        provider = ("provider", state.name)
        info.add(1, provider, ("category", state.category))
        up.add(1 if state.status in ("online", "degraded") else 0, provider)
        for each in PROVIDER_STATUSES:
            status.add(1 if state.status == each else 0, provider, ("status", each))
        maintenance.add(0 if state.window is None else 1, provider)
        if state.certificate_not_after is not None:
            expiry.add(state.certificate_not_after, provider)
    yield from (info, up, status)
    yield from _regional_statuses(projections)
    yield from (maintenance, expiry)
    usage = Family(
        "cryptomon_rate_limit_usage_ratio", "gauge", "used / limit of each provider's rate limit"
    )
    region_usage = Family(
        "cryptomon_rate_limit_region_usage_ratio",
        "gauge",
        "used / limit of each region's share of a provider's rate limit, as it last reported",
    )
    for limit in projections.rate_limits.all():
        if projections.providers.is_removed(limit.provider):
            continue  # its last usage is kept for the API, not exported
        usage.add(limit.percentage / 100, ("provider", limit.provider))
        for region, share in sorted(limit.regions.items()):
            if share.limit > 0:
                region_usage.add(
                    share.used / share.limit, ("provider", limit.provider), ("region", region)
                )
    yield usage
    if region_usage.samples:
        yield region_usage


def _regional_statuses(projections: Projections) -> Iterator[Family]:
    """How each region judges each provider, and whether each region reports: nothing at
    all when no probe carried a region."""
    states = [state for state in projections.providers.all() if state.regions]
    lost = projections.alerts.lost_regions()
    if not states and not lost:
        return
    region_up = Family(
        "cryptomon_provider_region_up",
        "gauge",
        "1 when the provider is online or degraded as that region's probes judge it",
    )
    region_status = Family(
        "cryptomon_provider_region_status",
        "gauge",
        "1 for the provider's status as that region's probes judge it, else 0 (unknown: not"
        " judged there yet, or the region stopped reporting)",
    )
    regions: set[str] = set(lost)
    for state in states:
        provider = ("provider", state.name)
        for name, view in sorted(state.regions.items()):
            regions.add(name)
            region = ("region", name)
            up_there = view.probe_status in ("online", "degraded")
            region_up.add(1 if up_there else 0, provider, region)
            for each in PROVIDER_STATUSES:
                region_status.add(
                    1 if view.probe_status == each else 0, provider, region, ("status", each)
                )
    reporting = Family(
        "cryptomon_region_reporting",
        "gauge",
        "1 while a region's instances report, 0 once it stopped reporting (RegionLost) until"
        " one of them joins again",
    )
    for name in sorted(regions):
        reporting.add(0 if name in lost else 1, ("region", name))
    yield from (region_up, region_status, reporting)


def _probes(projections: Projections) -> Iterator[Family]:
    probes = Family("cryptomon_probes_total", "counter", "probes by provider, kind and outcome")
    duration = Family(
        "cryptomon_probe_duration_seconds", "histogram", "how long successful health probes took"
    )
    until = time.time() + 86_400  # every bucket, a probe stamped a little ahead included
    metrics = projections.metrics
    regions_of = metrics.regions()
    for state in projections.providers.all():
        provider = ("provider", state.name)
        regions = regions_of.get(state.name, ())
        for kind in PROBE_KINDS:
            bucket = metrics.bucket(state.name, 0.0, until, kind)
            if not bucket.probes:
                continue
            # By region, and the rest (probes without one) in the series without a region.
            split: list[tuple[Labels, Bucket]] = []
            if regions:
                parts = [
                    (
                        ("region", region),
                        metrics.bucket(regional(state.name, region), 0.0, until, kind),
                    )
                    for region in regions
                ]
                rest = _less(bucket, [part for _label, part in parts])
                if rest.probes:
                    split.append(((provider,), rest))
                split += [((provider, label), part) for label, part in parts if part.probes]
            else:
                split.append(((provider,), bucket))
            for labels, counted in split:
                _add_probes(probes, duration, labels, kind, counted)
    yield probes
    yield duration


def _add_probes(
    probes: Family, duration: Family, labels: Labels, kind: str, bucket: Bucket
) -> None:
    """One provider's (or one of its regions') probes of `kind`: counted by outcome, and
    for health probes their latency as a histogram."""
    successes = bucket.probes - bucket.failed - bucket.timeout - bucket.rate_limited
    by_outcome = (successes, bucket.failed, bucket.timeout, bucket.rate_limited)
    for outcome, count in zip(OUTCOMES, by_outcome, strict=True):
        probes.add(count, *labels, ("kind", kind), ("outcome", outcome))
    if kind != "health":
        return
    bins = [bucket.histogram.get(slot, 0) for slot in range(BINS)]
    for le, cumulative in zip(LE_SECONDS, accumulate(bins), strict=True):
        duration.add(cumulative, *labels, ("le", le), suffix="_bucket")
    duration.add(bucket.latency_sum / 1000, *labels, suffix="_sum")
    duration.add(bucket.latency_count, *labels, suffix="_count")


def _less(total: Bucket, parts: list[Bucket]) -> Bucket:
    """`total` without the probes counted in `parts` (a provider's probes without a region:
    its own rollups count every probe, each region's those from it)."""
    histogram = dict(total.histogram)
    latency_sum = total.latency_sum
    for part in parts:
        latency_sum -= part.latency_sum
        for slot, count in part.histogram.items():
            histogram[slot] = histogram.get(slot, 0) - count
    rest = Bucket(
        total.probes - sum(part.probes for part in parts),
        total.failed - sum(part.failed for part in parts),
        total.timeout - sum(part.timeout for part in parts),
        total.rate_limited - sum(part.rate_limited for part in parts),
        total.latency_count - sum(part.latency_count for part in parts),
        0.0,
        {slot: count for slot, count in histogram.items() if count > 0},
    )
    # Sums of floats in another order differ in their last bits: none left is none.
    rest.latency_sum = max(0.0, latency_sum) if rest.latency_count else 0.0
    return rest


def _chains_and_quotes(projections: Projections) -> Iterator[Family]:
    """Each chain's best head and each node's head and lag; each source's price and how far
    it is off its pair's median. A value not known yet (no head, no median) has no sample."""
    chains = projections.chains.all()
    best = Family(
        "cryptomon_chain_best_head_block", "gauge", "the block number of each chain's best head"
    )
    for chain in chains:
        if chain.best is not None:
            best.add(chain.best, ("chain", chain.name))
    yield best
    nodes = [
        (("chain", chain.name), ("provider", node.provider), node)
        for chain in chains
        for node in sorted(chain.nodes.values(), key=lambda node: node.provider)
    ]
    for attribute, name, help_text in (
        ("head", "cryptomon_chain_head_block", "the block number of each node's head"),
        (
            "lag",
            "cryptomon_chain_lag_blocks",
            "blocks each node is behind its chain's best head, at its last probe",
        ),
        ("lag_seconds", "cryptomon_chain_lag_seconds", "that lag at the chain's block rate"),
    ):
        family = Family(name, "gauge", help_text)
        for chain_label, provider, node in nodes:
            value = getattr(node, attribute)
            if value is not None:
                family.add(value, chain_label, provider)
        yield family
    price = Family(
        "cryptomon_quote_price",
        "gauge",
        "each source's last price of its pair, in its quote currency",
    )
    deviation = Family(
        "cryptomon_quote_deviation_ratio",
        "gauge",
        "(price - median) / median of each source at its last probe (0.01 is 1% above)",
    )
    for pair in projections.quotes.all():
        for source in sorted(pair.sources.values(), key=lambda source: source.provider):
            labels = (("pair", pair.name), ("provider", source.provider))
            if source.price is not None:
                price.add(source.price, *labels)
            if source.deviation is not None:
                deviation.add(source.deviation / 100, *labels)
    yield price
    yield deviation


def _service(app: web.Application, projections: Projections) -> Iterator[Family]:
    """The log, the monitor, the live feed and the notifier."""

    def single(name: str, kind: Kind, help_text: str, value: float) -> Family:
        family = Family(name, kind, help_text)
        family.add(value)
        return family

    store = app[STORE]
    open_alerts = len(projections.alerts.query(open_only=True))
    yield single("cryptomon_alerts_open", "gauge", "alerts not yet resolved", open_alerts)
    yield single(
        "cryptomon_event_log_position", "gauge", "position of the last committed event", store.head
    )
    yield single(
        "cryptomon_read_model_position",
        "gauge",
        "position the read models have applied",
        projections.position,
    )
    yield single(
        "cryptomon_failed_appends_total",
        "counter",
        "events the log refused to store",
        store.failed_appends,
    )
    monitor = app[MONITOR]
    yield single(
        "cryptomon_probes_lost_total",
        "counter",
        "probe results the log refused",
        monitor.counters.lost,
    )
    skipped = Family(
        "cryptomon_probes_skipped_total", "counter", "planned probes not sent, by reason"
    )
    stats = monitor.scheduler.stats
    for reason, count in (
        ("overlap", stats.skipped_overlap),
        ("late", stats.skipped_late),
        ("rate_limited", monitor.counters.skipped_blocked),
    ):
        skipped.add(count, ("reason", reason))
    yield skipped
    lag = app[LOOP_LAG]
    yield single(
        "cryptomon_event_loop_lag_seconds",
        "gauge",
        "how late the event loop woke a timer, at the last sample",
        lag.last,
    )
    yield single(
        "cryptomon_event_loop_lag_max_seconds",
        "gauge",
        "the same, worst in the last 60 s",
        lag.window_max,
    )
    hub = app[HUB]
    yield single(
        "cryptomon_websocket_clients", "gauge", "connected live-feed clients", len(hub.clients)
    )
    yield single(
        "cryptomon_websocket_messages_sent_total",
        "counter",
        "live-feed messages sent",
        hub.messages_sent,
    )
    yield single(
        "cryptomon_websocket_clients_dropped_total",
        "counter",
        "live-feed clients closed because their send queue was full",
        hub.dropped,
    )
    attempts = Family(
        "cryptomon_notification_attempts_total",
        "counter",
        "delivery attempts since start, by channel and outcome (delivered or failed)",
    )
    given_up = Family(
        "cryptomon_notifications_given_up_total",
        "counter",
        "notifications given up on after their last attempt failed, since start",
    )
    pending = Family(
        "cryptomon_notifications_pending",
        "gauge",
        "notifications waiting to be delivered, retrying ones included",
    )
    for channel in app[NOTIFIER].stats():
        name = ("channel", channel.name)
        attempts.add(channel.sent_total, name, ("outcome", "delivered"))
        attempts.add(channel.failed_attempts_total, name, ("outcome", "failed"))
        given_up.add(channel.gave_up_total, name)
        pending.add(channel.pending, name)
    yield from (attempts, given_up, pending)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=encode(families(request.app)),
        headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"},
    )
