"""Who may write, and as whom: the check the route table puts in front of every
route it declares `write=True`, so no write handler can forget it; and the API
token comparison that it and the live feed share."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from cryptomon.http.errors import Forbidden, Unauthorized
from cryptomon.http.keys import CLIENT_LIMITS, SETTINGS, WRITER

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(given: str | None, token: str) -> bool:
    """Whether `given` is the configured API token, compared in constant time.

    aiohttp decodes header bytes that are not UTF-8 as lone surrogates, and so does
    Python an environment variable's; surrogatepass encodes every string, those
    included, so a garbled token is refused (a 401), never a 500."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
    )


def authorize_write(request: web.Request) -> str:
    """The actor a write is recorded under; refuses anyone not allowed to write.

    With an API token configured, the bearer token must match (compared in
    constant time). Without one, writes come only from loopback, never through
    a proxy (which would make everyone it serves look local)."""
    token = request.app[SETTINGS].api_token
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("this endpoint needs an Authorization: Bearer <token> header")
        if not token_matches(given.strip(), token):
            raise Unauthorized("the bearer token is not the one configured")
        return "token"
    if not request.app[CLIENT_LIMITS].is_loopback(request):
        env = request.app[SETTINGS].config.server.api_token_env
        raise Forbidden(
            f"writes are allowed only from loopback while no API token is configured; set {env}"
        )
    return "local"


def writes(handler: Handler) -> Handler:
    """`handler`, run only for a request allowed to write, with its actor in `request[WRITER]`."""

    @functools.wraps(handler)
    async def authorized(request: web.Request) -> web.StreamResponse:
        request[WRITER] = authorize_write(request)
        return await handler(request)

    return authorized
