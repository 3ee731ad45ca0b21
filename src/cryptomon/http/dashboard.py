"""The dashboard: `/` and `/providers/{name}` for browsers, their files under `/static/`.

`/` answers by content negotiation: a client that prefers `text/html` (a
browser) gets the dashboard page; any other (`application/json`, `*/*`, no
Accept at all) gets the service information as JSON, as the seed did. A
provider's page, `/providers/{name}`, likewise: the page for a browser (with 404
for a name nobody has), the provider's view for everyone else. The pages and
their files are package data in `cryptomon/dashboard/`, read once when the app
is built; the pages then use only the public REST API and `/ws/live`.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib.resources import files

from aiohttp import web

from cryptomon.http.errors import NotFound, guarded
from cryptomon.http.keys import ARGUMENTS, DASHBOARD_ASSETS
from cryptomon.http.views import models_of, providers, service

STATIC_PREFIX = "/static/"
CONTENT_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The page talks only to its own origin; nothing inline, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    # The body gzipped once at start-up, for the clients that accept it (None where that
    # saves little): the page's script and styles are a quarter of their size so, which on
    # a slow phone link is most of the time before the page shows.
    gzipped: bytes | None = None


def load_assets() -> dict[str, Asset]:
    """Every file of the dashboard package directory, by file name."""
    assets: dict[str, Asset] = {}
    for entry in files("cryptomon").joinpath("dashboard").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        packed = gzip.compress(body, mtime=0)
        gzipped = packed if len(packed) < 0.9 * len(body) else None
        assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag, gzipped)
    return assets


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip (named, or `*`, with a q above 0)."""
    for part in accept_encoding.split(","):
        coding, *parameters = (piece.strip() for piece in part.split(";"))
        if coding.lower() not in ("gzip", "*"):
            continue
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def prefers_html(accept: str) -> bool:
    """Whether an Accept header ranks HTML above JSON. Only an explicit `text/html`
    (or `text/*`) counts for HTML; `*/*` alone means an API client that takes JSON."""
    html = json = 0.0
    for part in accept.split(","):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml", "text/*"):
            html = max(html, quality)
        elif media in ("application/json", "application/*", "*/*"):
            json = max(json, quality)
    return html > 0 and html > json


def _answer(request: web.Request, asset: Asset, status: int = 200) -> web.Response:
    body, etag = asset.body, asset.etag
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    vary = ["Accept"] if asset.content_type == "text/html" else []
    if asset.gzipped is not None:
        vary.append("Accept-Encoding")
        if accepts_gzip(request.headers.get("Accept-Encoding", "")):
            # Another representation, so another entity tag (RFC 9110, 8.8.3).
            body, etag = asset.gzipped, asset.etag[:-1] + '-gzip"'
            headers["Content-Encoding"] = "gzip"
    headers["ETag"] = etag
    if vary:
        headers["Vary"] = ", ".join(vary)
    if asset.content_type == "text/html":
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    if status == 200 and request.headers.get("If-None-Match") == etag:
        headers.pop("Content-Encoding", None)
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if asset.content_type.startswith(("text/", "image/svg")) else None
    return web.Response(
        body=body,
        status=status,
        content_type=asset.content_type,
        charset=charset,
        headers=headers,
    )


def asks_for_page(request: web.Request) -> bool:
    """Whether `/` answers this request with the page (open also when reads need a
    token: the page asks for it), not the service information."""
    return prefers_html(request.headers.get("Accept", ""))


async def root(request: web.Request) -> web.StreamResponse:
    """The dashboard for browsers; the service information (JSON) for everyone else."""
    if asks_for_page(request):
        return _answer(request, request.app[DASHBOARD_ASSETS]["index.html"])
    response = await service.info(request)
    response.headers["Vary"] = "Accept"
    return response


async def provider_page(request: web.Request) -> web.StreamResponse:
    """A provider's page for browsers (404 for a name nobody has: the page says so); the
    provider's view (JSON, as `/api/providers/{name}`) for everyone else."""
    if prefers_html(request.headers.get("Accept", "")):
        name = request[ARGUMENTS].path("name")
        known = models_of(request).projections.providers.get(name) is not None
        page = request.app[DASHBOARD_ASSETS]["provider.html"]
        return _answer(request, page, 200 if known else 404)
    response = await providers.provider(request)
    response.headers["Vary"] = "Accept"
    return response


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = request.app[DASHBOARD_ASSETS].get(name)
    if found is None or name.endswith(".html"):  # the pages have their own addresses
        raise NotFound("file", f"no dashboard file named {name[:100]!r}")
    return _answer(request, found)


def add_routes(app: web.Application) -> None:
    app[DASHBOARD_ASSETS] = load_assets()
    app.router.add_get(STATIC_PREFIX + "{name}", guarded(asset))
