"""Probes against real stand-in servers: every outcome and error kind, bounds, and secrecy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from standins import StandIn, closed_port

from cryptomon.config import ProbeRequest
from cryptomon.probing.probes import (
    BodyCheck,
    ProbeResult,
    ProbeSpec,
    create_probe_session,
    probe,
)

# Slack for a loaded CI machine: bounds below are "timeout + margin", never exact.
MARGIN = 0.5


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_probe_session() as client:
        yield client


async def run(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> ProbeResult:
    options: dict[str, Any] = {"timeout": 5.0, **kwargs}
    return await probe(
        session, provider="Stand-in", kind="health", url=url, endpoint="/x", **options
    )


async def test_healthy_probe_is_a_success_timed_from_send(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    before = time.time()
    result = await run(session, standin.url("/healthy"), scheduled_at=before - 1.0)
    after = time.time()

    event = result.event
    assert (event.provider, event.kind, event.endpoint) == ("Stand-in", "health", "/x")
    assert event.outcome == "success"
    assert event.http_status == 200
    assert event.error_kind is None
    assert event.error_message is None
    assert event.response_bytes == len(b'{"ok": true, "data": [1]}')
    assert event.scheduled_at == before - 1.0
    assert before <= event.started_at <= after
    assert event.latency_ms is not None
    assert 0 < event.latency_ms <= (after - before) * 1000


async def test_latency_covers_the_server_time(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    result = await run(session, standin.url("/slow?ms=300"))
    assert result.event.outcome == "success"
    assert result.event.latency_ms is not None
    assert 300 <= result.event.latency_ms < 300 + MARGIN * 1000


async def test_waiting_for_a_pooled_connection_is_not_latency(standin: StandIn) -> None:
    async with create_probe_session(limit_per_host=1) as session:
        slow, healthy = await asyncio.gather(
            run(session, standin.url("/slow?ms=400")), run(session, standin.url("/healthy"))
        )
    assert healthy.event.outcome == "success"
    assert healthy.event.latency_ms is not None
    assert healthy.event.latency_ms < 200
    # It left only once the slow probe had given its connection back.
    assert healthy.event.started_at >= slow.event.started_at + 0.4


async def test_custom_headers_and_params_are_sent(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    await run(session, standin.url("/healthy"), headers={"X-Api-Key": "k"}, params={"limit": "1"})
    assert standin.last_headers["User-Agent"].startswith("cryptomon/")
    assert standin.last_headers["X-Api-Key"] == "k"
    assert standin.last_query == {"limit": "1"}


@pytest.mark.parametrize(
    ("path", "outcome", "error_kind", "status"),
    [
        ("/error500", "failed", "http_5xx", 500),
        ("/error404", "failed", "http_4xx", 404),
        ("/ratelimited", "rate_limited", "rate_limited", 429),
    ],
)
async def test_http_errors_are_classified_by_status(
    session: aiohttp.ClientSession,
    standin: StandIn,
    path: str,
    outcome: str,
    error_kind: str,
    status: int,
) -> None:
    event = (await run(session, standin.url(path))).event
    assert (event.outcome, event.error_kind, event.http_status) == (outcome, error_kind, status)
    assert event.error_message == f"127.0.0.1:{standin.port} answered HTTP {status}"
    assert event.latency_ms is not None


async def test_rate_limit_headers_are_captured(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    result = await run(session, standin.url("/ratelimited"))
    assert result.headers.keys() == {
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
    assert result.headers["retry-after"] == "7"
    assert result.headers["x-ratelimit-remaining"] == "0"


async def test_binance_weight_header_is_captured(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    result = await run(session, standin.url("/binance"))
    assert result.event.outcome == "success"
    assert result.headers == {"x-mbx-used-weight-1m": "37"}


async def test_health_probe_without_check_does_not_parse_the_body(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    event = (await run(session, standin.url("/garbage"))).event
    assert event.outcome == "success"
    assert event.response_bytes == len(b"not json{")


@pytest.mark.parametrize(
    ("path", "check", "error"),
    [
        ("/healthy", BodyCheck(expect_key="data"), None),
        ("/healthy", BodyCheck(expect_non_empty=True), None),
        ("/healthy", BodyCheck(), None),
        ("/binance", BodyCheck(expect_non_empty=True), None),
        ("/healthy", BodyCheck(expect_key="prices"), "body is not a JSON object with key 'prices'"),
        ("/binance", BodyCheck(expect_key="data"), "body is not a JSON object with key 'data'"),
        ("/empty", BodyCheck(expect_non_empty=True), "body is not a non-empty JSON list or object"),
        ("/garbage", BodyCheck(), "body is not JSON: JSON is malformed: invalid character"),
    ],
)
async def test_body_check(
    session: aiohttp.ClientSession,
    standin: StandIn,
    path: str,
    check: BodyCheck,
    error: str | None,
) -> None:
    event = (await run(session, standin.url(path), check=check)).event
    if error is None:
        assert (event.outcome, event.error_kind) == ("success", None)
    else:
        assert (event.outcome, event.error_kind, event.http_status) == (
            "failed",
            "invalid_body",
            200,
        )
        assert event.error_message is not None
        assert event.error_message.startswith(error)


@pytest.mark.parametrize(
    ("body", "check", "passes"),
    [
        (b"{}", BodyCheck(expect_non_empty=True), False),
        (b'{"a": null}', BodyCheck(expect_non_empty=True), True),
        (b"[0]", BodyCheck(expect_non_empty=True), True),
        (b'"text"', BodyCheck(expect_non_empty=True), False),
        (b"7", BodyCheck(), True),
        (b'[{"data": 1}]', BodyCheck(expect_key="data"), False),
        (b'{"data": []}', BodyCheck(expect_key="data", expect_non_empty=True), True),
    ],
)
def test_body_check_shapes(body: bytes, check: BodyCheck, passes: bool) -> None:
    assert (check.failure(body) is None) is passes


async def test_body_over_the_cap_is_cut_off(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    event = (await run(session, standin.url("/huge"))).event
    assert (event.outcome, event.error_kind, event.http_status) == ("failed", "body_too_large", 200)
    # Reading stopped one byte past the cap, not at the end of the 5 MB.
    assert event.response_bytes == 1_048_576 + 1


async def test_small_cap_applies_to_small_bodies(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    event = (await run(session, standin.url("/healthy"), max_body_bytes=10)).event
    assert (event.error_kind, event.response_bytes) == ("body_too_large", 11)
    exact = await run(session, standin.url("/garbage"), max_body_bytes=len(b"not json{"))
    assert exact.event.outcome == "success"


@pytest.mark.parametrize("path", ["/hang", "/trickle", "/endless"])
async def test_timeout_bounds_the_whole_probe(
    session: aiohttp.ClientSession, standin: StandIn, path: str
) -> None:
    timeout = 0.6
    deadline = time.monotonic() + timeout + MARGIN
    event = (await run(session, standin.url(path), timeout=timeout)).event
    assert time.monotonic() < deadline
    assert (event.outcome, event.error_kind) == ("timeout", "timeout")
    assert event.latency_ms is not None
    assert timeout * 1000 <= event.latency_ms < (timeout + MARGIN) * 1000
    if path == "/hang":
        assert event.http_status is None
        assert event.response_bytes == 0
    else:
        # The headers came, then the body never finished.
        assert event.http_status == 200
        assert 0 < event.response_bytes < 1_048_576
        assert event.error_message is not None
        assert "no complete body" in event.error_message


async def test_unresolvable_host_is_a_dns_failure(session: aiohttp.ClientSession) -> None:
    event = (await run(session, "http://no-such-provider.invalid/ping")).event
    assert (event.outcome, event.error_kind) == ("failed", "dns")
    assert event.http_status is None
    assert event.error_message is not None
    assert event.error_message.startswith("cannot resolve no-such-provider.invalid")


async def test_closed_port_is_connection_refused(session: aiohttp.ClientSession) -> None:
    port = closed_port()
    event = (await run(session, f"http://127.0.0.1:{port}/ping")).event
    assert (event.outcome, event.error_kind) == ("failed", "connection_refused")
    assert event.error_message == f"127.0.0.1:{port} refused the connection"
    assert event.latency_ms is not None


async def test_server_hanging_up_is_a_connection_error(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    event = (await run(session, standin.url("/disconnect"))).event
    assert (event.outcome, event.error_kind) == ("failed", "connection_error")
    assert event.error_message == f"ServerDisconnectedError talking to 127.0.0.1:{standin.port}"


async def test_tls_to_a_plain_http_server_is_a_tls_failure(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    url = standin.url("/healthy").replace("http://", "https://")
    event = (await run(session, url)).event
    assert (event.outcome, event.error_kind) == ("failed", "tls")
    assert event.error_message is not None
    assert event.error_message.startswith(f"TLS with 127.0.0.1:{standin.port} failed: ")


@pytest.mark.parametrize(
    "target",
    [
        "/healthy",
        "/error500",
        "/ratelimited",
        "/hang",
        "/huge",
        "/disconnect",
        "https",
        "refused",
        "dns",
    ],
)
async def test_secret_query_params_never_reach_the_result(
    session: aiohttp.ClientSession, standin: StandIn, target: str
) -> None:
    if target == "https":
        base = standin.url("/healthy").replace("http://", "https://")
    elif target == "refused":
        base = f"http://127.0.0.1:{closed_port()}/ping"
    elif target == "dns":
        base = "http://no-such-provider.invalid/ping"
    else:
        base = standin.url(target)
    result = await run(
        session,
        f"{base}?apikey=SECRETVALUE",
        timeout=0.3,
        params={"token": "SECRETPARAM"},
        check=BodyCheck(expect_key="nope"),
    )
    encoded = msgspec.json.encode(result)
    assert b"SECRETVALUE" not in encoded
    assert b"SECRETPARAM" not in encoded
    assert b"apikey" not in encoded


async def test_a_hanging_probe_does_not_delay_a_healthy_one(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    hung, healthy = await asyncio.gather(
        run(session, standin.url("/hang"), timeout=1.0), run(session, standin.url("/healthy"))
    )
    assert hung.event.outcome == "timeout"
    assert healthy.event.outcome == "success"
    assert healthy.event.latency_ms is not None
    assert healthy.event.latency_ms < 200


async def test_cancellation_propagates(session: aiohttp.ClientSession, standin: StandIn) -> None:
    task = asyncio.create_task(run(session, standin.url("/hang"), timeout=30.0))
    await standin.hanging.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- requests and checks ------------------------------------------------------


def spec(**keys: Any) -> ProbeSpec:
    maintenance = keys.pop("maintenance_when", ())
    return ProbeSpec(msgspec.convert(keys, ProbeRequest), maintenance)


async def test_a_post_sends_its_json_body_and_head_reads_no_body(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    posted = await run(session, standin.url("/echo"), spec=spec(body={"q": [1, 2]}))
    assert posted.event.outcome == "success"
    assert standin.last_headers["Content-Type"] == "application/json"
    head = await run(session, standin.url("/echo"), spec=spec(method="HEAD"))
    assert (head.event.outcome, head.event.http_status) == ("success", 200)
    assert standin.last_headers.get("Content-Length") in (None, "0")


async def test_a_status_condition_replaces_the_2xx_rule_but_not_rate_limiting(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    # A 503 whose body is checked: the condition decides.
    wanted = spec(conditions=["[STATUS] == 503", "[BODY].method == GET"])
    event = (await run(session, standin.url("/echo?status=503"), spec=wanted)).event
    assert (event.outcome, event.error_kind, event.http_status) == ("success", None, 503)
    # Without a [STATUS] condition a 503 fails as before, its body unread.
    event = (await run(session, standin.url("/echo?status=503"), spec=spec())).event
    assert (event.outcome, event.error_kind) == ("failed", "http_5xx")
    event = (await run(session, standin.url("/echo?status=200"), spec=wanted)).event
    assert (event.outcome, event.error_kind) == ("failed", "condition")
    assert event.condition is not None
    assert (event.condition.condition, event.condition.seen) == ("[STATUS] == 503", "200")
    # A 429 is rate_limited whatever the conditions say.
    limited = spec(conditions=["[STATUS] == 429"])
    event = (await run(session, standin.url("/ratelimited"), spec=limited)).event
    assert (event.outcome, event.error_kind) == ("rate_limited", "rate_limited")


async def test_a_provider_echoing_the_key_never_gets_it_recorded(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    key = "SECRET-KEY-0123456789abcdef"
    checks = spec(conditions=["[BODY].key == something else"], observe={"key": "[BODY].key"})
    result = await run(
        session, standin.url("/echo"), spec=checks, headers={"X-Api-Key": key}, secrets=[key]
    )
    event = result.event
    assert standin.last_headers["X-Api-Key"] == key
    assert event.condition is not None and event.condition.seen == "***"
    assert event.observations == {"key": "***"}
    assert key not in msgspec.json.encode(event).decode()
    # The same for a JSON-RPC error message that quotes it.
    rpc = spec(rpc={"method": "eth_chainId"})
    result = await run(
        session, standin.url("/echo"), spec=rpc, headers={"X-Api-Key": key}, secrets=[key]
    )
    assert (result.event.error_kind, result.event.rpc_error_code) == ("rpc_error", -32001)
    assert result.event.error_message == "JSON-RPC error -32001: bad key ***"


async def test_explain_judges_every_condition_for_a_person(
    session: aiohttp.ClientSession, standin: StandIn
) -> None:
    checks = spec(
        conditions=["[STATUS] == 200", "[BODY].method == POST", "[BODY].method == GET"],
        maintenance_when=["[BODY].method == PUT"],
    )
    result = await run(session, standin.url("/echo"), spec=checks, explain=True)
    assert [(c.condition, c.held, c.seen, c.maintenance) for c in result.checks] == [
        ("[BODY].method == PUT", False, "GET", True),
        ("[STATUS] == 200", True, "200", False),
        ("[BODY].method == POST", False, "GET", False),
        ("[BODY].method == GET", True, "GET", False),
    ]
    assert result.event.condition is not None
    assert result.event.condition.condition == "[BODY].method == POST"  # the first failing
    plain = await run(session, standin.url("/echo"), spec=checks)
    assert plain.checks == []
