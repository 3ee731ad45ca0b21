"""Badges for READMEs: a provider's status, uptime and latency as SVG in the shields.io
flat style (a label on grey, a value on a colour saying how good it is).

They answer from the read models and need no token, also when reads need one: an image
in a README cannot send a header, and a badge says no more than a status page would.
A badge may be cached for a minute. An unknown provider gets a grey `unknown` badge with
404, naming nothing the request said (a badge on this origin must not say what a link
told it to). A removed provider (kept, marked removed, in the read models) gets a grey
`removed` badge with 200: its history is still there, but it is no longer watched, and
a badge that went on showing its last status would tell a README's readers what is not
so any more.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from cryptomon.http.keys import ARGUMENTS
from cryptomon.http.views import DAY, models_of
from cryptomon.projections.providers import ProviderState

SVG_TYPE = "image/svg+xml"
CACHE_SECONDS = 60
UPTIME_WINDOWS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
# The latency badge: the p95 of the health probes' answers over this window.
LATENCY_WINDOW = DAY
LATENCY_LABEL = "p95 24h"
# Without a degraded_latency of its own a provider is judged slow past this (config's).
DEFAULT_DEGRADED_MS = 2000
LABEL_CHARACTERS = 40  # a longer name is cut, with an ellipsis; the title has it whole

# shields.io's colours.
BRIGHTGREEN = "#4c1"
GREEN = "#97ca00"
YELLOWGREEN = "#a4a61d"
YELLOW = "#dfb317"
ORANGE = "#fe7d37"
RED = "#e05d44"
BLUE = "#007ec6"
LIGHTGREY = "#9f9f9f"
LABEL_GREY = "#555"

STATUS_COLOURS = {
    "online": BRIGHTGREEN,
    "degraded": YELLOW,
    "offline": RED,
    "rate_limited": ORANGE,
    "maintenance": BLUE,
}
# From this uptime (percent) up, each colour; below the last, red.
UPTIME_COLOURS: tuple[tuple[float, str], ...] = (
    (99.9, BRIGHTGREEN),
    (99.0, GREEN),
    (97.0, YELLOWGREEN),
    (95.0, YELLOW),
    (90.0, ORANGE),
)

# Verdana at 11 px, shields.io's font: each printable ASCII character's advance in pixels,
# from " " on. Other characters: a typical width, twice that for wide East Asian ones.
_ASCII_WIDTHS = (
    (3.87, 4.33, 5.05, 9.0, 6.99, 11.84, 7.99, 2.95, 4.99, 4.99, 6.99, 9.0, 4.0, 4.99, 4.0, 4.99)
    + (6.99,) * 10
    + (4.99, 4.99, 9.0, 9.0, 9.0, 6.0, 11.0)
    + (7.52, 7.54, 7.68, 8.48, 6.96, 6.32, 8.53, 8.27, 4.63, 5.0, 7.62, 6.12, 9.27)
    + (8.23, 8.66, 6.63, 8.66, 7.65, 7.52, 6.78, 8.05, 7.52, 10.88, 7.54, 6.77, 7.54)
    + (4.99, 4.99, 4.99, 9.0, 6.99, 6.99)
    + (6.61, 6.85, 5.73, 6.85, 6.55, 3.87, 6.85, 6.96, 3.02, 3.79, 6.51, 3.02, 10.7)
    + (6.96, 6.68, 6.85, 6.85, 4.69, 5.73, 4.33, 6.96, 6.51, 9.0, 6.51, 6.51, 5.78)
    + (6.98, 4.99, 6.98, 9.0)
)
_OTHER_WIDTH = 7.0
_PADDING = 5  # each side of a text


def text_width(text: str) -> float:
    """About how wide `text` is in Verdana 11 px (the SVG pins it with textLength)."""
    width = 0.0
    for character in text:
        code = ord(character)
        if 32 <= code < 127:
            width += _ASCII_WIDTHS[code - 32]
        elif unicodedata.combining(character):
            continue
        elif unicodedata.east_asian_width(character) in ("W", "F"):
            width += 2 * _OTHER_WIDTH
        else:
            width += _OTHER_WIDTH
    return width


def _xml_text(text: str) -> str:
    """`text` with what XML 1.0 cannot hold at all (control characters, lone surrogates,
    U+FFFE and U+FFFF) replaced by U+FFFD; `escape` and `quoteattr` do the markup."""
    return "".join(
        character
        if character in "\t\n\r"
        or (" " <= character < "\ud800")
        or ("\ue000" <= character < "\ufffe")
        or character >= "\U00010000"
        else "\ufffd"
        for character in text
    )


def render(label: str, value: str, colour: str, title: str) -> bytes:
    """A flat badge: `label` on grey, `value` on `colour`, `title` its accessible name."""
    label, value, title = _xml_text(label), _xml_text(value), _xml_text(title)
    label_text, value_text = text_width(label), text_width(value)
    left = round(label_text) + 2 * _PADDING
    right = round(value_text) + 2 * _PADDING
    width = left + right
    # Text is drawn at 10x and scaled down, as shields.io does, for sub-pixel placement.
    texts = []
    for text, measured, centre in (
        (label, label_text, left / 2),
        (value, value_text, left + right / 2),
    ):
        x, length, body = round(centre * 10), round(measured * 10), escape(text)
        texts.append(
            f'<text aria-hidden="true" x="{x}" y="150" fill="#010101" fill-opacity=".3"'
            f' transform="scale(.1)" textLength="{length}">{body}</text>'
            f'<text x="{x}" y="140" transform="scale(.1)" fill="#fff"'
            f' textLength="{length}">{body}</text>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img"'
        f" aria-label={quoteattr(title)}><title>{escape(title)}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb"'
        ' stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="{LABEL_GREY}"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle"'
        ' font-family="Verdana,Geneva,DejaVu Sans,sans-serif"'
        ' text-rendering="geometricPrecision" font-size="110">'
        f"{''.join(texts)}</g></svg>"
    )
    return svg.encode("utf-8")


def _answer(request: web.Request, svg: bytes, status: int = 200) -> web.Response:
    etag = '"' + hashlib.sha256(svg).hexdigest()[:20] + '"'
    headers = {
        "Cache-Control": f"public, max-age={CACHE_SECONDS}",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        # Opened on its own, the image runs nothing and loads nothing.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    }
    if status == 200 and etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=svg, status=status, content_type=SVG_TYPE, charset="utf-8", headers=headers
    )


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARACTERS else name[: LABEL_CHARACTERS - 1] + "…"


def _provider(request: web.Request) -> ProviderState | None:
    return models_of(request).projections.providers.get(request[ARGUMENTS].path("name"))


def _not_watched(request: web.Request, state: ProviderState | None, label: str) -> web.Response:
    """The badge of an unknown provider (404) or a removed one (200), both grey."""
    if state is None:
        svg = render(label, "unknown", LIGHTGREY, "cryptomon: no such provider")
        return _answer(request, svg, 404)
    title = f"{state.name}: removed, no longer monitored"
    return _answer(request, render(label, "removed", LIGHTGREY, title))


async def status_badge(request: web.Request) -> web.Response:
    """The provider's status now, its name as the label."""
    state = _provider(request)
    if state is None or state.removed:
        return _not_watched(request, state, "status" if state is None else _label(state.name))
    status = state.status.replace("_", " ")
    svg = render(
        _label(state.name),
        status,
        STATUS_COLOURS.get(state.status, LIGHTGREY),
        f"{state.name}: {status}",
    )
    return _answer(request, svg)


def uptime_text(percent: float) -> str:
    """Two decimals at most, rounded down: 99.999% is 99.99%, never 100%."""
    shown = math.floor(percent * 100) / 100
    return f"{shown:.2f}".rstrip("0").rstrip(".") + "%"


async def uptime_badge(request: web.Request) -> web.Response:
    """The share of successful health probes over 24 h, 7 d or 30 d."""
    window = request[ARGUMENTS].path("window")
    label = f"uptime {window}"
    state = _provider(request)
    if state is None or state.removed:
        return _not_watched(request, state, label)
    now = time.time()
    stats = models_of(request).projections.metrics.window(
        state.name, now - UPTIME_WINDOWS[window], now, "health"
    )
    if stats.uptime is None:
        svg = render(label, "no data", LIGHTGREY, f"{state.name}: no probes in {window}")
        return _answer(request, svg)
    percent = stats.uptime * 100
    colour = next((colour for floor, colour in UPTIME_COLOURS if percent >= floor), RED)
    value = uptime_text(percent)
    title = f"{state.name}: uptime {value} over {window} ({stats.count} probes)"
    return _answer(request, render(label, value, colour, title))


def latency_text(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def latency_colour(ms: float, degraded_ms: float) -> str:
    """Against the latency the provider is judged degraded at: a quarter of it or less is
    bright green, half green, up to it yellow, beyond it orange."""
    if ms <= degraded_ms / 4:
        return BRIGHTGREEN
    if ms <= degraded_ms / 2:
        return GREEN
    return YELLOW if ms <= degraded_ms else ORANGE


async def latency_badge(request: web.Request) -> web.Response:
    """The p95 latency of the last 24 h's health probes: what a README's reader
    wants is how fast the provider usually answers, not the one probe that was last (a
    badge cached for a minute and more would show a moment's outlier for that long)."""
    state = _provider(request)
    if state is None or state.removed:
        return _not_watched(request, state, LATENCY_LABEL)
    now = time.time()
    stats = models_of(request).projections.metrics.window(
        state.name, now - LATENCY_WINDOW, now, "health"
    )
    if stats.p95 is None:
        svg = render(LATENCY_LABEL, "no data", LIGHTGREY, f"{state.name}: no answers in 24h")
        return _answer(request, svg)
    value = latency_text(stats.p95)
    colour = latency_colour(stats.p95, state.degraded_latency_ms or DEFAULT_DEGRADED_MS)
    title = f"{state.name}: p95 latency {value} over 24h"
    return _answer(request, render(LATENCY_LABEL, value, colour, title))
