"""The public status page: `/status`, rendered on the server, and `/status/data.json`,
what its script polls to update the page in place.

For the public: it shows each provider's name and a plain word for its state, never an
error message, host, URL, key name or an alert's text. It works with JavaScript off (the
HTML is whole); with it on, `status.js` asks for the same facts every few seconds. Open
even when reads need a token (see `Endpoint.exemption`); `[status_page] enabled = false`
answers 404.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from typing import Literal

from aiohttp import web

from cryptomon.config import StatusPageConfig
from cryptomon.http.dashboard import CONTENT_SECURITY_POLICY
from cryptomon.http.errors import NotFound
from cryptomon.http.keys import SETTINGS
from cryptomon.http.schemas import ProviderUptimeDays, PublicProvider, PublicRegion, PublicStatus
from cryptomon.http.views import models_of, respond
from cryptomon.http.views.uptime import uptime_days
from cryptomon.isotime import iso_time
from cryptomon.projections.notices import ProviderStatus
from cryptomon.projections.providers import ProviderState

PublicState = Literal["operational", "degraded", "outage", "maintenance", "unknown"]
# What each status means to a customer: a word of state, never the details behind it.
PUBLIC_STATES: dict[ProviderStatus, tuple[PublicState, str]] = {
    "online": ("operational", "Operational"),
    "degraded": ("degraded", "Degraded performance"),
    "rate_limited": ("degraded", "Degraded performance"),
    "offline": ("outage", "Outage"),
    "maintenance": ("maintenance", "Maintenance"),
    "paused": ("unknown", "Not monitored"),
    "unconfigured": ("unknown", "No data"),
    "unknown": ("unknown", "No data"),
}
_OVERALL: dict[PublicState, str] = {
    "outage": "Some services are down",
    "degraded": "Some services are degraded",
    "maintenance": "Maintenance in progress",
    "operational": "All services operational",
    "unknown": "No data yet",
}
_WORST_FIRST: tuple[PublicState, ...] = (
    "outage",
    "degraded",
    "maintenance",
    "operational",
    "unknown",
)


def _page(request: web.Request) -> StatusPageConfig:
    page = request.app[SETTINGS].config.status_page
    if not page.enabled:
        raise NotFound("page", "the status page is turned off ([status_page] enabled = false)")
    return page


def _groups(
    page: StatusPageConfig, providers: Iterable[ProviderState]
) -> list[tuple[str, list[ProviderState]]]:
    """The headings and the providers under each: the configured groups, or by category;
    only the providers `page.providers` names, when it names any."""
    shown = [p for p in providers if not p.removed]
    if page.providers:
        wanted = {name.casefold() for name in page.providers}
        shown = [p for p in shown if p.name.casefold() in wanted]
    if page.groups:
        by_name = {p.name.casefold(): p for p in shown}
        return [
            (
                group.name,
                [by_name[n.casefold()] for n in group.providers if n.casefold() in by_name],
            )
            for group in page.groups
        ]
    categories: dict[str, list[ProviderState]] = {}
    for provider in shown:
        categories.setdefault(provider.category, []).append(provider)
    return [
        (category.replace("_", " ").capitalize(), members)
        for category, members in sorted(categories.items())
    ]


def _overall(states: Iterable[PublicState]) -> PublicState:
    """The worst state shown ("unknown" only when nothing else is)."""
    present = set(states)
    return next((state for state in _WORST_FIRST if state in present), "unknown")


def public_status(request: web.Request) -> PublicStatus:
    page = _page(request)
    groups = _groups(page, models_of(request).projections.providers.all())
    providers = [
        PublicProvider(
            name=p.name,
            group=group,
            state=PUBLIC_STATES[p.status][0],
            label=PUBLIC_STATES[p.status][1],
            regions=_regions(p),
        )
        for group, members in groups
        for p in members
    ]
    overall = _overall(p.state for p in providers)
    now = time.time()
    return PublicStatus(
        title=page.title,
        overall=overall,
        overall_label=_OVERALL[overall],
        updated_at=iso_time(float(int(now))) or "",
        providers=providers,
        incidents_html=_incidents(request, {p.name for p in providers}, now),
    )


def _regions(provider: ProviderState) -> list[PublicRegion]:
    """How each region sees the provider, in the same plain words (a region that stopped
    reporting, or has not judged it yet: no data)."""
    return [
        PublicRegion(
            name=name,
            state=PUBLIC_STATES[view.probe_status][0],
            label=PUBLIC_STATES[view.probe_status][1],
        )
        for name, view in sorted(provider.regions.items())
    ]


async def status_data(request: web.Request) -> web.Response:
    response = respond(public_status(request))
    response.headers["Cache-Control"] = "no-cache"
    return response


def _region_strip(provider: PublicProvider) -> str:
    """A chip per region with its name and the word for its state (the colour says it
    again, never alone); nothing for a provider without regions."""
    if not provider.regions:
        return ""
    escape = html.escape
    chips = "".join(
        f'<li class="region" data-region="{escape(r.name)}" data-state="{r.state}">'
        f'<span class="region-name">{escape(r.name)}</span> '
        f'<span class="region-state">{escape(r.label)}</span></li>'
        for r in provider.regions
    )
    label = escape(f"{provider.name} by region", quote=True)
    return f'<ul class="regions" aria-label="{label}">{chips}</ul>'


BAR_DAYS = 90
# Closed incidents this recent are listed under the open ones.
RECENT_SECONDS = 7 * 86_400
# An incident is an outage when one of its alerts says the provider is unusable; any
# other availability alert is degraded performance. Never the alert's own text.
_OUTAGE_KINDS = frozenset({"offline", "wrong_chain"})


def _incidents(request: web.Request, shown: set[str], now: float) -> str:
    """The open incidents of the providers shown, then those closed in the last week, and
    the providers in maintenance now: a plain sentence and the times of each."""
    projections = models_of(request).projections
    items = []
    for provider in projections.providers.all():
        if provider.name in shown and provider.status == "maintenance":
            items.append(
                f'<li class="incident" data-state="maintenance"><span class="what">'
                f"{html.escape(provider.name)}: maintenance in progress</span></li>"
            )
    for incident in projections.incidents.query(since=now - RECENT_SECONDS):
        if incident.provider not in shown:
            continue
        outage = any(alert.kind in _OUTAGE_KINDS for alert in incident.alerts)
        what = "outage" if outage else "degraded performance"
        began = iso_time(incident.started_at)
        if incident.ended_at is None:
            when = f'since <time datetime="{began}">{began}</time>'
        else:
            ended = iso_time(incident.ended_at)
            minutes = max(1, round((incident.ended_at - incident.started_at) / 60))
            when = (
                f'<time datetime="{began}">{began}</time> to <time datetime="{ended}">'
                f"{ended}</time> ({minutes} min), resolved"
            )
        items.append(
            f'<li class="incident" data-state="{"outage" if outage else "degraded"}"'
            f' data-open="{str(incident.ended_at is None).lower()}">'
            f'<span class="what">{html.escape(incident.provider)}: {what}</span>'
            f'<span class="when">{when}</span></li>'
        )
    if not items:
        return '<p class="quiet">No incidents in the last 7 days.</p>'
    return f'<ul class="incidents">{"".join(items)}</ul>'


def _bar(days: ProviderUptimeDays, dates: list[str]) -> str:
    """A provider's last 90 UTC days, one cell a day coloured by its uptime, each with
    its date and figure as a tooltip; the whole as its text alternative."""
    cells = []
    for index, (date, uptime) in enumerate(zip(dates, days.uptime_by_day, strict=True)):
        if uptime is None:
            level, said = "none", "no data"
        else:
            level = "good" if uptime >= 99.9 else "fair" if uptime >= 99 else "poor"
            level = "bad" if uptime < 95 else level
            said = f"{uptime:g}% up"
        cells.append(
            f'<rect x="{index}" width="0.8" height="10" class="day {level}">'
            f"<title>{date}: {said}</title></rect>"
        )
    overall = "no data" if days.uptime is None else f"{days.uptime:g}% up"
    label = f"Uptime over the last {BAR_DAYS} days: {overall}"
    return (
        f'<svg class="bar" viewBox="0 0 {BAR_DAYS} 10" preserveAspectRatio="none"'
        f' role="img" aria-label="{label}">{"".join(cells)}</svg>'
        f'<span class="uptime">{overall}</span>'
    )


async def status_page(request: web.Request) -> web.Response:
    status = public_status(request)
    escape = html.escape
    sections = []
    groups: dict[str, list[PublicProvider]] = {}
    for provider in status.providers:
        groups.setdefault(provider.group, []).append(provider)
    bars = uptime_days(
        models_of(request).projections,
        [p.name for p in status.providers],
        time.time(),
        BAR_DAYS,
    )
    bar_of = {days.provider: _bar(days, bars.dates) for days in bars.providers}
    for group, members in groups.items():
        rows = "".join(
            f'<li class="provider" data-provider="{escape(p.name)}" data-state="{p.state}">'
            f'<span class="name">{escape(p.name)}</span>'
            f'<span class="state">{escape(p.label)}</span>'
            f"{_region_strip(p)}"
            f'<span class="history">{bar_of[p.name]}</span></li>'
            for p in members
        )
        sections.append(f"<section><h2>{escape(group)}</h2><ul>{rows}</ul></section>")
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(status.title)}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/status.css">
<script src="/static/status.js" defer></script>
</head>
<body>
<main>
<h1>{escape(status.title)}</h1>
<p id="overall" class="overall" data-state="{status.overall}">{escape(status.overall_label)}</p>
{"".join(sections) or '<p class="empty">No services are listed.</p>'}
<section><h2>Incidents</h2><div id="incidents">{status.incidents_html}</div></section>
<p class="updated">Updated <time id="updated" datetime="{status.updated_at}">\
{status.updated_at}</time></p>
</main>
</body>
</html>
"""
    response = web.Response(
        text=body,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Vary": "Accept-Encoding",
        },
    )
    # The bars make the page some 100 KB of repetitive markup, a tenth of that gzipped.
    response.enable_compression()
    return response
