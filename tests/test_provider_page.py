"""A provider's page and the REST it reads: uptime per day, latency percentiles per point,
rate-limit usage per hour; served by the real app, and driven in Debian's chromium.

The probes are appended to the app's own event store with the times a test wants (the
past 90 days), as the monitor would have recorded them; nothing is probed. The page is
checked with axe-core, the copy that the PyPI package axe-playwright-python ships (no
network: the script is read from the installed package). The README's
screenshots (docs/provider.png, docs/provider-phone.png) are written by the browser test
when CRYPTOMON_SCREENSHOT=1, to tmp_path otherwise.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpClient
from standins import closed_port
from test_dashboard import BROWSER_ACCEPT, ThreadedService, browser, needs_chromium

from cryptomon.config import load_config
from cryptomon.events.types import Event, ProbeOutcome, ProbeRecorded, RateLimitChanged
from cryptomon.http.errors import PROBLEM_TYPE
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.schemas import ProviderSeries, ProviderView, RateLimitHistory, UptimeDaily
from cryptomon.http.settings import Settings
from cryptomon.projections import Projections, ProjectionSettings
from cryptomon.projections.rate_limits import HISTORY_SECONDS
from cryptomon.service.app import create_app

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_dashboard

DOCS = Path(__file__).resolve().parent.parent / "docs"
HOUR = 3600.0
DAY = 86_400.0
Client = TestClient[web.Request, web.Application]


def midnight(moment: float) -> float:
    return moment // DAY * DAY


def date_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def probe(
    provider: str,
    at: float,
    outcome: ProbeOutcome = "success",
    latency: float = 120.0,
    **extra: Any,
) -> ProbeRecorded:
    failed = outcome != "success"
    kinds = {"failed": "connection_refused", "timeout": "timeout", "rate_limited": "rate_limited"}
    return ProbeRecorded(
        provider,
        "health",
        "/",
        outcome,
        started_at=at,
        latency_ms=latency,
        http_status=None if failed else 200,
        error_kind=kinds[outcome] if failed else None,  # type: ignore[arg-type]
        error_message=f"{provider} said no" if failed else None,
        **extra,
    )


def usage(provider: str, at: float, percentage: float, blocked: float | None = None) -> Event:
    return RateLimitChanged(
        provider=provider,
        used=round(percentage * 0.6),
        limit=60,
        window_seconds=60.0,
        percentage=percentage,
        observed_at=at,
        reset_at=at + 30,
        blocked_until=blocked,
    )


def config_text() -> str:
    gone = f"http://127.0.0.1:{closed_port()}"
    return (
        '[websocket]\nstatus_interval = "1h"\n'
        f'[[providers]]\nname = "Steady"\ncategory = "rpc_nodes"\nbase_url = "{gone}"\n'
        'interval = "1h"\nrate_limit = { requests = 60, per = "60s" }\n'
        'rpc = { method = "eth_blockNumber" }\nobserve = { head = "[BODY].result" }\n'
        'chain = "ethereum"\n'
        f'[[providers]]\nname = "Quiet"\ncategory = "news"\nbase_url = "{gone}"\n'
        'interval = "1h"\n'
    )


def settings_for(tmp_path: Path) -> Settings:
    path = tmp_path / "pages.toml"
    path.write_text(config_text())
    return Settings.from_config(
        load_config(path), database=tmp_path / "pages.db", environ={}, probing=False
    )


class History:
    """Steady's last 90 days: four probes a day, a day at 75% and one at 50%, two days
    without probes, probes every five minutes over the last hour with two failures, usage
    crossing thresholds and a block. Quiet has no probes at all."""

    def __init__(self, now: float) -> None:
        self.now = now
        today = midnight(now)
        self.poor_day = today - 5 * DAY  # 3 of 4
        self.worse_day = today - 10 * DAY  # 2 of 4
        self.empty_days = (today - 30 * DAY, today - 31 * DAY)
        events: list[Event] = []
        head = 1000
        for back in range(89, 0, -1):
            day = today - back * DAY
            if day in self.empty_days:
                continue
            for slot in range(4):
                outcome: ProbeOutcome = "success"
                if (day == self.poor_day and slot == 1) or (day == self.worse_day and slot < 2):
                    outcome = "timeout" if day == self.worse_day else "failed"
                head += 1
                events.append(
                    probe("Steady", day + (3 + slot * 6) * HOUR, outcome, 100.0 + slot * 50,
                          observations={"head": head})
                )  # fmt: skip
        # The last hour, one probe every five minutes; two of them fail.
        for step in range(12):
            at = now - 3600 + step * 300 + 30
            outcome = "failed" if step == 4 else "timeout" if step == 8 else "success"
            head += 1
            events.append(
                probe("Steady", at, outcome, 80.0 + step * 10, observations={"head": head},
                      certificate_not_after=now + 45.5 * DAY)
            )  # fmt: skip
        self.head = head
        self.probes = [event for event in events if isinstance(event, ProbeRecorded)]
        events += [
            usage("Steady", now - 50 * HOUR, 50.0),
            usage("Steady", now - 49 * HOUR, 80.0),
            usage("Steady", now - 3 * HOUR, 100.0, blocked=now - 3 * HOUR + 60),
            usage("Steady", now - 2 * HOUR, 40.0),
        ]
        self.events = sorted(events, key=event_time)

    def per_day(self) -> dict[str, tuple[int, int]]:
        """Date -> (probes, failures), as the bars must show them."""
        probes: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for event in self.probes:
            day = date_of(event.started_at)
            probes[day] += 1
            failures[day] += event.outcome != "success"
        return {day: (probes[day], failures[day]) for day in probes}


def event_time(event: Event) -> float:
    if isinstance(event, ProbeRecorded):
        return event.started_at
    assert isinstance(event, RateLimitChanged)
    return event.observed_at


async def record(app: web.Application, events: Sequence[Event]) -> None:
    """Append each event as the monitor would, and wait until the read models have them."""
    store = app[STORE]
    for event in events:
        assert isinstance(event, ProbeRecorded | RateLimitChanged)
        await store.append(f"provider:{event.provider}", [event])
    async with asyncio.timeout(20):
        await app[READ_MODELS].wait_for(store.head)


# ---- REST ---------------------------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> tuple[Client, History]:
    history = History(time.time())
    client = await aiohttp_client(create_app(settings_for(tmp_path)))
    assert client.app is not None
    await record(client.app, history.events)
    return client, history


async def get(client: Client, path: str, status: int = 200) -> Any:
    async with client.get(path, headers={"Accept": "application/json"}) as response:
        assert response.status == status, (path, await response.text())
        body = await response.read()
        if status >= 400:
            assert response.content_type == PROBLEM_TYPE
        return msgspec.json.decode(body)


async def test_uptime_daily_answers_every_provider_per_utc_day(
    client: tuple[Client, History],
) -> None:
    http, history = client
    body = await get(http, "/api/uptime/daily")
    daily = msgspec.convert(body, UptimeDaily)
    today = midnight(history.now)
    assert (daily.days, daily.count) == (90, 2)
    dates = [date_of(today - i * DAY) for i in range(89, -1, -1)]
    assert daily.dates == dates
    steady, quiet = daily.providers
    assert (steady.provider, quiet.provider) == ("Steady", "Quiet")
    expected = history.per_day()
    for index, date in enumerate(dates):
        probes, failures = expected.get(date, (0, 0))
        found = (steady.probes_by_day[index], steady.failures_by_day[index])
        assert found == (probes, failures), date
        uptime = round((probes - failures) / probes * 100, 2) if probes else None
        assert steady.uptime_by_day[index] == uptime, date
    by_date = dict(zip(dates, steady.uptime_by_day, strict=True))
    assert by_date[date_of(history.poor_day)] == 75.0
    assert by_date[date_of(history.worse_day)] == 50.0
    assert all(by_date[date_of(day)] is None for day in history.empty_days)
    assert steady.probes == len(history.probes)
    assert steady.failures == sum(p.outcome != "success" for p in history.probes)
    total = round((steady.probes - steady.failures) / steady.probes * 100, 2)
    assert steady.uptime == total
    assert (quiet.probes, quiet.uptime) == (0, None)
    assert quiet.uptime_by_day == [None] * 90 and quiet.probes_by_day == [0] * 90

    # One provider, fewer days: today alone.
    one = msgspec.convert(await get(http, "/api/uptime/daily?provider=Steady&days=1"), UptimeDaily)
    assert one.count == 1 and one.dates == [date_of(today)]
    assert one.providers[0].probes_by_day == steady.probes_by_day[-1:]
    assert one.providers[0].uptime_by_day == steady.uptime_by_day[-1:]


async def test_uptime_daily_refuses_bad_input_naming_the_parameter(
    client: tuple[Client, History],
) -> None:
    http, _ = client
    for query, parameter in (
        ("days=0", "days"),
        ("days=401", "days"),
        ("days=ninety", "days"),
        ("days=1.5", "days"),
        ("days=1&days=2", "days"),
        ("provider=", "provider"),
        ("provider=" + "x" * 101, "provider"),
    ):
        problem = await get(http, f"/api/uptime/daily?{query}", 400)
        assert problem["parameter"] == parameter, query
        assert problem["type"] == "/problems/invalid-parameter"
    problem = await get(http, "/api/uptime/daily?provider=Nobody", 404)
    assert problem["type"] == "/problems/unknown-provider"
    assert "Nobody" in problem["detail"]


async def test_series_points_carry_p50_and_p95_from_the_rollups(
    client: tuple[Client, History],
) -> None:
    http, _ = client
    app = http.app
    assert app is not None
    metrics = app[READ_MODELS].projections.metrics
    series = msgspec.convert(
        await get(http, "/api/providers/Steady/series?hours=1"), ProviderSeries
    )
    with_latency = [p for p in series.points if p.avg_response_time_ms is not None]
    assert len(with_latency) == 10  # twelve probes, two of them failed
    for point in series.points:
        start = datetime.fromisoformat(point.timestamp).timestamp()
        window = metrics.window("Steady", start, start + 60, "health")
        assert point.p50_ms == (None if window.p50 is None else round(window.p50, 1))
        assert point.p95_ms == (None if window.p95 is None else round(window.p95, 1))
    # Coarser points: a day of hours, a month of days; each point's p95 >= its p50.
    for hours in (24, 168, 720):
        coarse = msgspec.convert(
            await get(http, f"/api/providers/Steady/series?hours={hours}"), ProviderSeries
        )
        known = [p for p in coarse.points if p.p50_ms is not None]
        assert known, hours
        assert all(p.p95_ms is not None and p.p95_ms >= p.p50_ms for p in known)
    # The system's series has them too.
    system = await get(http, "/api/status/metrics?hours=1")
    assert any(point["p95_ms"] is not None for point in system["points"])


async def test_rate_limit_history_per_hour_carries_the_level_between_changes(
    client: tuple[Client, History],
) -> None:
    http, history = client
    body = await get(http, "/api/rate-limits/Steady/history?hours=60")
    usage_hours = msgspec.convert(body, RateLimitHistory)
    assert (usage_hours.hours, usage_hours.step_seconds, len(usage_hours.points)) == (60, 3600, 60)
    assert (usage_hours.limit_value, usage_hours.limit_type) == (60, "per_minute")
    current = history.now // HOUR * HOUR
    starts = [datetime.fromisoformat(p.hour).timestamp() for p in usage_hours.points]
    assert starts == [current - (59 - i) * HOUR for i in range(60)]

    def at(moment: float) -> Any:
        return usage_hours.points[starts.index(moment // HOUR * HOUR)]

    # Before the first change: unknown.
    assert at(history.now - 55 * HOUR).peak_percentage is None
    first = at(history.now - 50 * HOUR)
    assert (first.opening_percentage, first.peak_percentage, first.closing_percentage) == (
        0.0, 50.0, 50.0,
    )  # fmt: skip
    assert first.reported and not first.blocked
    assert at(history.now - 49 * HOUR).closing_percentage == 80.0
    carried = at(history.now - 20 * HOUR)
    assert (carried.peak_percentage, carried.reported) == (80.0, False)
    blocked = at(history.now - 3 * HOUR)
    assert (blocked.opening_percentage, blocked.peak_percentage, blocked.blocked) == (
        80.0, 100.0, True,
    )  # fmt: skip
    assert at(history.now - 2 * HOUR).closing_percentage == 40.0
    assert at(history.now).peak_percentage == 40.0 and not at(history.now).reported
    # The default is a week; bad input names the parameter; unknown names are 404.
    week = await get(http, "/api/rate-limits/Steady/history")
    assert len(week["points"]) == 168
    for query in ("hours=0", "hours=721", "hours=soon", "hours=2.5"):
        problem = await get(http, f"/api/rate-limits/Steady/history?{query}", 400)
        assert problem["parameter"] == "hours", query
    problem = await get(http, "/api/rate-limits/Nobody/history", 404)
    assert problem["type"] == "/problems/unknown-provider"
    problem = await get(http, "/api/rate-limits/Quiet/history", 404)
    assert problem["type"] == "/problems/unknown-rate-limit"


async def test_the_provider_page_is_html_for_browsers_and_the_view_for_api_clients(
    client: tuple[Client, History],
) -> None:
    http, _ = client
    async with http.get("/providers/Steady", headers={"Accept": BROWSER_ACCEPT}) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Vary"] == "Accept, Accept-Encoding"
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert 'src="../static/provider.js"' in page and 'href="../static/dashboard.css"' in page
    async with http.get("/providers/Nobody", headers={"Accept": "text/html"}) as response:
        assert response.status == 404  # the page, which says so
        assert response.content_type == "text/html"
    view = msgspec.convert(await get(http, "/providers/Steady"), ProviderView)
    assert view.name == "Steady" and view.certificate is not None
    problem = await get(http, "/providers/Nobody", 404)
    assert problem["type"] == "/problems/unknown-provider"
    # Nothing from elsewhere: every file the page loads is ours, and the script fetches
    # nothing but relative URLs (its only absolute one is the SVG namespace, never fetched).
    for link in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert not re.match(r"^(?:[a-z]+:)?//", link), link
    async with http.get("/static/provider.js") as response:
        assert response.status == 200 and response.content_type == "text/javascript"
        script = await response.text()
    assert "import " not in script and "require(" not in script
    assert set(re.findall(r"https?://[^\s\"'`]+", script)) == {"http://www.w3.org/2000/svg"}
    async with http.get("/static/provider.html") as response:
        assert response.status == 404  # pages have their own addresses


# ---- the folds behind them ------------------------------------------------------------

SMALL = ProjectionSettings(
    minute_retention_seconds=HOUR, hour_retention_seconds=2 * DAY, day_retention_seconds=400 * DAY
)
T0 = 1_700_006_400.0  # a UTC midnight


@settings(max_examples=60, deadline=None)
@given(
    offsets=st.lists(st.floats(0, 100 * DAY), min_size=1, max_size=80),
    outcomes=st.lists(st.sampled_from(["success", "success", "failed", "timeout"]), min_size=80),
)
def test_daily_counts_match_each_days_window_whatever_the_granularity(
    offsets: list[float], outcomes: list[ProbeOutcome]
) -> None:
    """One pass over days, hours and minute blocks gives each day what a window over that
    day gives, with probes old enough to be days, hours and minutes (late ones too)."""
    projections = Projections(SMALL)
    log = list(zip(offsets, outcomes, strict=False))
    for position, (offset, outcome) in enumerate(log, start=1):
        projections.fold_columns([position], [T0 + offset], [probe("A", T0 + offset, outcome)])
    metrics = projections.metrics
    probes, failures = metrics.daily("A", int(T0), 101, "health")
    assert sum(probes) == len(log)
    for index, (count, failed) in enumerate(zip(probes, failures, strict=True)):
        start = T0 + index * DAY
        window = metrics.window("A", start, start + DAY, "health")
        assert (count, failed) == (window.count, window.failures)
    assert metrics.daily("nobody", int(T0), 3) == ([0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="midnight"):
        metrics.daily("A", int(T0) + 1, 3)


def test_rate_limit_hours_are_kept_thirty_days_the_newest_always() -> None:
    projections = Projections()
    events = [usage("A", T0, 90.0), usage("A", T0 + 10, 50.0), usage("A", T0 + 40 * DAY, 80.0)]
    for position, event in enumerate(events, start=1):
        projections.fold_columns([position], [event_time(event)], [event])
    kept = projections.rate_limits.state.history["A"]
    assert list(kept) == [T0 + 40 * DAY]  # the first hour is older than 30 days by then
    assert HISTORY_SECONDS == 30 * DAY
    hours = projections.rate_limits.hours("A", T0 + 40 * DAY - 2 * HOUR, T0 + 40 * DAY + HOUR)
    assert hours[0] is None and hours[1] is None
    assert hours[2] is not None and hours[2][0].opening == 50.0 and hours[2][0].peak == 80.0
    carried = hours[3]
    assert carried is not None and carried[1] is False and carried[0].peak == 80.0
    # A late change for an hour already dropped is left out.
    late = usage("A", T0 + HOUR, 99.0)
    projections.fold_columns([4], [T0 + 40 * DAY], [late])
    assert list(projections.rate_limits.state.history["A"]) == [T0 + 40 * DAY]


# ---- in a real browser --------------------------------------------------------------

# Records every layout shift not caused by input, as Lighthouse's CLS counts them.
LAYOUT_SHIFTS = """
window.layoutShift = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if (!entry.hadRecentInput) window.layoutShift += entry.value;
  }
}).observe({ type: "layout-shift", buffered: true });
"""


@pytest.fixture
def page_service(tmp_path: Path) -> Iterator[tuple[ThreadedService, History]]:
    service = ThreadedService(settings_for(tmp_path))
    history = History(time.time())
    try:
        service.call(record(service.app, history.events))
        yield service, history
    finally:
        service.stop()


def screenshot(page: Any, tmp_path: Path, name: str, *, full_page: bool = True) -> None:
    target = DOCS / name if os.environ.get("CRYPTOMON_SCREENSHOT") == "1" else tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.mouse.move(0, 0)
    page.locator("#uptime-bar").blur()  # no tooltip in the picture
    page.screenshot(path=str(target), full_page=full_page)
    assert target.stat().st_size > 10_000


def accessibility_violations(page: Any) -> list[str]:
    """axe-core's violations on the page as it stands, one line each (rule: elements)."""
    axe = pytest.importorskip("axe_playwright_python.base")
    # Evaluated through the DevTools protocol: the page's CSP (script-src 'self') is ours
    # to keep, and does not apply to it.
    page.evaluate(axe.AXE_SCRIPT)
    result = page.evaluate("axe.run(document, { resultTypes: ['violations'] })")
    return [
        f"{violation['id']}: {[node['target'] for node in violation['nodes']][:5]}"
        for violation in result["violations"]
    ]


def check_page(page: Any, history: History) -> None:
    """What both widths must show of Steady."""
    from playwright.sync_api import expect

    expect(page.locator("#page")).not_to_have_attribute("aria-busy", "true", timeout=10_000)
    expect(page.locator("#refreshed")).to_have_attribute("data-state", "live")
    expect(page.locator("#provider-name")).to_have_text("Steady")
    expect(page).to_have_title("Steady · cryptomon")

    # The bar: one cell a day, coloured by uptime, a tooltip for each.
    cells = page.locator("#uptime-bar .day")
    expect(cells).to_have_count(90)
    levels = page.evaluate(
        "() => [...document.querySelectorAll('#uptime-bar .day')].map(c => c.dataset.level)"
    )
    expected = history.per_day()
    today = midnight(history.now)
    dates = [date_of(today - i * DAY) for i in range(89, -1, -1)]
    assert levels.count("none") == sum(date not in expected for date in dates)
    assert levels[dates.index(date_of(history.poor_day))] == "poor"  # 75%
    tip = page.locator("#uptime-tip")
    poor = cells.nth(dates.index(date_of(history.poor_day)))
    poor.hover()
    expect(tip).to_be_visible()
    expect(tip).to_have_text(f"{date_of(history.poor_day)} · 75.00% uptime · 4 probes · 1 failure")
    empty = cells.nth(dates.index(date_of(history.empty_days[0])))
    empty.hover()
    expect(tip).to_have_text(f"{date_of(history.empty_days[0])} · no data")
    good = cells.nth(dates.index(date_of(today - 2 * DAY)))
    good.hover()
    expect(tip).to_have_text(f"{date_of(today - 2 * DAY)} · 100% uptime · 4 probes · 0 failures")
    # The keyboard reads it too, a day at a time.
    page.mouse.move(0, 0)
    page.locator("#uptime-bar").focus()
    expect(tip).to_contain_text(date_of(today - 2 * DAY))  # where it was last
    page.keyboard.press("End")
    expect(tip).to_contain_text(date_of(today))
    page.keyboard.press("ArrowLeft")
    expect(tip).to_contain_text(date_of(today - DAY))
    label = page.locator("#uptime-bar").get_attribute("aria-label")
    assert "2 days without data" in label and date_of(history.worse_day) in label

    # Four latency charts, each with its p50 and p95 lines and a text alternative.
    for range_ in ("1h", "24h", "7d", "30d"):
        chart = page.locator(f'.chart[data-range="{range_}"]')
        assert int(chart.get_attribute("data-points")) > 0, range_
        for line in ("p50", "p95"):
            assert chart.locator(f"path.{line}").get_attribute("d").startswith("M"), range_
        alternative = chart.locator("svg").get_attribute("aria-label")
        assert "p50" in alternative and "p95" in alternative, alternative
        expect(chart.locator(".chart-summary")).to_contain_text("p95")
    hour = page.locator('.chart[data-range="1h"]')
    expect(hour.locator("rect.fail")).to_have_count(2)  # two minutes with a failed probe
    expect(hour.locator(".chart-summary")).to_contain_text("12 probes")

    # Rate-limit usage per hour: the crossings, and the block.
    usage_chart = page.locator("#ratelimit-chart")
    assert page.locator("#ratelimit-chart rect.use").count() >= 49
    expect(usage_chart.locator("rect.blocked")).to_have_count(1)
    expect(usage_chart.locator(".chart-summary")).to_contain_text("blocked in 1 hour")
    expect(usage_chart.locator(".chart-summary")).to_contain_text("highest 100%")

    # The last probes, newest first, with their error kinds.
    rows = page.locator("#probes tbody tr")
    expect(rows).to_have_count(12 + 8)
    kinds = rows.locator(".error-kind").all_inner_texts()
    assert kinds[3] == "timeout" and kinds[7] == "connection_refused", kinds
    assert kinds.count("\N{EN DASH}") == len(kinds) - 2
    # Its certificate and chain facts.
    certificate = page.locator('#facts [data-fact="certificate"]')
    expect(certificate).to_contain_text("45 days left")
    chain = page.locator('#facts [data-fact="chain"]')
    expect(chain).to_contain_text("chain ethereum")
    expect(chain).to_contain_text(f"head {history.head}")
    expect(page.locator('#facts [data-fact="observation-head"]')).to_contain_text(str(history.head))

    # Accessibility basics, in the light and the dark scheme: labels, contrast, names.
    page.mouse.move(0, 0)
    page.locator("#uptime-bar").blur()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert accessibility_violations(page) == [], scheme
    page.emulate_media(color_scheme="light")


@needs_chromium
def test_provider_page_at_desktop_and_phone_width(
    browser: Any, page_service: tuple[ThreadedService, History], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    service, history = page_service
    errors: list[str] = []
    desktop = browser.new_page(viewport={"width": 1280, "height": 800})
    desktop.on("pageerror", lambda error: errors.append(str(error)))
    desktop.add_init_script(LAYOUT_SHIFTS)
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.on("pageerror", lambda error: errors.append(str(error)))
    phone.add_init_script(LAYOUT_SHIFTS)
    try:
        # The main page's card links to the provider's page.
        desktop.goto(service.url + "/")
        link = desktop.locator('#providers [data-provider="Steady"] h3 a')
        expect(link).to_have_attribute("href", "providers/Steady")
        link.click()
        desktop.wait_for_url(service.url + "/providers/Steady")
        check_page(desktop, history)
        shift = desktop.evaluate("window.layoutShift")
        assert shift < 0.1, shift
        screenshot(desktop, tmp_path, "provider.png")

        phone.goto(service.url + "/providers/Steady")
        check_page(phone, history)
        assert phone.evaluate("window.layoutShift") < 0.1
        # Nothing wider than the screen; the bar's cells still have a width to touch.
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        width = phone.locator("#uptime-bar .day").first.bounding_box()["width"]
        assert width >= 2, width
        screenshot(phone, tmp_path, "provider-phone.png", full_page=False)  # its first screen

        # A name nobody has: the page says so.
        desktop.goto(service.url + "/providers/Nobody")
        expect(desktop.locator("#load-error")).to_contain_text("No provider is named “Nobody”")
        assert errors == []
    finally:
        desktop.close()
        phone.close()
