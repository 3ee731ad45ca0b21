"""Probing providers: one HTTP request, bounded in time and size, turned into a `ProbeRecorded`.

`probe` never raises for network trouble: every failure becomes a result with an error kind,
so the scheduler can append it as is. Its messages name the host only, because a provider URL
may carry an API key in its query string and nothing secret may reach the event log.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec

from cryptomon import __version__
from cryptomon.events.types import ErrorKind, ProbeKind, ProbeOutcome, ProbeRecorded

USER_AGENT = f"cryptomon/{__version__}"

# Response headers a rate limiter can learn from, lower-cased. Binance names its weight
# headers per interval (X-MBX-USED-WEIGHT-1M, -1H, ...), hence the prefix match.
_RATE_LIMIT_HEADERS = frozenset(
    {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"}
)
_RATE_LIMIT_HEADER_PREFIX = "x-mbx-used-weight"

_READ_CHUNK = 65_536

# aiohttp warns when asked to clean up closed TLS transports on a Python that no longer
# leaks them (fixed in 3.12.8 and 3.13.1), and pytest turns that warning into an error.
_NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)


class BodyCheck(msgspec.Struct, frozen=True, gc=False):
    """What a collection probe's JSON body must look like to count as a success.

    Any check requires the body to parse as JSON. `expect_key`: the body is an object holding
    that key. `expect_non_empty`: the body is a non-empty list, or an object with a key.
    """

    expect_key: str | None = None
    expect_non_empty: bool = False

    def failure(self, body: bytes) -> str | None:
        """Why `body` fails this check, or None when it passes."""
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return f"body is not JSON: {exc}"
        if self.expect_key is not None and not (isinstance(data, dict) and self.expect_key in data):
            return f"body is not a JSON object with key {self.expect_key!r}"
        if self.expect_non_empty and not (isinstance(data, list | dict) and data):
            return "body is not a non-empty JSON list or object"
        return None


class ProbeResult(msgspec.Struct, frozen=True):
    """A probe's event, and the rate-limit headers of its response (lower-cased names)."""

    event: ProbeRecorded
    headers: dict[str, str] = msgspec.field(default_factory=dict)


def create_probe_session(limit: int = 100, limit_per_host: int = 10) -> aiohttp.ClientSession:
    """The one client session all probes share; call it inside the running event loop.

    It has no overall timeout (each `probe` bounds itself), keeps no cookies (a provider's
    cookies must not change the next probe's answer), and times each request from the moment a
    pooled connection is free, so waiting behind our own connection limit is not counted as
    the provider's latency.
    """
    tracing = aiohttp.TraceConfig()
    tracing.on_connection_queued_end.append(_restart_clock_after_queue)
    connector = aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        # Long enough to spare the resolver on every probe, short enough to follow a
        # provider's DNS fail-over within a minute.
        ttl_dns_cache=60,
        enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=None),
        trace_configs=[tracing],
    )


def redact_url(url: str) -> str:
    """`url` without query string, fragment or credentials: safe for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    return urlunsplit((parts.scheme, _authority(parts.netloc), parts.path, "", ""))


class _Attempt:
    """What is known of one request so far; it outlives the cancellation a timeout causes."""

    __slots__ = ("clock", "rate_headers", "received", "started_at", "started_perf", "status")

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.status: int | None = None
        self.received = 0
        self.rate_headers: dict[str, str] = {}
        self.restart()

    def restart(self) -> None:
        self.started_at = self.clock()
        self.started_perf = time.perf_counter()

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_perf) * 1000.0


async def _restart_clock_after_queue(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
) -> None:
    attempt = context.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.restart()


async def probe(
    session: aiohttp.ClientSession,
    *,
    provider: str,
    kind: ProbeKind,
    url: str,
    endpoint: str,
    timeout: float,  # noqa: ASYNC109 - running out of time is a result here, not an exception
    headers: Mapping[str, str] = {},
    params: Mapping[str, str] = {},
    check: BodyCheck | None = None,
    max_body_bytes: int = 1_048_576,
    scheduled_at: float | None = None,
    clock: Callable[[], float] = time.time,
) -> ProbeResult:
    """GET `url` once, within `timeout` seconds for connect, headers and body together.

    `endpoint` is what the event records: the path only, never the URL with its query.
    A 2xx is a success when `check` (if any) passes; a body over `max_body_bytes` fails as
    `body_too_large`. Network failures become results; cancellation propagates.
    """

    def result(
        outcome: ProbeOutcome, error_kind: ErrorKind | None = None, message: str | None = None
    ) -> ProbeResult:
        event = ProbeRecorded(
            provider=provider,
            kind=kind,
            endpoint=endpoint,
            outcome=outcome,
            started_at=attempt.started_at,
            latency_ms=round(attempt.elapsed_ms(), 3),
            http_status=attempt.status,
            response_bytes=attempt.received,
            error_kind=error_kind,
            error_message=message,
            scheduled_at=scheduled_at,
        )
        return ProbeResult(event=event, headers=attempt.rate_headers)

    host = _host_of(url)
    attempt = _Attempt(clock)
    try:
        async with (
            asyncio.timeout(timeout),
            session.get(url, headers=headers, params=params, trace_request_ctx=attempt) as response,
        ):
            attempt.status = response.status
            attempt.rate_headers = _rate_limit_headers(response.headers)
            if response.status == 429:
                return result("rate_limited", "rate_limited", f"{host} answered HTTP 429")
            if not 200 <= response.status < 300:
                # An error page tells us nothing the status does not, so it is left unread.
                return result("failed", *_status_error(host, response.status))
            body = await _read_capped(response.content, attempt, max_body_bytes, check is not None)
            if body is None:
                return result(
                    "failed", "body_too_large", f"body from {host} exceeds {max_body_bytes} bytes"
                )
            failure = check.failure(body) if check is not None else None
            if failure is not None:
                return result("failed", "invalid_body", failure)
            return result("success")
    except TimeoutError:
        # Also catches aiohttp's own timeout errors, which subclass TimeoutError.
        stage = "body" if attempt.status is not None else "response"
        return result("timeout", "timeout", f"no complete {stage} from {host} within {timeout:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return result("failed", *_network_error(host, exc))


async def _read_capped(
    content: aiohttp.StreamReader, attempt: _Attempt, cap: int, keep: bool
) -> bytes | None:
    """Read the body up to `cap` bytes, keeping it only if `keep`; None when it is longer.

    Asking for at most one byte past the cap means this never holds more than `cap + 1` bytes.
    """
    kept = bytearray()
    while chunk := await content.read(min(_READ_CHUNK, cap + 1 - attempt.received)):
        attempt.received += len(chunk)
        if attempt.received > cap:
            return None
        if keep:
            kept += chunk
    return bytes(kept)


def _rate_limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _RATE_LIMIT_HEADERS or lowered.startswith(_RATE_LIMIT_HEADER_PREFIX):
            found[lowered] = value
    return found


def _status_error(host: str, status: int) -> tuple[ErrorKind, str]:
    if 400 <= status < 500:
        return "http_4xx", f"{host} answered HTTP {status}"
    if status >= 500:
        return "http_5xx", f"{host} answered HTTP {status}"
    # A final 1xx/3xx (a redirect without Location, a 304): an answer, but not a usable one.
    return "invalid_body", f"{host} answered HTTP {status}, expected 2xx"


def _network_error(host: str, exc: aiohttp.ClientError | OSError) -> tuple[ErrorKind, str]:
    """Classify a failure and describe it without the exception's text.

    aiohttp puts the full URL, query string and all, into several exception messages; the
    text of errors from below HTTP (resolver, socket, TLS) never holds the request line.
    """
    cause: BaseException = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    # TLS first: aiohttp's TLS errors are also connector errors.
    if isinstance(exc, aiohttp.ClientSSLError) or isinstance(cause, ssl.SSLError):
        return "tls", f"TLS with {host} failed: {_tls_reason(cause)}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(cause, socket.gaierror):
        detail = cause.strerror if isinstance(cause, OSError) else None
        return "dns", f"cannot resolve {host}: {detail or type(cause).__name__}"
    if isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED:
        return "connection_refused", f"{host} refused the connection"
    return "connection_error", f"{type(exc).__name__} talking to {host}"


def _tls_reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return error.verify_message
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason
    return type(error).__name__


def _host_of(url: str) -> str:
    try:
        return _authority(urlsplit(url).netloc) or "<no host>"
    except ValueError:
        return "<invalid url>"


def _authority(netloc: str) -> str:
    """Host and port of a netloc, without any `user:password@`."""
    return netloc.rpartition("@")[2]
