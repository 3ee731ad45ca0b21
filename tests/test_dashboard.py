"""The dashboard: served by the real app, and driven in a real browser against the demo.

The browser is Debian's chromium at /usr/bin/chromium, driven by Playwright (never a
browser Playwright downloads); `.ci/run` installs it. Without it the browser tests are
skipped and say why; the HTTP tests run regardless.

The README's screenshot (docs/dashboard.png) is taken by `test_dashboard_against_the_demo`.
It is written to tmp_path unless CRYPTOMON_SCREENSHOT=1, so a normal run leaves the tree
clean: `CRYPTOMON_SCREENSHOT=1 python -m pytest tests/test_dashboard.py -k demo` refreshes it.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import StandIn, closed_port

from cryptomon.cli.demo import PROVIDERS
from cryptomon.config import load_config
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
        assert response.headers["Vary"] == "Accept"
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
            assert await response.read()
        async with client.get(f"/static/{name}", headers={"If-None-Match": etag}) as response:
            assert response.status == 304
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
