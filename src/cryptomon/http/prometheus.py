"""`/metrics` in the Prometheus text format, from the read models.

Counters and the latency histogram cover every probe the rollups still hold
(400 days by default), so they only grow between restarts of a scrape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import accumulate

from aiohttp import web

from cryptomon.events.types import PROBE_KINDS, ProbeOutcome
from cryptomon.http.keys import HUB, LOOP_LAG, MONITOR, NOTIFIER, READ_MODELS, STORE
from cryptomon.projections import Projections
from cryptomon.projections.metrics import BINS, LATENCY_BOUNDS_MS
from cryptomon.projections.notices import PROVIDER_STATUSES

# The outcomes a probe counter shows; a maintenance answer counts as a success.
OUTCOMES: tuple[ProbeOutcome, ...] = ("success", "failed", "timeout", "rate_limited")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _chains_and_quotes(
    projections: Projections, family: Callable[[str, str, str], None], lines: list[str]
) -> None:
    """Each chain's best head and each node's head and lag; each source's price and how far
    it is off its pair's median. A value not known yet (no head, no median) has no line."""
    chains = projections.chains.all()
    nodes = [
        (_label(chain.name), _label(node.provider), node)
        for chain in chains
        for node in sorted(chain.nodes.values(), key=lambda node: node.provider)
    ]
    family("cryptomon_chain_best_head", "gauge", "the best head of each chain, in blocks")
    for chain in chains:
        if chain.best is not None:
            lines.append(f'cryptomon_chain_best_head{{chain="{_label(chain.name)}"}} {chain.best}')
    for name, field, help_text in (
        ("cryptomon_chain_head", "head", "each node's head, in blocks"),
        (
            "cryptomon_chain_lag_blocks",
            "lag",
            "blocks each node is behind its chain's best head, at its last probe",
        ),
        (
            "cryptomon_chain_lag_seconds",
            "lag_seconds",
            "that lag at the chain's block rate, in seconds",
        ),
    ):
        family(name, "gauge", help_text)
        for chain_name, provider, node in nodes:
            value = getattr(node, field)
            if value is not None:
                lines.append(f'{name}{{chain="{chain_name}",provider="{provider}"}} {value}')
    sources = [
        (_label(pair.name), _label(source.provider), source)
        for pair in projections.quotes.all()
        for source in sorted(pair.sources.values(), key=lambda source: source.provider)
    ]
    family("cryptomon_quote_price", "gauge", "each source's last price of its pair")
    for pair_name, provider, source in sources:
        if source.price is not None:
            lines.append(
                f'cryptomon_quote_price{{pair="{pair_name}",provider="{provider}"}} {source.price}'
            )
    family(
        "cryptomon_quote_deviation_ratio",
        "gauge",
        "(price - median) / median of each source at its last probe (0.01 is 1% above)",
    )
    for pair_name, provider, source in sources:
        if source.deviation is not None:
            lines.append(
                f'cryptomon_quote_deviation_ratio{{pair="{pair_name}",provider="{provider}"}}'
                f" {source.deviation / 100}"
            )


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    projections = app[READ_MODELS].projections
    now = time.time()
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    states = projections.providers.all()
    family("cryptomon_provider_up", "gauge", "1 when the provider is online or degraded")
    for state in states:
        up = 1 if state.status in ("online", "degraded") else 0
        lines.append(f'cryptomon_provider_up{{provider="{_label(state.name)}"}} {up}')
    family("cryptomon_provider_status", "gauge", "1 for the provider's current status")
    for state in states:
        for status in PROVIDER_STATUSES:
            value = 1 if state.status == status else 0
            lines.append(
                f'cryptomon_provider_status{{provider="{_label(state.name)}",'
                f'status="{status}"}} {value}'
            )
    family(
        "cryptomon_provider_in_maintenance",
        "gauge",
        "1 while the provider's last health probe fell inside a maintenance window",
    )
    for state in states:
        value = 0 if state.window is None else 1
        lines.append(
            f'cryptomon_provider_in_maintenance{{provider="{_label(state.name)}"}} {value}'
        )

    family(
        "cryptomon_certificate_expiry_timestamp_seconds",
        "gauge",
        "when the provider's TLS certificate expires, as its last HTTPS probe saw it",
    )
    for state in states:
        if state.certificate_not_after is not None:
            lines.append(
                "cryptomon_certificate_expiry_timestamp_seconds"
                f'{{provider="{_label(state.name)}"}} {state.certificate_not_after}'
            )

    family("cryptomon_probes_total", "counter", "probes by provider, kind and outcome")
    family_latency = "cryptomon_probe_latency_ms"
    latency_lines: list[str] = []
    for state in states:
        name = _label(state.name)
        for kind in PROBE_KINDS:
            bucket = projections.metrics.bucket(state.name, 0.0, now + 86_400, kind)
            if not bucket.probes:
                continue
            successes = bucket.probes - bucket.failed - bucket.timeout - bucket.rate_limited
            counts = dict(zip(OUTCOMES, (successes, bucket.failed, bucket.timeout,
                                         bucket.rate_limited), strict=True))  # fmt: skip
            for outcome, count in counts.items():
                lines.append(
                    f'cryptomon_probes_total{{provider="{name}",kind="{kind}",'
                    f'outcome="{outcome}"}} {count}'
                )
            if kind != "health":
                continue
            bins = [bucket.histogram.get(slot, 0) for slot in range(BINS)]
            for bound, cumulative in zip(
                (*LATENCY_BOUNDS_MS, "+Inf"), accumulate(bins), strict=True
            ):
                latency_lines.append(
                    f'{family_latency}_bucket{{provider="{name}",le="{bound}"}} {cumulative}'
                )
            latency_lines.append(f'{family_latency}_sum{{provider="{name}"}} {bucket.latency_sum}')
            latency_lines.append(
                f'{family_latency}_count{{provider="{name}"}} {bucket.latency_count}'
            )
    family(family_latency, "histogram", "latency of successful health probes, in ms")
    lines += latency_lines

    family("cryptomon_rate_limit_usage_ratio", "gauge", "used / limit of each provider")
    for limit in projections.rate_limits.all():
        if projections.providers.is_removed(limit.provider):
            continue  # its last usage is kept for the API, not exported
        ratio = limit.percentage / 100
        lines.append(
            f'cryptomon_rate_limit_usage_ratio{{provider="{_label(limit.provider)}"}} {ratio}'
        )

    _chains_and_quotes(projections, family, lines)

    family("cryptomon_alerts_open", "gauge", "alerts not yet resolved")
    lines.append(f"cryptomon_alerts_open {len(projections.alerts.query(open_only=True))}")
    store = app[STORE]
    family("cryptomon_event_log_position", "gauge", "position of the last committed event")
    lines.append(f"cryptomon_event_log_position {store.head}")
    family("cryptomon_read_model_position", "gauge", "position the read models have applied")
    lines.append(f"cryptomon_read_model_position {projections.position}")
    family("cryptomon_failed_appends_total", "counter", "events the log refused to store")
    lines.append(f"cryptomon_failed_appends_total {store.failed_appends}")
    monitor = app[MONITOR]
    family("cryptomon_probes_lost_total", "counter", "probe results the log refused")
    lines.append(f"cryptomon_probes_lost_total {monitor.counters.lost}")
    family("cryptomon_probes_skipped_total", "counter", "planned probes not sent, by reason")
    stats = monitor.scheduler.stats
    for reason, count in (
        ("overlap", stats.skipped_overlap),
        ("late", stats.skipped_late),
        ("rate_limited", monitor.counters.skipped_blocked),
    ):
        lines.append(f'cryptomon_probes_skipped_total{{reason="{reason}"}} {count}')
    if LOOP_LAG in app:
        lag = app[LOOP_LAG]
        family("cryptomon_event_loop_lag_seconds", "gauge", "how late the loop woke a timer, last")
        lines.append(f"cryptomon_event_loop_lag_seconds {lag.last:.6f}")
        family("cryptomon_event_loop_lag_max_seconds", "gauge", "the same, worst in the last 60 s")
        lines.append(f"cryptomon_event_loop_lag_max_seconds {lag.window_max:.6f}")
    family("cryptomon_websocket_clients", "gauge", "connected live-feed clients")
    hub = app[HUB]
    lines.append(f"cryptomon_websocket_clients {len(hub.clients)}")
    family("cryptomon_websocket_messages_sent_total", "counter", "live-feed messages sent")
    lines.append(f"cryptomon_websocket_messages_sent_total {hub.messages_sent}")
    family("cryptomon_websocket_dropped_total", "counter", "clients closed for a full queue")
    lines.append(f"cryptomon_websocket_dropped_total {hub.dropped}")
    channels = app[NOTIFIER].stats()
    family(
        "cryptomon_notifications_total",
        "counter",
        "notification attempts since start by channel and outcome (delivered, failed, gave_up)",
    )
    for channel in channels:
        name = _label(channel.name)
        for result, count in (
            ("delivered", channel.sent_total),
            ("failed", channel.failed_attempts_total),
            ("gave_up", channel.gave_up_total),
        ):
            lines.append(
                f'cryptomon_notifications_total{{channel="{name}",status="{result}"}} {count}'
            )
    family("cryptomon_notifications_pending", "gauge", "notifications waiting to be sent")
    for channel in channels:
        lines.append(
            f'cryptomon_notifications_pending{{channel="{_label(channel.name)}"}} {channel.pending}'
        )
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
