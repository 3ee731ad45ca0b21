"""`check-config --live`: probe every configured provider once, now, and say what it answered.

A maintainer before a release, or a user with a new file, sees in seconds whether each
provider answers, what status it gave, which conditions held (with the value seen), its
latency, the rate-limit headers it sent and what it observed. Nothing is recorded: this
is the same probe the service sends, without the event log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TextIO

from cryptomon.config import Config
from cryptomon.probing.monitor import ProbeTarget, probe_targets, send_probe
from cryptomon.probing.probes import ProbeResult, create_probe_session

# Probes in flight at once: enough to check a catalogue in seconds, few enough that no
# provider sees more than one request from us at a time.
_CONCURRENCY = 16
# What counts as a working answer: `maintenance` is a provider telling the truth.
_PASSING = frozenset({"success", "maintenance"})


async def check_live(config: Config, environ: Mapping[str, str], out: TextIO) -> int:
    """Probe every enabled, configured provider once; print a table; 1 when any fails."""
    targets: list[ProbeTarget] = []
    skipped: list[tuple[str, str]] = []
    for provider in config.providers:
        reason = provider.skip_reason(environ)
        if reason is None:
            targets += probe_targets(provider)
        else:
            skipped.append((provider.name, reason))
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def run(target: ProbeTarget) -> ProbeResult:
        async with gate:
            return await send_probe(session, target, environ, explain=True)

    # As this file's instance would ask: a provider may answer by the region it names.
    async with create_probe_session(region=config.instance.region) as session:
        results = await asyncio.gather(*map(run, targets))
    failing = 0
    for target, result in zip(targets, results, strict=True):
        failing += _print_result(target, result, out)
    for name, reason in skipped:
        print(f"{name}  skipped: {reason}", file=out)
    probed = len({target.provider.name for target in targets})
    print(
        f"\n{probed} providers probed ({len(targets)} probes), {failing} probes failing,"
        f" {len(skipped)} skipped",
        file=out,
    )
    return 1 if failing else 0


def _print_result(target: ProbeTarget, result: ProbeResult, out: TextIO) -> int:
    """Print one probe's lines; 1 when it failed."""
    event = result.event
    passed = event.outcome in _PASSING
    status = "no answer" if event.http_status is None else f"HTTP {event.http_status}"
    latency = "" if event.latency_ms is None else f"  {event.latency_ms:.0f} ms"
    mark = "ok  " if passed else "FAIL"
    print(
        f"{mark} {target.provider.name}  {target.kind} {target.spec.method}"
        f" {target.path or '/'}  {status}  {event.outcome}{latency}",
        file=out,
    )
    if event.error_kind is not None:
        print(f"       {event.error_kind}: {event.error_message}", file=out)
    for check in result.checks:
        if check.maintenance:
            verdict = "maintenance" if check.held else "not in maintenance"
        else:
            verdict = "held" if check.held else "FAILED"
        print(f"       {verdict}: {check.condition}  (saw {check.seen})", file=out)
    if result.headers:
        shown = ", ".join(f"{name}: {value}" for name, value in sorted(result.headers.items()))
        print(f"       rate limit headers: {shown}", file=out)
    if event.observations:
        shown = ", ".join(f"{name} = {value}" for name, value in event.observations.items())
        print(f"       observed: {shown}", file=out)
    if event.certificate_not_after is not None:
        days = (event.certificate_not_after - event.started_at) / 86_400
        print(f"       TLS certificate: {days:.0f} days left", file=out)
    return 0 if passed else 1
