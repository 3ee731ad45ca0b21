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
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from cryptomon import __version__
from cryptomon.config import ProbeRequest
from cryptomon.config.conditions import (
    Answer,
    Condition,
    Observation,
    parse_condition,
    parse_observation,
)
from cryptomon.events.types import (
    ConditionSeen,
    ErrorKind,
    ObservedValue,
    ProbeKind,
    ProbeOutcome,
    ProbeRecorded,
)

USER_AGENT = f"cryptomon/{__version__}"


def user_agent(region: str | None = None) -> str:
    """The probes' User-Agent: with a region, it says which (a provider, or a stand-in
    for one, can answer by region)."""
    return USER_AGENT if region is None else f"{USER_AGENT} (region {region})"


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


# The longest JSON-RPC error message kept in an event.
_RPC_MESSAGE_LIMIT = 200
_JSON_HEADERS = {"Content-Type": "application/json"}
_json_encoder = msgspec.json.Encoder()


class ProbeSpec:
    """One probe's request and answer checks, compiled once when monitoring starts: the
    conditions and observations are parsed here, never per probe."""

    __slots__ = (
        "body",
        "conditions",
        "keeps_body",
        "maintenance",
        "method",
        "observations",
        "reads_error_bodies",
        "rpc",
        "rpc_batch",
        "status_checked",
    )

    def __init__(self, request: ProbeRequest, maintenance_when: tuple[str, ...] = ()) -> None:
        self.method = request.http_method
        document = request.json_body
        self.body: bytes | None = None if document is None else _json_encoder.encode(document)
        self.rpc = request.rpc is not None
        self.rpc_batch = isinstance(request.rpc, tuple)
        self.conditions: tuple[Condition, ...] = tuple(map(parse_condition, request.conditions))
        self.maintenance: tuple[Condition, ...] = tuple(map(parse_condition, maintenance_when))
        self.observations: tuple[tuple[str, Observation], ...] = tuple(
            (name, parse_observation(text)) for name, text in request.observe.items()
        )
        # A [STATUS] condition replaces the built-in 2xx rule.
        self.status_checked = any(condition.uses_status for condition in self.conditions)
        # A provider may say "maintenance" in an error page, so that body is read too.
        self.reads_error_bodies = self.status_checked or bool(self.maintenance)
        self.keeps_body = bool(self.rpc or self.conditions or self.maintenance or self.observations)


PLAIN_GET = ProbeSpec(ProbeRequest())


class CheckSeen(msgspec.Struct, frozen=True, gc=False):
    """One condition judged on one answer, for a person reading `check-config --live`."""

    condition: str
    held: bool
    seen: str
    maintenance: bool = False  # from maintenance_when: holding means "in maintenance"


class ProbeResult(msgspec.Struct, frozen=True):
    """A probe's event, and the rate-limit headers of its response (lower-cased names).

    `checks` holds every condition's verdict when the probe was asked to `explain`."""

    event: ProbeRecorded
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    checks: list[CheckSeen] = msgspec.field(default_factory=list)


def create_probe_session(
    limit: int = 100, limit_per_host: int = 10, *, region: str | None = None
) -> aiohttp.ClientSession:
    """The one client session all probes share; call it inside the running event loop.
    Its User-Agent names the instance's `region`, if it has one.

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
        headers={"User-Agent": user_agent(region)},
        timeout=aiohttp.ClientTimeout(total=None),
        trace_configs=[tracing],
        response_class=_ProbeResponse,
    )


class _Attempt:
    """What is known of one request so far; it outlives the cancellation a timeout causes."""

    __slots__ = (
        "certificate_not_after",
        "clock",
        "rate_headers",
        "received",
        "started_at",
        "started_perf",
        "status",
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.status: int | None = None
        self.received = 0
        self.rate_headers: dict[str, str] = {}
        self.certificate_not_after: float | None = None
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


class _Verdict(msgspec.Struct, frozen=True, gc=False):
    """How an answer was judged, before it becomes an event."""

    outcome: ProbeOutcome
    error_kind: ErrorKind | None = None
    message: str | None = None
    condition: ConditionSeen | None = None
    rpc_error_code: int | None = None


_SUCCESS = _Verdict("success")


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
    spec: ProbeSpec = PLAIN_GET,
    check: BodyCheck | None = None,
    secrets: Sequence[str] = (),
    max_body_bytes: int = 1_048_576,
    scheduled_at: float | None = None,
    clock: Callable[[], float] = time.time,
    explain: bool = False,
    region: str | None = None,
) -> ProbeResult:
    """Send `spec`'s request to `url` once, within `timeout` seconds for connect, headers
    and body together.

    `endpoint` is what the event records: the path only, never the URL with its query.
    Without a [STATUS] condition a 2xx is required; then `check`, a JSON-RPC error member,
    the declared maintenance and the conditions judge the body. A body over
    `max_body_bytes` fails as `body_too_large`. `secrets` (the key, env: header values)
    never appear in what is recorded. `explain` judges every condition, for a person.
    `region` is the probing instance's, recorded in the event.
    Network failures become results; cancellation propagates.
    """
    observations: dict[str, ObservedValue] = {}
    checks: list[CheckSeen] = []

    def result(verdict: _Verdict) -> ProbeResult:
        event = ProbeRecorded(
            provider=provider,
            kind=kind,
            endpoint=endpoint,
            outcome=verdict.outcome,
            started_at=attempt.started_at,
            latency_ms=round(attempt.elapsed_ms(), 3),
            http_status=attempt.status,
            response_bytes=attempt.received,
            error_kind=verdict.error_kind,
            error_message=verdict.message,
            scheduled_at=scheduled_at,
            condition=verdict.condition,
            rpc_error_code=verdict.rpc_error_code,
            certificate_not_after=attempt.certificate_not_after,
            observations=observations or None,
            region=region,
        )
        return ProbeResult(event=event, headers=attempt.rate_headers, checks=checks)

    host = _host_of(url)
    attempt = _Attempt(clock)
    if spec.body is not None:
        headers = {**_JSON_HEADERS, **headers}
    try:
        async with (
            asyncio.timeout(timeout),
            session.request(
                spec.method,
                url,
                headers=headers,
                params=params,
                data=spec.body,
                trace_request_ctx=attempt,
            ) as response,
        ):
            attempt.status = status = response.status
            attempt.rate_headers = _rate_limit_headers(response.headers)
            if isinstance(response, _ProbeResponse):
                attempt.certificate_not_after = response.certificate_not_after
            if status == 429:
                return result(_Verdict("rate_limited", "rate_limited", f"{host} answered HTTP 429"))
            ok_status = 200 <= status < 300
            if not ok_status and not spec.reads_error_bodies:
                # An error page tells us nothing the status does not, so it is left unread.
                return result(_Verdict("failed", *_status_error(host, status)))
            keep = spec.keeps_body or check is not None
            body = await _read_capped(response.content, attempt, max_body_bytes, keep)
            if body is None:
                message = f"body from {host} exceeds {max_body_bytes} bytes"
                return result(_Verdict("failed", "body_too_large", message))
            if not keep:
                return result(_SUCCESS)
            answer = Answer(
                status=status,
                response_time_ms=attempt.elapsed_ms(),
                headers=response.headers,
                body=body,
                certificate_expires_in_ms=_expires_in_ms(attempt),
                secrets=secrets,
            )
            if spec.rpc_batch:
                _in_call_order(answer)
            for name, observation in spec.observations:
                value = observation.extract(answer)
                if value is not None:
                    observations[name] = value
            if explain:
                checks += _explain(spec, answer)
            return result(_judge(spec, check, answer, host, status, ok_status))
    except TimeoutError:
        # Also catches aiohttp's own timeout errors, which subclass TimeoutError.
        stage = "body" if attempt.status is not None else "response"
        message = f"no complete {stage} from {host} within {timeout:g}s"
        return result(_Verdict("timeout", "timeout", message))
    except (aiohttp.ClientError, OSError) as exc:
        return result(_Verdict("failed", *_network_error(host, exc)))


def _judge(
    spec: ProbeSpec,
    check: BodyCheck | None,
    answer: Answer,
    host: str,
    status: int,
    ok_status: bool,
) -> _Verdict:
    """The verdict on a whole answer, in order: declared maintenance, the status, the
    body check, a JSON-RPC error, then the conditions (the first that fails)."""
    for condition in spec.maintenance:
        verdict = condition.check(answer)
        if verdict.held:
            return _Verdict(
                "maintenance",
                message=f"{host} declares maintenance",
                condition=ConditionSeen(condition.text, verdict.seen),
            )
    if not ok_status and not spec.status_checked:
        return _Verdict("failed", *_status_error(host, status))
    if check is not None:
        failure = check.failure(answer.body)
        if failure is not None:
            return _Verdict("failed", "invalid_body", failure)
    if spec.rpc:
        rpc_failure = _rpc_failure(answer, host)
        if rpc_failure is not None:
            return rpc_failure
    for condition in spec.conditions:
        verdict = condition.check(answer)
        if not verdict.held:
            return _Verdict(
                "failed",
                "condition",
                f"{condition.text} failed: saw {verdict.seen}",
                ConditionSeen(condition.text, verdict.seen),
            )
    return _SUCCESS


def _in_call_order(answer: Answer) -> None:
    """A batch's replies sorted by id (the calls' order): a node may answer a batch in
    any order, and conditions name replies by index."""
    document = answer.json
    if isinstance(document, list):
        answer.replace_document(sorted(document, key=_reply_id))


def _reply_id(reply: object) -> int:
    call_id = reply.get("id") if isinstance(reply, dict) else None
    return call_id if isinstance(call_id, int) else sys.maxsize


def _explain(spec: ProbeSpec, answer: Answer) -> list[CheckSeen]:
    checks = []
    for maintenance, conditions in ((True, spec.maintenance), (False, spec.conditions)):
        for condition in conditions:
            verdict = condition.check(answer)
            checks.append(CheckSeen(condition.text, verdict.held, verdict.seen, maintenance))
    return checks


def _rpc_failure(answer: Answer, host: str) -> _Verdict | None:
    """A JSON-RPC answer that is not JSON, or that carries an `error` member (in any call
    of a batch): the node answered, but not with a result."""
    document = answer.json
    if document is None:
        return _Verdict("failed", "invalid_body", f"{host} answered JSON-RPC with no JSON body")
    for reply in document if isinstance(document, list) else [document]:
        error = reply.get("error") if isinstance(reply, dict) else None
        if error is None:
            continue
        code = error.get("code") if isinstance(error, dict) else None
        text = error.get("message") if isinstance(error, dict) else error
        message = answer.redact(str(text))[:_RPC_MESSAGE_LIMIT]
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        return _Verdict(
            "failed",
            "rpc_error",
            f"JSON-RPC error {code if code is not None else '(no code)'}: {message}",
            rpc_error_code=code,
        )
    return None


class _ProbeResponse(aiohttp.ClientResponse):
    """A response that keeps when the peer's TLS certificate expires (unix seconds; None
    over plain HTTP), read while the connection is in hand: aiohttp hands a connection
    back to its pool as soon as a short body has arrived, before a caller could ask.

    The date is recorded, not the days left, so a fold judging it stays deterministic.
    """

    certificate_not_after: float | None = None

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        ssl_object = None if transport is None else transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            certificate = ssl_object.getpeercert()
            not_after = certificate.get("notAfter") if certificate else None
            if isinstance(not_after, str):
                self.certificate_not_after = float(ssl.cert_time_to_seconds(not_after))
        return await super().start(connection)


def _expires_in_ms(attempt: _Attempt) -> float | None:
    if attempt.certificate_not_after is None:
        return None
    return (attempt.certificate_not_after - attempt.clock()) * 1000.0


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
