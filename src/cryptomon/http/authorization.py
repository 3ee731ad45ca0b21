"""Who may read and who may write, and as whom: the checks the route table puts in front
of its routes, so no handler can forget them; and the token comparison they share.

- A route declared `write=True` runs behind `write_check`: the API token when one is
  configured (`server.api_token_env`), loopback otherwise.
- With a read token configured (`server.read_token_env`) every other route runs behind
  `read_check`: the read token or the API token as a bearer token, unless the route is
  open to the request (`Endpoint.open_to`: the health probes, the badges, the
  dashboard's page, the API's document). The read token reads only: it never writes.
- The live feed runs behind `feed_check`: the same tokens (the API token alone when only
  it is configured, as before there was a read token), as a bearer header, `?token=` or
  the feed's first message (`request[FEED_TOKENS]` says which the handler must ask for).

No token is logged or echoed: a refusal says what was missing, never what was sent.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from aiohttp import web

from cryptomon.http.errors import Check, Forbidden, InsufficientScope, Unauthorized
from cryptomon.http.keys import CLIENT_LIMITS, FEED_TOKENS, SETTINGS, WRITER
from cryptomon.http.settings import Settings

# Which requests may read a route without the read token (see `Endpoint.open_to`).
Exemption = Callable[[web.Request], bool]


def token_matches(given: str | None, token: str) -> bool:
    """Whether `given` is the configured token, compared in constant time.

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates, and so does
    Python an environment variable's; surrogatepass encodes every string, those
    included, so a garbled token is refused (a 401), never a 500."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


def matches_any(given: str, tokens: tuple[str, ...]) -> bool:
    """Whether `given` is one of `tokens`, each compared in constant time (all of them,
    whichever matches: how long it takes does not say which)."""
    found = [token_matches(given, token) for token in tokens]
    return any(found)


def anyone(request: web.Request) -> bool:
    """Open to every request (a health probe, a badge, the API's document)."""
    return True


def reading_tokens(settings: Settings) -> tuple[str, ...]:
    """The tokens that may read the API: none (reads are open) without a read token; with
    one, it and the API token (a writer may read)."""
    if settings.read_token is None:
        return ()
    return tuple(t for t in (settings.read_token, settings.api_token) if t is not None)


def feed_tokens(settings: Settings) -> tuple[str, ...]:
    """The tokens that may follow the live feed: those that may read; without a read
    token, the API token when one is set (the feed asked for it before reads could)."""
    tokens = reading_tokens(settings)
    if not tokens and settings.api_token is not None:
        return (settings.api_token,)
    return tokens


def _bearer(request: web.Request) -> str | None:
    """The bearer token sent (None without an Authorization header); a header of another
    scheme, or an empty one, is refused."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("expected an Authorization: Bearer <token> header")
    return given.strip()


def authorize_read(request: web.Request) -> None:
    """Refuses a request that may not read: with a read token configured, the bearer
    token must be it or the API token."""
    tokens = reading_tokens(request.app[SETTINGS])
    if not tokens:
        return
    given = _bearer(request)
    if given is None:
        env = request.app[SETTINGS].config.server.read_token_env
        raise Unauthorized(
            "reading needs a token here: send Authorization: Bearer <token>, the read"
            f" token ({env}) or the API token"
        )
    if not matches_any(given, tokens):
        raise Unauthorized("the bearer token is neither the read token nor the API token")


def authorize_write(request: web.Request) -> str:
    """The actor a write is recorded under; refuses anyone not allowed to write.

    With an API token configured, the bearer token must match (compared in constant
    time); the read token is refused with 403 (it reads only). Without one, writes come
    only from loopback, never through a proxy (which would make everyone it serves look
    local)."""
    settings = request.app[SETTINGS]
    token = settings.api_token
    if token is not None:
        given = _bearer(request)
        if given is None:
            raise Unauthorized("this endpoint needs an Authorization: Bearer <token> header")
        writer = token_matches(given, token)
        reader = settings.read_token is not None and token_matches(given, settings.read_token)
        if writer:
            return "token"
        if reader:
            raise InsufficientScope(
                "the read token reads only: this write needs the API token"
                f" ({settings.config.server.api_token_env})"
            )
        raise Unauthorized("the bearer token is not the one configured")
    if not request.app[CLIENT_LIMITS].is_loopback(request):
        env = settings.config.server.api_token_env
        raise Forbidden(
            f"writes are allowed only from loopback while no API token is configured; set {env}"
        )
    return "local"


def write_check(request: web.Request) -> None:
    """Refuses a request not allowed to write; puts its actor in `request[WRITER]`."""
    request[WRITER] = authorize_write(request)


def read_check(open_to: Exemption | None = None) -> Check:
    """The check of a route that reads: anyone may while no read token is configured,
    and any request `open_to` lets in."""
    if open_to is None:
        return authorize_read

    def check(request: web.Request) -> None:
        if not open_to(request):
            authorize_read(request)

    return check


def feed_check(request: web.Request) -> None:
    """Puts in `request[FEED_TOKENS]` the tokens the live feed's first message must carry
    one of: none when the feed is open or the request carried one already (a bearer
    header, or `?token=`: a browser cannot set a WebSocket's headers); a wrong one is a
    401 before the upgrade."""
    tokens = feed_tokens(request.app[SETTINGS])
    if tokens:
        # Another scheme's header (a proxy's Basic) is not ours to judge here.
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        given = bearer.strip() if scheme.lower() == "bearer" and bearer.strip() else None
        if given is None:
            given = request.query.get("token")
        if given is not None:
            if not matches_any(given, tokens):
                raise Unauthorized("the token is not one that may follow the feed")
            tokens = ()
    request[FEED_TOKENS] = tokens
