"""Badges: `/badge/{name}/...svg` through the real app, each answer parsed as SVG.

The probes are appended to the app's own event store (as the monitor records them), so
each uptime and latency is known by construction; nothing probes on a timer."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from standins import closed_port

from cryptomon.config import load_config
from cryptomon.events.types import ProbeRecorded
from cryptomon.http import badges
from cryptomon.http.keys import READ_MODELS, STORE
from cryptomon.http.settings import Settings
from cryptomon.service.app import create_app

Client = TestClient[web.Request, web.Application]
SVG = "{http://www.w3.org/2000/svg}"
# Markup, quotes, an entity, a CDATA end, non-ASCII and what URLs mean something by (a
# name has no '/' nor control characters): nothing of it may escape the badge's text.
HOSTILE = "<img src=x onerror=\"alert('x')\"> & ]]> &amp; Ωμέγα?#%20ü"


def provider(name: str, degraded: str = "") -> str:
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'[[providers]]\nname = "{quoted}"\ncategory = "news"\n'
        f'base_url = "http://127.0.0.1:{closed_port()}"\ninterval = "1h"\n{degraded}'
    )


def probe(name: str, at: float, outcome: str = "success", latency: float = 100.0) -> ProbeRecorded:
    if outcome == "success":
        return ProbeRecorded(name, "health", "/", "success", started_at=at, latency_ms=latency)
    return ProbeRecorded(
        name, "health", "/", "failed", started_at=at, latency_ms=5.0,
        error_kind="connection_refused", error_message="connection refused",
    )  # fmt: skip


async def append(client: Client, *probes: ProbeRecorded) -> None:
    store = client.app[STORE]
    for event in probes:
        await store.append(f"provider:{event.provider}", [event])
    async with asyncio.timeout(10):
        await client.app[READ_MODELS].wait_for(store.head)


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: AiohttpClient) -> Client:
    path = tmp_path / "badges.toml"
    path.write_text(
        provider("Fast", 'degraded_latency = "2s"\n')
        + provider("Slow", 'degraded_latency = "1s"\n')
        + provider("Flaky")
        + provider("Quiet")
        + provider("Leaving")
        + provider(HOSTILE)
    )
    settings = Settings.from_config(
        load_config(path), database=tmp_path / "b.db", environ={}, probing=False,
        config_path=path,
    )  # fmt: skip
    client = await aiohttp_client(create_app(settings))
    now = time.time()
    # Fast: 20 answers of 100 ms, all up. Slow: p95 1.5 s, over its 1 s. Flaky: 19 of 20
    # up over the last day, and 10 failures 3 days ago (7 d: 29 of 40).
    await append(
        client,
        *(probe("Fast", now - 600 - i) for i in range(20)),
        *(probe("Slow", now - 600 - i, latency=1500.0) for i in range(20)),
        *(probe("Flaky", now - 600 - i) for i in range(19)),
        probe("Flaky", now - 300, "failed"),
        *(probe("Flaky", now - 3 * 86400 - i, "failed") for i in range(10)),
        *(probe("Flaky", now - 3 * 86400 - 60 - i) for i in range(10)),
        probe(HOSTILE, now - 60),
    )
    return client


def path(name: str, kind: str) -> str:
    return f"/badge/{urllib.parse.quote(name, safe='')}/{kind}.svg"


async def badge(client: Client, name: str, kind: str, status: int = 200) -> ET.Element:
    async with client.get(path(name, kind)) as response:
        body = await response.read()
        assert response.status == status, body
        assert response.content_type == "image/svg+xml"
        assert response.charset == "utf-8"
    root = ET.fromstring(body)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    """The label and the value, as drawn (each text is drawn twice: shadow, then text)."""
    drawn = [text.text or "" for text in root.iter(f"{SVG}text")]
    assert len(drawn) == 4 and drawn[0::2] == drawn[1::2]
    return drawn[1::2]


def colour(root: ET.Element) -> str:
    """The value's background: the second of the clipped group's rectangles."""
    group = root.find(f"{SVG}g")
    assert group is not None
    return group.findall(f"{SVG}rect")[1].attrib["fill"]


def title(root: ET.Element) -> str:
    found = root.find(f"{SVG}title")
    assert found is not None and found.text
    assert root.attrib["aria-label"] == found.text
    return found.text


async def test_the_status_badge_names_the_provider_and_colours_its_status(
    client: Client,
) -> None:
    root = await badge(client, "Fast", "status")
    assert texts(root) == ["Fast", "online"]
    assert colour(root) == badges.BRIGHTGREEN
    assert title(root) == "Fast: online"
    # Slow answers past its degraded_latency; Quiet was never probed.
    assert texts(await badge(client, "Slow", "status")) == ["Slow", "degraded"]
    assert colour(await badge(client, "Slow", "status")) == badges.YELLOW
    quiet = await badge(client, "Quiet", "status")
    assert (texts(quiet), colour(quiet)) == (["Quiet", "unknown"], badges.LIGHTGREY)


async def test_the_uptime_badges_show_each_window(client: Client) -> None:
    expected = {
        ("Fast", "24h"): ("100%", badges.BRIGHTGREEN),
        ("Flaky", "24h"): ("95%", badges.YELLOW),  # 19 of 20
        ("Flaky", "7d"): ("72.5%", badges.RED),  # 29 of 40
        ("Flaky", "30d"): ("72.5%", badges.RED),
        ("Quiet", "30d"): ("no data", badges.LIGHTGREY),
    }
    for (name, window), (value, fill) in expected.items():
        root = await badge(client, name, f"uptime/{window}")
        assert texts(root) == [f"uptime {window}", value], (name, window)
        assert colour(root) == fill, (name, window)
        assert title(root).startswith(f"{name}: ")
    async with client.get("/badge/Fast/uptime/1y.svg") as response:
        assert response.status == 400  # the windows are 24h, 7d and 30d
        assert (await response.json())["parameter"] == "window"


async def test_the_latency_badge_shows_the_p95_against_the_degraded_threshold(
    client: Client,
) -> None:
    fast = await badge(client, "Fast", "latency")
    assert texts(fast)[0] == "p95 24h"
    assert texts(fast)[1].endswith(" ms") and float(texts(fast)[1][:-3]) <= 500
    assert colour(fast) == badges.BRIGHTGREEN  # a quarter of 2 s or less
    slow = await badge(client, "Slow", "latency")
    assert texts(slow)[1].endswith(" s") and colour(slow) == badges.ORANGE  # past its 1 s
    quiet = await badge(client, "Quiet", "latency")
    assert (texts(quiet)[1], colour(quiet)) == ("no data", badges.LIGHTGREY)


@pytest.mark.parametrize("kind", ["status", "uptime/24h", "uptime/7d", "latency"])
async def test_an_unknown_provider_gets_a_grey_unknown_badge_with_404(
    client: Client, kind: str
) -> None:
    root = await badge(client, "Spoofed <b>Hacked</b>", kind, status=404)
    assert texts(root)[1] == "unknown"
    assert colour(root) == badges.LIGHTGREY
    # Nothing the request said is drawn: a link cannot make the badge say what it likes.
    assert "Hacked" not in ET.tostring(root, encoding="unicode")


async def test_a_removed_provider_gets_a_grey_removed_badge(client: Client, tmp_path: Path) -> None:
    config = tmp_path / "badges.toml"
    config.write_text(config.read_text().replace('name = "Leaving"', 'name = "Left"'))
    async with client.post("/api/config/reload") as response:
        assert response.status == 200, await response.text()
        assert "Leaving" in (await response.json())["removed"]
    for kind in ("status", "uptime/24h", "latency"):
        root = await badge(client, "Leaving", kind)
        assert texts(root)[1] == "removed", kind
        assert colour(root) == badges.LIGHTGREY
        assert "no longer monitored" in title(root)


async def test_a_hostile_provider_name_is_text_in_the_badge_never_markup(
    client: Client,
) -> None:
    async with client.get(path(HOSTILE, "status")) as response:
        assert response.status == 200
        body = (await response.read()).decode()
    assert "<img" not in body and "]]>" not in body
    root = ET.fromstring(body)
    # The elements are the badge's own, whatever the name holds.
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert tags == {"svg", "title", "linearGradient", "stop", "clipPath", "rect", "g", "text"}
    # The name comes back as text, cut to 40 characters (the title has it whole).
    label, value = texts(root)
    assert label == HOSTILE[:39] + "…" and value == "online"
    assert title(root) == f"{HOSTILE}: online"


def test_what_xml_cannot_hold_is_replaced_not_written() -> None:
    # A name recorded before names were refused control characters may still hold one.
    held = "a\x00b\x07c\x1bd\ud800e\ufffff\tg"
    root = ET.fromstring(badges.render(held, "online", badges.BRIGHTGREEN, held))
    assert texts(root)[0] == "a\ufffdb\ufffdc\ufffdd\ufffde\ufffdf\tg"
    assert title(root) == "a\ufffdb\ufffdc\ufffdd\ufffde\ufffdf\tg"


async def test_a_longer_text_makes_a_wider_badge(client: Client) -> None:
    short = await badge(client, "Fast", "status")
    long = await badge(client, "Flaky", "uptime/7d")
    assert int(short.attrib["width"]) < int(long.attrib["width"])
    assert badges.text_width("mmmm") > badges.text_width("iiii")
    assert badges.text_width("界") == 2 * badges.text_width("é")


async def test_badges_may_be_cached_for_a_minute_and_revalidated(client: Client) -> None:
    async with client.get(path("Fast", "status")) as response:
        assert response.headers["Cache-Control"] == "public, max-age=60"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        etag = response.headers["ETag"]
    async with client.get(path("Fast", "status"), headers={"If-None-Match": etag}) as response:
        assert response.status == 304
        assert response.headers["ETag"] == etag
        assert await response.read() == b""
    # A changed badge has another ETag: the revalidation gets the new one.
    await append(client, *(probe("Fast", time.time() - 30 + i, "failed") for i in range(3)))
    async with client.get(path("Fast", "status"), headers={"If-None-Match": etag}) as response:
        assert response.status == 200
        assert response.headers["ETag"] != etag
    async with client.get(path("Nobody", "status")) as response:
        assert response.status == 404
        assert response.headers["Cache-Control"] == "public, max-age=60"


def test_uptime_is_rounded_down_and_latency_in_milliseconds_or_seconds() -> None:
    assert badges.uptime_text(100.0) == "100%"
    assert badges.uptime_text(99.999) == "99.99%"
    assert badges.uptime_text(97.5) == "97.5%"
    assert badges.latency_text(340.4) == "340 ms"
    assert badges.latency_text(1234.0) == "1.23 s"


async def test_the_document_says_a_badge_is_svg_also_for_an_unknown_provider(
    client: Client,
) -> None:
    async with client.get("/openapi.json") as response:
        paths = (await response.json())["paths"]
    for route in (
        "/badge/{name}/status.svg",
        "/badge/{name}/uptime/{window}.svg",
        "/badge/{name}/latency.svg",
    ):
        answers = paths[route]["get"]["responses"]
        assert list(answers["200"]["content"]) == ["image/svg+xml"], route
        assert list(answers["404"]["content"]) == ["image/svg+xml"], route
        assert "security" not in paths[route]["get"]
    window = paths["/badge/{name}/uptime/{window}.svg"]["get"]["parameters"][1]
    assert window["schema"]["enum"] == ["24h", "7d", "30d"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
