"""Errors as RFC 9457 problem documents, answered in front of every route.

Handlers raise domain errors (an unknown provider, a bad parameter, an alert
already acknowledged); `guarded` turns each into a 4xx with a JSON body saying
what was wrong. Anything unexpected becomes a bare 500 whose body carries no
exception text, and is logged. The same wrapper first has the per-client limiter
admit the request (limits.py), which refuses with `TooManyRequests`.

The route table puts `guarded` around every route it adds, a catch-all for unrouted
requests included (routes.py), rather than an aiohttp middleware: an app with any
middleware pays aiohttp's machinery for them, and a layer of its own, on every
request, which was a twentieth of the service's time answering from its cache.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from cryptomon.events.log import StoreClosedError, StoreError
from cryptomon.http.keys import CLIENT_LIMITS
from cryptomon.http.reload import ConfigInvalid
from cryptomon.probing.definitions import DefinitionRefused
from cryptomon.probing.scheduler import UnknownJobError
from cryptomon.projections import AlreadyAcknowledgedError, UnknownAlertError

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    parameter: str | None = None
    errors: list[str] | None = None  # every mistake, when there are several (a config file)


class InvalidParameter(ValueError):
    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


class NotFound(LookupError):
    def __init__(self, what: str, detail: str) -> None:
        super().__init__(detail)
        self.what = what
        self.detail = detail


class Conflict(Exception):
    """The request contradicts what stands (a 409): `slug` and `title` name the problem."""

    def __init__(self, slug: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug
        self.title = title
        self.detail = detail


class TooManyRequests(Exception):
    """A client past its limits (a 429): `retry_after` seconds until it may try again."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class Unauthorized(PermissionError):
    pass


class Forbidden(PermissionError):
    pass


class InsufficientScope(Forbidden):
    """A valid token that does not allow this (the read token on a write): RFC 6750's
    403 with `error="insufficient_scope"`, so a client knows to ask for another token."""


_encoder = msgspec.json.Encoder()


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    request: web.Request,
    *,
    parameter: str | None = None,
    errors: list[str] | None = None,
) -> web.Response:
    body = Problem(f"/problems/{slug}", title, status, detail, request.path, parameter, errors)
    return web.Response(status=status, body=_encoder.encode(body), content_type=PROBLEM_TYPE)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What the route table runs in front of a route (authorization.py's): returns, or raises
# the refusal.
Check = Callable[[web.Request], None]


def guarded(handler: Handler, check: Check | None = None) -> Handler:
    """`handler`, behind the per-client limiter and `check` (who may call it: see
    authorization.py), its errors and theirs answered as problems. One wrapper for all
    three, as each more is a coroutine on every request."""

    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            request.app[CLIENT_LIMITS].admit(request)
            if check is not None:
                check(request)
            return await handler(request)
        except TooManyRequests as exc:
            response = problem_response(
                429, "too-many-requests", "Too many requests", exc.detail, request
            )
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
            return response
        except InvalidParameter as exc:
            return problem_response(
                400, "invalid-parameter", "Invalid parameter", exc.detail, request,
                parameter=exc.parameter,
            )  # fmt: skip
        except NotFound as exc:
            return problem_response(
                404, f"unknown-{exc.what}", f"Unknown {exc.what}", exc.detail, request
            )
        except UnknownAlertError as exc:
            return problem_response(404, "unknown-alert", "Unknown alert", str(exc), request)
        except ConfigInvalid as exc:
            return problem_response(
                422, "invalid-config", "Invalid configuration", str(exc), request, errors=exc.errors
            )
        except UnknownJobError as exc:
            return problem_response(404, "unknown-job", "Unknown job", str(exc), request)
        except AlreadyAcknowledgedError as exc:
            return problem_response(
                409, "already-acknowledged", "Already acknowledged", str(exc), request
            )
        except Conflict as exc:
            return problem_response(409, exc.slug, exc.title, exc.detail, request)
        except DefinitionRefused as exc:
            return problem_response(exc.status, exc.kind, exc.title, exc.message, request)
        except Unauthorized as exc:
            response = problem_response(401, "unauthorized", "Unauthorized", str(exc), request)
            response.headers["WWW-Authenticate"] = 'Bearer realm="cryptomon"'
            return response
        except InsufficientScope as exc:
            response = problem_response(
                403, "insufficient-scope", "Insufficient scope", str(exc), request
            )
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="cryptomon", error="insufficient_scope", scope="write"'
            )
            return response
        except Forbidden as exc:
            return problem_response(403, "forbidden", "Forbidden", str(exc), request)
        except (StoreClosedError, StoreError) as exc:
            response = problem_response(
                503, "storage-unavailable", "Storage unavailable", str(exc), request
            )
            response.headers["Retry-After"] = "5"
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            detail = f"{exc.reason}: {request.method} {request.path}"
            response = problem_response(
                exc.status, exc.reason.lower().replace(" ", "-"), exc.reason, detail, request
            )
            for name in ("Allow", "Retry-After"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return problem_response(
                500, "internal-error", "Internal error", "the server failed; see its log", request
            )

    guard.__name__ = getattr(handler, "__name__", "guard")
    return guard
