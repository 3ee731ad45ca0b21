"""The dashboard: served by the real app, and driven in a real browser against the demo.

The browser is Debian's chromium at /usr/bin/chromium, driven by Playwright (never a
browser Playwright downloads); `.ci/run` installs it. Without it the browser tests are
skipped and say why; the HTTP tests run regardless.

The README's screenshot (docs/dashboard.png) is taken by `test_dashboard_against_the_demo`.
It is written to tmp_path unless CRYPTOMON_SCREENSHOT=1, so a normal run leaves the tree
clean: `CRYPTOMON_SCREENSHOT=1 python -m pytest tests/test_dashboard.py -k demo` refreshes it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import StandIn, closed_port

from cryptomon.cli import demo
from cryptomon.cli.demo import PROVIDERS
from cryptomon.config import load_config
from cryptomon.events.types import ObservedValue, ProbeRecorded
from cryptomon.http.dashboard import prefers_html
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
DEMO_PROVIDERS = tuple(name for name, *_ in PROVIDERS)
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
TOKEN = "dashboard-test-token"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not at /usr/bin/chromium "
    "(apt-get install chromium; .ci/run does it)",
)

Client = TestClient[web.Request, web.Application]


# ---- the page and its files over HTTP ----------------------------------------------


@pytest.fixture
async def client(tmp_path: Path, standin: StandIn, aiohttp_client: AiohttpClient) -> Client:
    config = tmp_path / "dashboard.toml"
    config.write_text(
        f'[[providers]]\nname = "Up"\ncategory = "market_data"\nbase_url = "{standin.url("")}"\n'
        'health_path = "/healthy"\ninterval = "30s"\n'
    )
    settings = Settings.from_config(
        load_config(config), database=tmp_path / "d.db", environ={}, probing=False
    )
    return await aiohttp_client(create_app(settings))


async def test_browsers_get_the_page_and_api_clients_the_json(client: Client) -> None:
    async with client.get("/", headers={"Accept": BROWSER_ACCEPT}) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Vary"] == "Accept, Accept-Encoding"
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert page.lower().startswith("<!doctype html>")
    assert 'src="static/dashboard.js"' in page and 'href="static/dashboard.css"' in page
    for accept in ("application/json", None, "*/*", "text/html;q=0.5, application/json"):
        headers = {"Accept": accept} if accept is not None else {}
        async with client.get("/", headers=headers, skip_auto_headers=["Accept"]) as response:
            assert response.status == 200, accept
            assert response.content_type == "application/json", accept
            assert response.headers["Vary"] == "Accept"
            info = await response.json()
        assert info["name"] == "cryptomon" and info["dashboard"] == "/", accept
        assert info["endpoints"]["websocket"] == "/ws/live"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("application/xhtml+xml", True),
        ("text/*", True),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/json, text/html", False),  # a tie: the API's answer
        ("text/html;q=0.9, application/json", False),
        ("text/html, application/json;q=0.5", True),
        ("text/html;q=0", False),
        ("text/html;q=oops", False),
    ],
)
def test_content_negotiation(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


async def test_static_files_have_their_content_types(client: Client) -> None:
    expected = {
        "dashboard.js": "text/javascript",
        "dashboard.css": "text/css",
        "favicon.svg": "image/svg+xml",
    }
    for name, content_type in expected.items():
        async with client.get(f"/static/{name}") as response:
            assert response.status == 200, name
            assert response.content_type == content_type
            assert response.charset == "utf-8"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            etag = response.headers["ETag"]
            assert response.headers["Content-Encoding"] == "gzip"  # the test client takes it
            body = await response.read()  # and inflates it
            assert body
        async with client.get(f"/static/{name}", headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        # Without gzip: the same bytes, another representation and so another entity tag.
        async with client.get(f"/static/{name}", headers={"Accept-Encoding": "identity"}) as plain:
            assert plain.headers.get("Content-Encoding") is None
            assert plain.headers["Vary"] == "Accept-Encoding"
            assert plain.headers["ETag"] != etag
            assert await plain.read() == body
    for missing in ("nope.js", "index.html", "..%2Fdemo.py", "dashboard"):
        async with client.get(f"/static/{missing}") as response:
            assert response.status == 404, missing
            assert response.content_type == "application/problem+json"


async def test_the_page_needs_nothing_from_elsewhere(client: Client) -> None:
    """No CDN, no build step: every file the page loads is ours, and none loads another."""
    async with client.get("/", headers={"Accept": "text/html"}) as response:
        page = await response.text()
    for link in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert not re.match(r"^(?:[a-z]+:)?//", link), link
    async with client.get("/static/dashboard.css") as response:
        css = await response.text()
    assert "@import" not in css and "url(" not in css
    async with client.get("/static/dashboard.js") as response:
        script = await response.text()
    # The only absolute URL in the script is the SVG namespace (an identifier, never fetched).
    assert set(re.findall(r"https?://[^\s\"'`]+", script)) == {"http://www.w3.org/2000/svg"}
    assert "import " not in script and "require(" not in script


async def test_openapi_documents_the_json_and_the_series(client: Client) -> None:
    async with client.get("/openapi.json") as response:
        document = await response.json()
    root = document["paths"]["/"]["get"]["responses"]["200"]["content"]
    assert root["application/json"]["schema"]["$ref"].endswith("/ServiceInfo")
    series = document["paths"]["/api/providers/{name}/series"]["get"]
    assert {p["name"] for p in series["parameters"]} == {"name", "hours"}
    assert not any(path.startswith("/static") for path in document["paths"])


async def test_provider_series_gives_a_sparkline_per_minute(client: Client) -> None:
    async with client.post("/api/scheduler/trigger/health_checks") as response:
        assert response.status == 200
    app = client.app
    assert app is not None
    await app[READ_MODELS].wait_for(app[STORE].head)
    async with client.get("/api/providers/Up/series?hours=1") as response:
        assert response.status == 200
        series = await response.json()
    assert series["provider"] == "Up" and series["step_seconds"] == 60
    assert 60 <= len(series["points"]) <= 61
    stamps = [point["timestamp"] for point in series["points"]]
    assert stamps == sorted(stamps) and all(s.endswith(":00Z") for s in stamps)
    assert sum(point["probes"] for point in series["points"]) == 1
    assert series["points"][-1]["probes"] == 1
    assert series["points"][-1]["avg_response_time_ms"] is not None
    async with client.get("/api/providers/Up/series?hours=48") as response:
        assert (await response.json())["step_seconds"] == 3600
    async with client.get("/api/providers/Nope/series") as response:
        assert response.status == 404
    async with client.get("/api/providers/Up/series?hours=0") as response:
        assert response.status == 400


# ---- a real browser against the demo -------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Server:
    """`python -m cryptomon ...` in a subprocess, its output collected as it comes."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cryptomon", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(30):
            self.stop()
            raise AssertionError("the service never listened:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if line.strip().startswith("monitoring "):
                self.ready.set()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=30)
        self.reader.join(timeout=10)  # it ends at the end of the output
        if self.process.stdout is not None:
            self.process.stdout.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def statuses(page: Any) -> dict[str, str]:
    found: dict[str, str] = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#providers .provider')]"
        ".map(card => [card.dataset.provider, card.dataset.status]))"
    )
    return found


@needs_chromium
def test_dashboard_against_the_demo(browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    port = free_port()
    demo_args = ["--demo", "--db", str(tmp_path / "demo.db"), "--port", str(port)]
    server = Server(demo_args)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        # The page loads and shows every provider, and goes live.
        for name in DEMO_PROVIDERS:
            expect(page.locator(f'#providers [data-provider="{name}"]')).to_be_visible()
        connection = page.locator("#connection")
        expect(connection).to_have_attribute("data-state", "live", timeout=10_000)
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        # The demo's chain and pair show in their panels, a row for each node and source.
        expect(page.locator("main")).not_to_have_attribute("aria-busy", "true")
        expect(page.locator("#chains-section")).to_be_visible()
        chain = page.locator(f'#chains [data-chain="{demo.CHAIN}"]')
        for node in demo.NODES:
            expect(chain.locator(f'tr[data-provider="{node}"]')).to_be_visible()
        expect(page.locator("#quotes-section")).to_be_visible()
        pair = page.locator('#quotes [data-pair="BTC-USD"]')
        for source in demo.SOURCES:
            expect(pair.locator(f'[data-provider="{source}"]')).to_be_visible()

        # A status change arrives live: a card changes and the log says so, without a reload.
        before = statuses(page)
        page.wait_for_function(
            """(before) => [...document.querySelectorAll('#providers .provider')]
                .some(card => card.dataset.status !== before[card.dataset.provider])""",
            arg=before,
            timeout=30_000,
        )
        changed = next(n for n, s in statuses(page).items() if s != before[n])
        status_line = re.compile(rf"{changed}: [a-z_]+ → [a-z_]+ \(")
        expect(page.locator("#log li", has_text=status_line).first).to_be_visible()

        # An alert can be acknowledged (no token configured: loopback may write).
        offline = page.locator("#open-alerts li", has_text="Down is offline")
        expect(offline).to_have_attribute("data-acknowledged", "false", timeout=30_000)
        offline.locator("button.ack").click()
        expect(offline).to_have_attribute("data-acknowledged", "true", timeout=10_000)
        expect(offline).to_contain_text("acknowledged by local")
        assert page.evaluate("window.loadedOnce") is True

        # The README's screenshot, once the sparklines have some points (for the README, a
        # minute's worth: it takes that much longer, so only when asked for).
        for_readme = os.environ.get("CRYPTOMON_SCREENSHOT") == "1"
        page.wait_for_function(
            """(points) => [...document.querySelectorAll('.spark polyline')]
                .filter(line => line.getAttribute('points').split(' ').length >= points)
                .length >= 3""",
            arg=12 if for_readme else 2,
            timeout=90_000 if for_readme else 20_000,
        )
        shot = SCREENSHOT if for_readme else tmp_path / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        # From the top: acknowledging scrolled the page, and the sticky header would be
        # drawn across the cards where the viewport stood.
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # The server dies: the page says so; it comes back on the same port and database,
        # and the page resumes from its position: live again, nothing lost, no reload.
        position = int(page.locator("#position").inner_text())
        server.stop(signal.SIGKILL)
        page.wait_for_function(
            "() => ['reconnecting', 'stale'].includes("
            "document.getElementById('connection').dataset.state)",
            timeout=10_000,
        )
        expect(connection).to_contain_text("last data")
        server = Server(demo_args)
        expect(connection).to_have_attribute("data-state", "live", timeout=20_000)
        page.wait_for_function(
            "(p) => Number(document.getElementById('position').textContent) > p",
            arg=position,
            timeout=20_000,
        )
        expect(offline).to_have_attribute("data-acknowledged", "true")
        assert page.evaluate("window.loadedOnce") is True
        assert set(statuses(page)) == set(DEMO_PROVIDERS)
        assert errors == []
    finally:
        page.close()
        server.stop(signal.SIGTERM)


@needs_chromium
@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_the_page_holds_still_as_it_fills_and_axe_finds_nothing(
    browser: Any, tmp_path: Path, width: int, height: int
) -> None:
    """Against the demo as a new user opens it: the layout shifts less than Lighthouse's
    "good" (0.1) while the cards, the panels and the first live changes come, and axe-core
    finds no violation in the light or the dark scheme."""
    from playwright.sync_api import expect

    # Here, not at the top: test_provider_page imports this module.
    from test_provider_page import LAYOUT_SHIFTS, accessibility_violations

    port = free_port()
    server = Server(["--demo", "--db", str(tmp_path / "demo.db"), "--port", str(port)])
    errors: list[str] = []
    page = browser.new_page(viewport={"width": width, "height": height})
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.add_init_script(LAYOUT_SHIFTS)
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        # The load in its order: the cards, then the panels below them, then the series
        # (the page is busy until those are in too); and the feed.
        expect(page.locator("#providers .provider")).to_have_count(len(DEMO_PROVIDERS))
        expect(page.locator("#alerts-and-log")).to_be_visible()
        expect(page.locator("#chains-section")).to_be_visible()
        expect(page.locator("main")).not_to_have_attribute("aria-busy", "true")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        # Then a few changes from the feed on top.
        position = int(page.locator("#position").inner_text())
        page.wait_for_function(
            "(p) => Number(document.getElementById('position').textContent) >= p + 5",
            arg=position,
            timeout=30_000,
        )
        shift = page.evaluate("window.layoutShift")
        assert shift < 0.1, shift

        # The demo stopped for the checks (not ended: the page stays live, its socket
        # open), so nothing changes under axe while it reads the page.
        server.process.send_signal(signal.SIGSTOP)
        try:
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                assert accessibility_violations(page) == [], scheme
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert errors == []
    finally:
        page.close()
        server.stop(signal.SIGTERM)


@needs_chromium
def test_acknowledging_asks_for_the_token_when_one_is_configured(
    browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    config = tmp_path / "token.toml"
    config.write_text(
        "[monitoring]\noffline_after_failures = 1\n"
        f'[[providers]]\nname = "Gone"\ncategory = "news"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1s"\n'
    )
    port = free_port()
    server = Server(
        ["--config", str(config), "--db", str(tmp_path / "t.db"), "--port", str(port)],
        env={"CRYPTOMON_API_TOKEN": TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    page = browser.new_page()
    prompts: list[str] = []

    def answer(dialog: Any) -> None:
        prompts.append(dialog.message)
        dialog.accept(TOKEN)

    page.on("dialog", answer)
    try:
        deadline = time.monotonic() + 20
        while not get_json(f"{base}/api/alerts?open=true")["alerts"]:
            assert time.monotonic() < deadline, "no alert was raised"
            time.sleep(0.1)
        page.goto(base + "/")
        # The feed needs the token too: the page says so instead of spinning.
        connection = page.locator("#connection")
        expect(connection).to_have_attribute("data-state", "needs-token")
        expect(page.locator("#token-button")).to_be_visible()
        alert = page.locator("#open-alerts li", has_text="Gone is offline")
        alert.locator("button.ack").click()
        # 401 -> the page asks for the token, retries with it, and the feed connects with it.
        expect(alert).to_have_attribute("data-acknowledged", "true", timeout=10_000)
        assert len(prompts) == 1 and "API token" in prompts[0]
        expect(connection).to_have_attribute("data-state", "live", timeout=10_000)
        acknowledged = get_json(f"{base}/api/alerts?acknowledged=true")["alerts"]
        assert [a["acknowledged_by"] for a in acknowledged] == ["token"]
    finally:
        page.close()
        server.stop(signal.SIGTERM)


@needs_chromium
def test_a_card_pauses_and_resumes_its_provider_asking_for_the_token(
    browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    config = tmp_path / "pause.toml"
    config.write_text(
        "[monitoring]\noffline_after_failures = 1\n"
        f'[[providers]]\nname = "Gone"\ncategory = "news"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1s"\n'
    )
    port = free_port()
    server = Server(
        ["--config", str(config), "--db", str(tmp_path / "p.db"), "--port", str(port)],
        env={"CRYPTOMON_API_TOKEN": TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    page = browser.new_page()
    prompts: list[str] = []

    def answer(dialog: Any) -> None:
        prompts.append(dialog.message)
        dialog.accept(TOKEN)

    page.on("dialog", answer)
    try:
        deadline = time.monotonic() + 20
        while get_json(f"{base}/api/providers/Gone")["status"] != "offline":
            assert time.monotonic() < deadline, "Gone never went offline"
            time.sleep(0.1)
        # Without the token the feed is closed to the page: what it shows comes from REST.
        page.goto(base + "/")
        card = page.locator('#providers .provider[data-provider="Gone"]')
        expect(card).to_have_attribute("data-status", "offline")
        button = card.locator("button.pause")
        expect(button).to_have_text("Pause")
        button.click()
        # 401 -> the page asks for the token once, pauses with it, and the feed connects.
        expect(card).to_have_attribute("data-status", "paused", timeout=10_000)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        expect(button).to_have_text("Resume")
        assert len(prompts) == 1 and "pause providers" in prompts[0]
        view = get_json(f"{base}/api/providers/Gone")
        assert (view["status"], view["paused_by"]) == ("paused", "token")
        assert all(a["resolved_at"] for a in get_json(f"{base}/api/alerts")["alerts"])
        button.click()  # the token is remembered: no second prompt
        expect(button).to_have_text("Pause", timeout=10_000)
        expect(card).to_have_attribute("data-status", "offline", timeout=20_000)
        assert len(prompts) == 1
        events = get_json(f"{base}/api/events?type=ProviderResumed")["events"]
        assert [e["payload"]["actor"] for e in events] == ["token"]
    finally:
        page.close()
        server.stop(signal.SIGTERM)


READ_TOKEN = "dashboard-read-token"


def get_json_with(url: str, token: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@needs_chromium
def test_the_page_asks_for_the_read_token_then_shows_the_providers(
    browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    config = tmp_path / "read.toml"
    config.write_text(
        '[server]\nread_token_env = "CRYPTOMON_READ_TOKEN"\n'
        "[monitoring]\noffline_after_failures = 1\n"
        f'[[providers]]\nname = "Gone"\ncategory = "news"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1s"\n'
    )
    port = free_port()
    server = Server(
        ["--config", str(config), "--db", str(tmp_path / "r.db"), "--port", str(port)],
        env={"CRYPTOMON_API_TOKEN": TOKEN, "CRYPTOMON_READ_TOKEN": READ_TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    page = browser.new_page()
    prompts: list[str] = []
    errors: list[str] = []

    def answer(dialog: Any) -> None:
        # The read token for reads; the API token when a write asks for it.
        prompts.append(dialog.message)
        dialog.accept(TOKEN if "CRYPTOMON_API_TOKEN" in dialog.message else READ_TOKEN)

    page.on("dialog", answer)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        deadline = time.monotonic() + 20
        while get_json_with(f"{base}/api/providers/Gone", READ_TOKEN)["status"] != "offline":
            assert time.monotonic() < deadline, "Gone never went offline"
            time.sleep(0.1)
        # The page itself is open; its first read is refused, and it asks once for a token
        # however many reads were refused, then reads with it and follows the feed.
        page.goto(base + "/")
        card = page.locator('#providers .provider[data-provider="Gone"]')
        expect(card).to_have_attribute("data-status", "offline", timeout=10_000)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        expect(page.locator("#load-error")).to_be_hidden()
        assert len(prompts) == 1 and "Read token" in prompts[0], prompts
        alert = page.locator("#open-alerts li", has_text="Gone is offline")
        expect(alert).to_be_visible()
        # The read token reads only: a write gets 403, and the page asks for the API token.
        alert.locator("button.ack").click()
        expect(alert).to_have_attribute("data-acknowledged", "true", timeout=10_000)
        assert len(prompts) == 2 and "API token" in prompts[1], prompts
        acknowledged = get_json_with(f"{base}/api/alerts?acknowledged=true", TOKEN)["alerts"]
        assert [a["acknowledged_by"] for a in acknowledged] == ["token"]
        # The API token, kept for the tab, reads too: a reload asks for nothing.
        page.reload()
        expect(card).to_be_visible()
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        assert len(prompts) == 2
        assert errors == []
    finally:
        page.close()
        server.stop(signal.SIGTERM)


# ---- chains and quotes in a real browser, the app in this process --------------------


class ThreadedService:
    """The real app (`create_app`) served on 127.0.0.1 by an event loop in a thread of its
    own, so that a test can append probes to its event store while a browser watches."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app = create_app(settings)
        self.runner = web.AppRunner(self.app)
        self.call(self._start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self.loop).result(30)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()

    def append(self, *probes: ProbeRecorded) -> None:
        """Record the probes as the monitor would, and wait until the read models have them."""

        async def append() -> None:
            store = self.app[STORE]
            for event in probes:
                await store.append(f"provider:{event.provider}", [event])
            async with asyncio.timeout(10):
                await self.app[READ_MODELS].wait_for(store.head)

        self.call(append())

    def stop(self) -> None:
        try:
            self.call(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


NODES = ("Node A", "Node B", "Node C")
SOURCES = (("Quote A", "BTC-USD"), ("Quote B", "BTC-USD"), ("Quote C", "BTC-USD"))
SOURCES += (("Quote E", "ETH-EUR"),)


def chains_config() -> str:
    """Three Ethereum nodes, three sources of BTC-USD and one of ETH-EUR; nothing probes
    them (the test appends their probes), so their address is a closed port."""
    gone = f"http://127.0.0.1:{closed_port()}"
    common = f'base_url = "{gone}"\ninterval = "1h"\n'
    nodes = "".join(
        f'[[providers]]\nname = "{name}"\ncategory = "rpc_nodes"\n{common}'
        'rpc = { method = "eth_blockNumber" }\nobserve = { head = "[BODY].result" }\n'
        'chain = "ethereum"\n'
        for name in NODES
    )
    sources = "".join(
        f'[[providers]]\nname = "{name}"\ncategory = "market_data"\n{common}'
        'observe = { price = "[BODY].price", price_time = "[BODY].time" }\n'
        f'quote = "{pair}"\n'
        for name, pair in SOURCES
    )
    return nodes + sources


def probe(provider: str, at: float, **observations: ObservedValue) -> ProbeRecorded:
    return ProbeRecorded(
        provider,
        "health",
        "/",
        "success",
        started_at=at,
        latency_ms=12.0,
        http_status=200,
        observations=observations,
    )


# Node A and B move a block a second; Node C answers chain id 56 (0x38) and falls 359
# blocks behind: lagging at its second probe that far behind. Quote C is 9.45% off the
# median 100.5 at the first round (deviating only at the second: two probes in a row);
# Quote A's data is two minutes old (stale past 60 s); Quote E alone has no median.
T0 = time.time() - 1800
TQ = T0 + 400
BEFORE_THE_PAGE = (
    probe("Node A", T0, head="0x64"),
    probe("Node B", T0, head=100),
    probe("Node C", T0, head=100, chain_id="0x38"),
    probe("Node A", T0 + 360, head=460),
    probe("Node B", T0 + 360, head=460),
    probe("Node C", T0 + 360, head=100, chain_id="0x38"),
    probe("Node C", T0 + 372, head=101, chain_id="0x38"),
    probe("Quote A", TQ, price=100, price_time=TQ - 120),
    probe("Quote B", TQ, price=100.5),
    probe("Quote C", TQ, price=110.0),
    probe("Quote E", TQ, price=3000),
)


@pytest.fixture
def chain_service(tmp_path: Path) -> Iterator[ThreadedService]:
    path = tmp_path / "chains.toml"
    path.write_text(chains_config())
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "chains.db", environ={}, probing=False
    )
    service = ThreadedService(settings)
    try:
        yield service
    finally:
        service.stop()


CHAIN_FETCHES = """(since) => performance.getEntriesByType('resource')
    .filter(e => e.name.endsWith('/api/chains/ethereum') && e.startTime >= since)
    .map(e => e.startTime)"""


@needs_chromium
def test_chain_and_quote_panels_follow_the_live_feed(
    browser: Any, chain_service: ThreadedService
) -> None:
    from playwright.sync_api import expect

    chain_service.append(*BEFORE_THE_PAGE)
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(chain_service.url + "/")
        page.evaluate("performance.setResourceTimingBufferSize(10000)")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10_000)
        expect(page.locator("main")).not_to_have_attribute("aria-busy", "true")
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads

        # The chain: its best head, each node's head and lag, the marks in words.
        chain = page.locator('#chains [data-chain="ethereum"]')
        expect(page.locator("#chains-section")).to_be_visible()
        expect(chain.locator(".best")).to_have_text("best head 460")
        node_a = chain.locator('tr[data-provider="Node A"]')
        node_c = chain.locator('tr[data-provider="Node C"]')
        expect(node_a.locator(".node-head")).to_have_text("460")
        expect(node_a.locator(".lag-text")).to_have_text("0 blocks")
        expect(node_c.locator(".node-head")).to_have_text("101")
        expect(node_c.locator(".lag-text")).to_contain_text("359 blocks")
        expect(node_c.locator(".marks")).to_contain_text("wrong chain")
        expect(node_c.locator(".marks")).to_contain_text("lagging")
        expect(node_c.locator(".marks")).to_contain_text("answers chain id 56")
        expect(node_a.locator(".marks")).to_have_text("ok")
        # The lagging node's bar is the full scale; a node at the best head has none.
        widths = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll(
                '#chains tr[data-provider]')].map(row => [row.dataset.provider,
                row.querySelector('.bar span').style.width]))"""
        )
        assert widths == {"Node A": "0%", "Node B": "0%", "Node C": "100%"}

        # The pairs: the median or why there is none, each source's signed deviation.
        btc = page.locator('#quotes [data-pair="BTC-USD"]')
        expect(btc.locator(".median")).to_have_text("median 100.5")
        quote_c = btc.locator('tr[data-provider="Quote C"]')
        expect(quote_c.locator(".deviation")).to_have_text("+9.45%")
        expect(quote_c.locator(".marks")).to_have_text("ok")  # once off is not deviating
        # Judged at each source's own probe: the first two had no median yet.
        quote_a = btc.locator('tr[data-provider="Quote A"]')
        quote_b = btc.locator('tr[data-provider="Quote B"]')
        expect(quote_a.locator(".deviation")).to_have_text("\N{EN DASH}")
        expect(quote_a.locator(".marks")).to_contain_text("stale data")
        expect(quote_a.locator(".marks")).to_contain_text("data 2 min old")
        eth = page.locator('#quotes [data-pair="ETH-EUR"]')
        expect(eth.locator(".median")).to_have_text("no median")
        expect(eth.locator(".median-note")).to_contain_text("1 of 1 sources")

        # A judgement made after the page loaded arrives through the feed: no reload.
        chain_service.append(
            probe("Quote A", TQ + 30, price=100, price_time=TQ - 90),
            probe("Quote B", TQ + 30, price=100.5),
            probe("Quote C", TQ + 30, price=110.0),
        )
        expect(quote_c.locator(".marks")).to_have_text("deviating", timeout=10_000)
        expect(quote_c).to_have_attribute("data-states", "deviation")
        # The rest of the pair comes with the re-read of it that the message scheduled.
        expect(quote_a.locator(".deviation")).to_have_text("-0.50%", timeout=10_000)
        expect(quote_b.locator(".deviation")).to_have_text("0.00%")

        # A storm of head updates: each shows at once, and the chain is re-read from REST
        # at most once a second (here: once the answer is sure to include the last one).
        storm_start = page.evaluate("performance.now()")
        chain_service.append(
            *(
                probe(name, T0 + 372 + step, head=460 + step)
                for step in range(1, 31)
                for name in ("Node A", "Node B")
            )
        )
        storm_end = page.evaluate("performance.now()")
        expect(chain.locator(".best")).to_have_text("best head 490", timeout=10_000)
        expect(node_a.locator(".node-head")).to_have_text("490")
        expect(node_c.locator(".lag-text")).to_contain_text("359 blocks")  # as of its probe
        page.wait_for_function(
            f"(end) => ({CHAIN_FETCHES})(end).length > 0", arg=storm_end, timeout=10_000
        )
        fetches = page.evaluate(CHAIN_FETCHES, storm_start)
        gaps = [later - earlier for earlier, later in itertools.pairwise(fetches)]
        assert all(gap >= 950 for gap in gaps), fetches
        assert len(fetches) <= 1 + (fetches[-1] - storm_start) / 950, fetches
        expect(chain.locator(".best")).to_have_text("best head 490")

        assert page.evaluate("window.loadedOnce") is True
        assert errors == []
    finally:
        page.close()


# ---- maintenance windows on the provider cards, the app in this process -----------------


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Accept": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return json.loads(response.read())


def failed(provider: str, at: float) -> ProbeRecorded:
    return ProbeRecorded(
        provider,
        "health",
        "/",
        "failed",
        started_at=at,
        latency_ms=5.0,
        error_kind="connection_refused",
        error_message="connection refused",
    )


@pytest.fixture
def window_service(tmp_path: Path) -> Iterator[ThreadedService]:
    gone = f"http://127.0.0.1:{closed_port()}"
    path = tmp_path / "windows.toml"
    path.write_text(
        # No status_update for the test's length, so the page never re-reads the providers
        # between loads: what changes on a card after the load came by the live feed.
        '[websocket]\nstatus_interval = "1h"\n'
        f'[[providers]]\nname = "Exchange"\ncategory = "exchanges"\nbase_url = "{gone}"\n'
        'interval = "1h"\n'
        f'[[providers]]\nname = "Node"\ncategory = "rpc_nodes"\nbase_url = "{gone}"\n'
        'interval = "1h"\n'
    )
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "windows.db", environ={}, probing=False
    )
    service = ThreadedService(settings)
    try:
        yield service
    finally:
        service.stop()


@needs_chromium
def test_a_card_names_the_maintenance_window_its_provider_is_in(
    browser: Any, window_service: ThreadedService
) -> None:
    from playwright.sync_api import expect

    # Whether a window covers a probe is judged from the probe's start, so the windows
    # lie in the past and the probes are placed in and after them: no waiting on a clock.
    now = time.time()
    base = window_service.url

    def iso(moment: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))

    def window(name: str, provider: str, start: float, end: float) -> Any:
        """A window created over the API (no token configured: loopback may write)."""
        body = {"name": name, "providers": [provider], "start": iso(start), "end": iso(end)}
        return post_json(f"{base}/api/maintenance", body)

    upgrade = window("exchange upgrade", "Exchange", now - 900, now - 300)
    window_service.append(probe("Node", now - 800), failed("Exchange", now - 600))
    assert get_json(f"{base}/api/providers/Exchange")["maintenance_window"]["name"] == (
        "exchange upgrade"
    )
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(base + "/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10_000)
        expect(page.locator("main")).not_to_have_attribute("aria-busy", "true")
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads

        # From REST: the provider in a window says which; the other says nothing of one.
        exchange = page.locator('#providers [data-provider="Exchange"]')
        node = page.locator('#providers [data-provider="Node"]')
        expect(exchange).to_have_attribute("data-status", "maintenance")
        expect(exchange.locator(".maintenance")).to_have_text("maintenance: exchange upgrade")
        expect(exchange.locator(".maintenance")).to_have_attribute("data-window", upgrade["id"])
        expect(exchange.locator(".maintenance")).to_be_visible()
        expect(node).to_have_attribute("data-status", "online")
        expect(node.locator(".maintenance")).to_be_hidden()

        # From the live feed: Node's next probe falls in a window made after the load.
        restart = window("node restart", "Node", now - 700, now - 100)
        window_service.append(failed("Node", now - 500))
        expect(node.locator(".maintenance")).to_have_text(
            "maintenance: node restart", timeout=10_000
        )
        expect(node.locator(".maintenance")).to_be_visible()
        expect(node.locator(".maintenance")).to_have_attribute("data-window", restart["id"])
        expect(node).to_have_attribute("data-status", "maintenance")
        entered = page.locator("#log li", has_text="Node: in maintenance node restart")
        expect(entered).to_have_count(1)

        # Exchange's first probe after its window: the card no longer names one.
        window_service.append(probe("Exchange", now - 200))
        expect(exchange.locator(".maintenance")).to_be_hidden(timeout=10_000)
        expect(exchange).not_to_have_attribute("data-status", "maintenance")
        left = page.locator("#log li", has_text="Exchange: out of maintenance exchange upgrade")
        expect(left).to_have_count(1)
        expect(node.locator(".maintenance")).to_have_text("maintenance: node restart")

        assert page.evaluate("window.loadedOnce") is True
        assert errors == []
    finally:
        page.close()


# ---- regions: a chip per region on each card and on the provider's page ---------------


@pytest.fixture
def region_service(tmp_path: Path) -> Iterator[ThreadedService]:
    gone = f"http://127.0.0.1:{closed_port()}"
    path = tmp_path / "regions.toml"
    path.write_text(
        # No status_update for the test's length: what changes on a card after the load
        # came by the live feed's status changes and alerts.
        '[websocket]\nstatus_interval = "1h"\n'
        f'[[providers]]\nname = "Edge"\ncategory = "exchanges"\nbase_url = "{gone}"\n'
        'interval = "1h"\n'
        f'[[providers]]\nname = "Plain"\ncategory = "news"\nbase_url = "{gone}"\n'
        'interval = "1h"\n'
    )
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "regions.db", environ={}, probing=False
    )
    service = ThreadedService(settings)
    try:
        yield service
    finally:
        service.stop()


def in_region(event: ProbeRecorded, region: str) -> ProbeRecorded:
    return msgspec.structs.replace(event, region=region)


def region_lost(service: ThreadedService, region: str, at: float) -> None:
    from cryptomon.events.types import RegionLost

    async def append() -> None:
        store = service.app[STORE]
        await store.append(f"region:{region}", [RegionLost(region, "gone:7860", at)])
        async with asyncio.timeout(10):
            await service.app[READ_MODELS].wait_for(store.head)

    service.call(append())


@needs_chromium
def test_a_card_shows_a_chip_per_region_in_words_and_follows_the_feed(
    browser: Any, region_service: ThreadedService
) -> None:
    from playwright.sync_api import expect
    from test_provider_page import accessibility_violations

    now = time.time() - 300
    # Edge answers eu-west and fails three times from us-east: offline there, degraded
    # overall. Plain is probed without a region.
    region_service.append(
        in_region(probe("Edge", now), "eu-west"),
        *(in_region(failed("Edge", now + 1 + n), "us-east") for n in range(3)),
        probe("Plain", now + 5),
    )
    base = region_service.url
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(base + "/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=10_000)
        expect(page.locator("main")).not_to_have_attribute("aria-busy", "true")
        page.evaluate("window.loadedOnce = true")  # gone if the page reloads

        edge = page.locator('#providers [data-provider="Edge"]')
        expect(edge).to_have_attribute("data-status", "degraded")
        strip = edge.locator(".regions")
        expect(strip).to_be_visible()
        expect(strip).to_have_attribute("aria-label", "Edge by region")
        eu, us = strip.locator('[data-region="eu-west"]'), strip.locator('[data-region="us-east"]')
        # Words, not colour alone: each chip says its region and its status.
        expect(eu).to_have_text("eu-westonline")
        expect(eu).to_have_attribute("data-status", "online")
        expect(us).to_have_text("us-eastoffline")
        expect(us).to_have_attribute("data-status", "offline")
        assert "3 consecutive failures" in (us.get_attribute("title") or "")
        assert strip.locator(".region").evaluate_all(
            "chips => chips.map(c => c.dataset.region)"
        ) == [
            "eu-west",
            "us-east",
        ]
        # A provider without regions has no strip.
        expect(page.locator('#providers [data-provider="Plain"] .regions')).to_be_hidden()
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert accessibility_violations(page) == [], scheme
        page.emulate_media(color_scheme="light")

        # From the live feed: eu-west sees it fail too: offline everywhere, both chips say so.
        region_service.append(
            *(in_region(failed("Edge", now + 10 + n), "eu-west") for n in range(3))
        )
        expect(edge).to_have_attribute("data-status", "offline", timeout=10_000)
        expect(eu).to_have_attribute("data-status", "offline")
        expect(eu.locator(".region-status")).to_have_text("offline")
        # us-east's instances are gone: the service's alert, and its chip says lost.
        region_lost(region_service, "us-east", now + 20)
        expect(us.locator(".region-status")).to_have_text("lost", timeout=10_000)
        expect(us).to_have_attribute("data-lost", "true")
        expect(eu).to_have_attribute("data-lost", "false")
        alert = page.locator("#open-alerts li", has_text="region us-east stopped reporting")
        expect(alert.locator(".when")).to_contain_text("cryptomon · region lost (us-east)")
        expect(page.locator("#open-alerts li", has_text="Edge is offline")).to_contain_text(
            "(eu-west, us-east)"
        )
        assert page.evaluate("window.loadedOnce") is True

        # The provider's own page has the same strip, from REST.
        page.goto(base + "/providers/Edge")
        expect(page.locator("#page")).not_to_have_attribute("aria-busy", "true", timeout=10_000)
        chips = page.locator("#provider-regions .region")
        expect(chips).to_have_count(2)
        expect(chips.nth(0)).to_have_text("eu-westoffline")
        expect(chips.nth(1)).to_have_text("us-eastlost")
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            assert accessibility_violations(page) == [], scheme
        page.goto(base + "/providers/Plain")
        expect(page.locator("#page")).not_to_have_attribute("aria-busy", "true", timeout=10_000)
        expect(page.locator("#provider-regions")).to_be_hidden()
        assert errors == []
    finally:
        page.close()
