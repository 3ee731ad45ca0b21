"""Decoding replay pages: events of the current schema against pages of older versions.

    python benchmarks/bench_decode.py [--events 200000] [--page 1000] [--repeat 5]

A replay decodes the log a page at a time (`decode_events`). ProbeRecorded v3 only added
fields with defaults to v2, so a v2 page must take the same typed fast path as a v3 page;
v1 renamed fields and needs its upcaster, row by row. A page of v3 probes holding one
AlertAcknowledged of schema 1 (an old log's acknowledgement, upcast) re-decodes that row
alone. Prints events/s for each, best of `--repeat`, and each ratio against the v3 pages
measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import time

from cryptomon.events.types import (
    ConditionSeen,
    ProbeRecorded,
    decode_events,
    encode_event,
)


def v2_payload(index: int, rng: random.Random) -> bytes:
    failed = rng.random() < 0.1
    probe = ProbeRecorded(
        provider=f"p{index % 100:03d}",
        kind="health",
        endpoint="/ping",
        outcome="failed" if failed else "success",
        started_at=1_700_000_000.0 + index * 0.3,
        latency_ms=round(rng.uniform(20, 900), 3),
        http_status=503 if failed else 200,
        response_bytes=rng.randint(20, 2000),
        error_kind="http_5xx" if failed else None,
        error_message="api.example answered HTTP 503" if failed else None,
        scheduled_at=1_700_000_000.0 + index * 0.3 - 0.001,
    )
    return encode_event(probe)


def v3_payload(index: int, rng: random.Random) -> bytes:
    """A probe with what v3 added: observations, a certificate date, sometimes a condition."""
    probe = ProbeRecorded(
        provider=f"p{index % 100:03d}",
        kind="health",
        endpoint="/rpc",
        outcome="success",
        started_at=1_700_000_000.0 + index * 0.3,
        latency_ms=round(rng.uniform(20, 900), 3),
        http_status=200,
        response_bytes=rng.randint(20, 2000),
        scheduled_at=1_700_000_000.0 + index * 0.3 - 0.001,
        certificate_not_after=1_720_000_000.0,
        observations={"head": 20_000_000 + index},
        condition=ConditionSeen("[BODY][1].result == 0x1", "0x1") if index % 50 == 0 else None,
    )
    return encode_event(probe)


def v1_payload(v2: bytes) -> bytes:
    """The same probe in v1's names (`response_time_ms`, `status`): it needs its upcaster."""
    return v2.replace(b'"latency_ms"', b'"response_time_ms"').replace(b'"outcome"', b'"status"')


def rate(pages: list[list[bytes]], version: int, repeat: int) -> float:
    rows = [(["ProbeRecorded"] * len(page), [version] * len(page), page) for page in pages]
    return rate_rows(rows, repeat)


def rate_rows(pages: list[tuple[list[str], list[int], list[bytes]]], repeat: int) -> float:
    """Events/s decoding pages given as (types, schema versions, payloads)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for types, versions, payloads in pages:
            decode_events(range(len(payloads)), types, versions, payloads)
        best = min(best, time.perf_counter() - started)
    return sum(len(payloads) for _, _, payloads in pages) / best


def with_v1_acknowledgement(page: list[bytes]) -> tuple[list[str], list[int], list[bytes]]:
    """The page with its middle row replaced by a schema-1 AlertAcknowledged."""
    ack = b'{"type":"AlertAcknowledged","alert_id":12340,"actor":"alice","acknowledged_at":5.0}'
    middle = len(page) // 2
    types = ["ProbeRecorded"] * len(page)
    versions = [3] * len(page)
    types[middle], versions[middle] = "AlertAcknowledged", 1
    return types, versions, [*page[:middle], ack, *page[middle + 1 :]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    v2 = [v2_payload(i, rng) for i in range(args.events)]
    v3 = [v3_payload(i, rng) for i in range(args.events)]
    v1 = [v1_payload(payload) for payload in v2]

    def paged(payloads: list[bytes]) -> list[list[bytes]]:
        return [payloads[i : i + args.page] for i in range(0, len(payloads), args.page)]

    # The same bytes labelled with the current version: the fast path at its fastest.
    baseline = rate(paged(v2), 3, args.repeat)
    print(f"{args.events:,} ProbeRecorded events, pages of {args.page}, best of {args.repeat}")
    print(f"v2 probes in v3 pages (baseline): {baseline:>10,.0f} events/s")
    for label, payloads, version in (
        ("v2 pages (fast path)", v2, 2),
        ("v3 pages with observations", v3, 3),
        ("v1 pages (upcast row by row)", v1, 1),
    ):
        measured = rate(paged(payloads), version, args.repeat)
        print(f"{label}: {measured:>10,.0f} events/s, ratio to baseline {measured / baseline:.2f}")
    # Alternating, best of each: on a loaded machine a ratio of two runs apart is noise.
    v3_pages = [(["ProbeRecorded"] * len(page), [3] * len(page), page) for page in paged(v3)]
    acked_pages = [with_v1_acknowledgement(page) for _, _, page in v3_pages]
    plain = mixed = 0.0
    for _ in range(args.repeat):
        plain = max(plain, rate_rows(v3_pages, 1))
        mixed = max(mixed, rate_rows(acked_pages, 1))
    print(
        f"v3 pages with a v1 acknowledgement each: {mixed:>10,.0f} events/s,"
        f" ratio to the same v3 pages without {mixed / plain:.2f}"
    )


if __name__ == "__main__":
    main()
