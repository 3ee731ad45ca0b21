"""The public status page: rendered on the server, whole with JavaScript off, updated in
place with it on, at desktop and phone widths in real Chromium; nothing internal on it."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from test_dashboard import ThreadedService, browser, needs_chromium
from test_projections import probe
from test_provider_page import LAYOUT_SHIFTS, accessibility_violations

from cryptomon.config import ConfigError, load_config
from cryptomon.http.settings import Settings

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_dashboard
ROOT = Path(__file__).resolve().parents[1]
SECRET_URL = "http://127.0.0.1:9/internal-host-name"


def config_text(extra: str = "") -> str:
    providers = "".join(
        f'[[providers]]\nname = "{name}"\ncategory = "{category}"\n'
        f'base_url = "{SECRET_URL}"\nhealth_path = "/private"\ninterval = "1h"\n'
        f'api_key_env = "HIDDEN_KEY_NAME"\napi_key_header = "X-Key"\napi_key_optional = true\n'
        for name, category in (("Alpha", "exchanges"), ("Beta <b>", "exchanges"), ("Gamma", "news"))
    )
    return "[monitoring]\noffline_after_failures = 1\n" + extra + providers


def started(tmp_path: Path, extra: str = "", environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "status.toml"
    path.write_text(config_text(extra))
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "status.db", environ=environ or {}, probing=False
    )
    return ThreadedService(settings)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Any]:
    running = started(tmp_path, '[status_page]\ntitle = "Acme status"\n')
    try:
        yield running
    finally:
        running.stop()


def failing(name: str, at: float) -> Any:
    failed = probe(name, at, "failed", error_kind="connection_refused")
    return failed


def test_the_page_shows_states_in_plain_words_and_nothing_internal(service: Any) -> None:
    today = time.time() // 86_400 * 86_400  # today's cell, however soon after midnight
    service.append(probe("Alpha", today + 1), failing("Beta <b>", today + 2))
    status, page, headers = fetch(service.url + "/status")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "<title>Acme status</title>" in page
    # Each row has its 90-day bar: a cell a day, today's from the probes just appended.
    bars = re.findall(r'<svg class="bar"[^>]*aria-label="([^"]+)">(.*?)</svg>', page)
    assert len(bars) == 3
    labels = [label for label, _ in bars]
    assert labels == [
        "Uptime over the last 90 days: 100% up",
        "Uptime over the last 90 days: 0% up",
        "Uptime over the last 90 days: no data",
    ]
    cells = re.findall(r'class="day (\w+)"><title>([^<]+)</title>', bars[1][1])
    assert len(cells) == 90 and cells[-1][0] == "bad" and cells[-1][1].endswith(": 0% up")
    assert {level for level, _ in cells[:-1]} == {"none"}
    rows = dict(re.findall(r'data-provider="([^"]+)" data-state="([a-z]+)"', page))
    assert rows == {"Alpha": "operational", "Beta &lt;b&gt;": "outage", "Gamma": "unknown"}
    assert "Some services are down" in page and "<b>" not in page
    assert re.findall(r"<h2>([^<]+)</h2>", page) == ["Exchanges", "News", "Incidents"]
    # Beta's outage is an incident, said in plain words, never in its alert's.
    [incident] = re.findall(r'<li class="incident"[^>]*>(.*?)</li>', page)
    assert "Beta &lt;b&gt;: outage" in incident and "since" in incident
    assert "consecutive" not in page and "offline" not in page
    for internal in ("127.0.0.1:9", "internal-host-name", "/private", "HIDDEN_KEY_NAME",
                     "X-Key", "connection_refused", "refused"):  # fmt: skip
        assert internal not in page, internal
    status, body, _ = fetch(service.url + "/status/data.json")
    data = json.loads(body)
    assert status == 200 and data["overall"] == "outage"
    assert [(p["name"], p["state"]) for p in data["providers"]] == [
        ("Alpha", "operational"), ("Beta <b>", "outage"), ("Gamma", "unknown")
    ]  # fmt: skip
    assert "internal-host-name" not in body and "HIDDEN" not in body
    # The Incidents section as the page has it, for the script to follow them live.
    assert data["incidents_html"] in page and "Beta &lt;b&gt;: outage" in data["incidents_html"]


def test_groups_and_a_provider_list_from_the_config_and_turning_it_off(tmp_path: Path) -> None:
    grouped = started(
        tmp_path,
        '[status_page]\nproviders = ["Gamma", "Alpha"]\n'
        '[[status_page.groups]]\nname = "Core"\nproviders = ["Gamma", "Alpha"]\n',
    )
    try:
        _, page, _ = fetch(grouped.url + "/status")
        assert re.findall(r"<h2>([^<]+)</h2>", page) == ["Core", "Incidents"]
        assert re.findall(r'data-provider="([^"]+)"', page) == ["Gamma", "Alpha"]
    finally:
        grouped.stop()
    off = started(tmp_path, "[status_page]\nenabled = false\n")
    try:
        for path in ("/status", "/status/data.json"):
            status, body, _ = fetch(off.url + path)
            assert status == 404 and json.loads(body)["type"] == "/problems/unknown-page"
    finally:
        off.stop()


def test_the_page_is_open_when_reads_need_a_token(tmp_path: Path) -> None:
    reads = started(
        tmp_path,
        '[server]\nread_token_env = "READ_TOKEN"\n',
        environ={"READ_TOKEN": "r" * 24},
    )
    try:
        assert fetch(reads.url + "/api/providers")[0] == 401
        assert fetch(reads.url + "/status")[0] == 200
        assert fetch(reads.url + "/status/data.json")[0] == 200
        assert fetch(reads.url + "/static/status.js")[0] == 200
    finally:
        reads.stop()


def test_a_provider_the_page_names_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(config_text('[status_page]\nproviders = ["Ghost"]\ntitle = ""\n'))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    joined = "\n".join(refused.value.errors)
    assert "status_page.providers: 'Ghost' is not a configured provider" in joined
    assert "status_page.title" in joined


@needs_chromium
@pytest.mark.parametrize(
    ("width", "height", "label"), [(1280, 800, "desktop"), (390, 844, "phone")]
)
def test_in_chromium_whole_without_javascript_and_live_with_it(
    browser: Any, service: Any, tmp_path: Path, width: int, height: int, label: str
) -> None:
    """Whole without JavaScript; with it, a change shows in place, the layout shifting less
    than Lighthouse's "good" (0.1), and axe-core finds no violation in either scheme."""
    from playwright.sync_api import expect

    now = time.time()
    service.append(probe("Alpha", now - 5), probe("Beta <b>", now - 5), probe("Gamma", now - 5))
    still = browser.new_context(
        java_script_enabled=False, viewport={"width": width, "height": height}
    )
    page = still.new_page()
    try:
        page.goto(service.url + "/status")
        expect(page.locator("#overall")).to_have_text("All services operational")
        expect(page.locator(".provider")).to_have_count(3)
        assert page.evaluate("document.documentElement.dataset.live") is None
        # No horizontal scrolling at this width.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        # The README's screenshots, refreshed with CRYPTOMON_SCREENSHOT=1; else thrown away.
        name = f"status-{label}.png"
        docs = os.environ.get("CRYPTOMON_SCREENSHOT") == "1"
        page.screenshot(path=str(ROOT / "docs" / name if docs else tmp_path / name), full_page=True)
    finally:
        still.close()
    live = browser.new_context(viewport={"width": width, "height": height})
    page = live.new_page()
    page.add_init_script(LAYOUT_SHIFTS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(service.url + "/status")
        expect(page.locator("html")).to_have_attribute("data-live", "true")
        service.append(failing("Gamma", time.time()))
        gamma = page.locator('.provider[data-provider="Gamma"]')
        expect(gamma).to_have_attribute("data-state", "outage", timeout=20_000)
        expect(gamma.locator(".state")).to_have_text("Outage")
        expect(page.locator("#overall")).to_have_text("Some services are down")
        # Gamma's outage opened an incident: it shows in the list in place, in plain words.
        expect(page.locator("#incidents .incident")).to_contain_text("Gamma: outage")
        shift = page.evaluate("window.layoutShift")
        assert shift < 0.1, shift
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert accessibility_violations(page) == [], scheme
        assert errors == []
    finally:
        live.close()


def from_region(event: Any, region: str) -> Any:
    return msgspec.structs.replace(event, region=region)


def test_a_provider_probed_from_regions_has_a_chip_per_region_in_plain_words(
    service: Any,
) -> None:
    now = time.time() - 60
    service.append(
        from_region(probe("Alpha", now), "eu-west"),
        from_region(failing("Alpha", now + 1), "us-east"),
        probe("Beta <b>", now + 2),
    )
    status, page, _ = fetch(service.url + "/status")
    assert status == 200
    rows = dict(re.findall(r'data-provider="([^"]+)" data-state="([a-z]+)"', page))
    assert rows["Alpha"] == "degraded"  # down from one region, up from the other
    [strip] = re.findall(r'<ul class="regions" aria-label="Alpha by region">(.*?)</ul>', page)
    chips = re.findall(
        r'<li class="region" data-region="([^"]+)" data-state="([a-z]+)">'
        r'<span class="region-name">[^<]+</span> <span class="region-state">([^<]+)</span></li>',
        strip,
    )
    assert chips == [("eu-west", "operational", "Operational"), ("us-east", "outage", "Outage")]
    assert page.count('class="regions"') == 1  # Beta and Gamma have none
    # Still nothing internal: no status word, no reason, no failure.
    for internal in ("offline", "consecutive", "refused", "regional"):
        assert internal not in page, internal
    _, body, _ = fetch(service.url + "/status/data.json")
    providers = {p["name"]: p for p in json.loads(body)["providers"]}
    assert providers["Alpha"]["regions"] == [
        {"name": "eu-west", "state": "operational", "label": "Operational"},
        {"name": "us-east", "state": "outage", "label": "Outage"},
    ]
    assert providers["Beta <b>"]["regions"] == [] and providers["Gamma"]["regions"] == []


@needs_chromium
def test_in_chromium_the_region_strip_follows_in_place(browser: Any, service: Any) -> None:
    from playwright.sync_api import expect

    now = time.time() - 60
    service.append(
        from_region(probe("Alpha", now), "eu-west"),
        from_region(failing("Alpha", now + 1), "us-east"),
        probe("Gamma", now + 2),
    )
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.add_init_script(LAYOUT_SHIFTS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(service.url + "/status")
        expect(page.locator("html")).to_have_attribute("data-live", "true")
        alpha = page.locator('.provider[data-provider="Alpha"]')
        us = alpha.locator('.region[data-region="us-east"]')
        expect(us).to_have_text("us-east Outage")
        # No horizontal scrolling at a phone's width with the strip.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # us-east reaches it again and Gamma is probed from a region for the first time:
        # the chips change in place and Gamma's strip appears, without a reload.
        later = time.time()
        service.append(
            # Back from an outage takes `online_after_successes` (2 by default).
            *(from_region(probe("Alpha", later + n), "us-east") for n in range(2)),
            from_region(probe("Gamma", later), "ap-south"),
        )
        expect(us).to_have_attribute("data-state", "operational", timeout=20_000)
        expect(us.locator(".region-state")).to_have_text("Operational")
        expect(alpha).to_have_attribute("data-state", "operational")
        gamma = page.locator('.provider[data-provider="Gamma"] .region[data-region="ap-south"]')
        expect(gamma).to_have_text("ap-south Operational")
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert accessibility_violations(page) == [], scheme
        assert errors == []
    finally:
        page.close()
