"""Bad input of every kind: the config and event decoders under Hypothesis, the live feed
under abuse, and every HTTP route under path traversal, header injection and oversized
headers.

Decoders must fail with their own error (`ConfigError` naming the file, `EventDecodeError`
naming the position), never another exception. The live feed answers bad messages with an
`error` or closes with the right code, and keeps serving everyone else. No route answers a
5xx or anything from outside the package; bad requests get a 4xx or a closed connection.
Everything runs against the real app on 127.0.0.1, with raw sockets where aiohttp's client
would refuse to send what we want to send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from standins import StandIn

from cryptomon.config import (
    CATEGORIES,
    Config,
    ConfigError,
    load_config,
    parse_duration,
)
from cryptomon.events.types import (
    EVENT_TYPES,
    SCHEMA_VERSIONS,
    AlertAcknowledged,
    Event,
    EventDecodeError,
    JobTriggered,
    ProbeRecorded,
    ProviderRegistered,
    ProviderRemoved,
    RateLimitChanged,
    RateLimitSpec,
    decode_event,
    encode_event,
)
from cryptomon.http.keys import HUB
from cryptomon.http.routes import Endpoint
from cryptomon.http.settings import Settings
from cryptomon.service.app import ENDPOINTS, create_app
from cryptomon.ws.handler import INBOUND_BURST, MAX_MESSAGE_BYTES

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

FAST = settings(deadline=None, max_examples=100)
TOKEN = "bad-input-token-3b9e"

# ---- the config decoder -----------------------------------------------------------------


class RawToml(str):
    """TOML text written as is (a date or time), not quoted as a string."""


TomlValue = Any


def toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def toml_value(value: TomlValue) -> str:
    if isinstance(value, RawToml):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    pairs = (f"{toml_string(key)} = {toml_value(item)}" for key, item in value.items())
    return "{ " + ", ".join(pairs) + " }"


def toml_table(header: str, table: dict[str, TomlValue]) -> str:
    lines = [header]
    lines += (f"{toml_string(key)} = {toml_value(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


UNITS = ("ms", "s", "m", "h", "d")


def mostly(
    good: st.SearchStrategy[TomlValue], bad: st.SearchStrategy[TomlValue]
) -> st.SearchStrategy[TomlValue]:
    """`good` five times in six, so that many documents pass and reach the later checks."""
    return st.integers(0, 5).flatmap(lambda n: bad if n == 3 else good)


def sometimes(draw: st.DrawFn, one_in: int = 8) -> bool:
    # Not the bounds: Hypothesis draws those far more often than the others.
    return draw(st.integers(0, one_in - 1)) == one_in // 2


key_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)

valid_durations = st.builds(
    lambda number, unit: f"{number}{unit}",
    st.one_of(
        st.integers(0, 10**6),
        st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:.3f}"),
    ),
    st.sampled_from(UNITS),
)
durations = mostly(
    valid_durations,
    st.one_of(
        st.from_regex(r"-?[0-9.]{0,8}(ms|s|m|h|d|us|y|S| s)?", fullmatch=True),
        st.sampled_from(["9" * 400 + "d", "0s", "0.0ms", "1e3s", "1 s", "5M"]),
        st.text(max_size=10),
    ),
)

cron_numbers = st.one_of(st.integers(-5, 100), st.just(10**30))
cron_fields = st.one_of(
    st.just("*"),
    st.sampled_from(["?", "L", "W", "#", "/", "-", ",", "MON", "jan", "H", "", "**", "5L"]),
    cron_numbers.map(str),
    cron_numbers.map(lambda n: f"*/{n}"),
    st.tuples(cron_numbers, cron_numbers).map(lambda p: f"{p[0]}-{p[1]}"),
    st.tuples(cron_numbers, cron_numbers).map(lambda p: f"{p[0]},{p[1]}"),
    st.tuples(cron_numbers, cron_numbers, cron_numbers).map(lambda p: f"{p[0]}-{p[1]}/{p[2]}"),
    st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=4),
)
crons = st.lists(cron_fields, min_size=5, max_size=5).map(" ".join)

scalars: st.SearchStrategy[TomlValue] = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: RawToml(d.isoformat())),
    st.dates().map(lambda d: RawToml(date.isoformat(d))),
    st.times().map(lambda t: RawToml(clock_time.isoformat(t))),
)
anything: st.SearchStrategy[TomlValue] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(key_names, inner, max_size=3)
    ),
    max_leaves=6,
)
urls = mostly(
    st.sampled_from(["https://api.example.com", "http://127.0.0.1:9", "https://a.example/v1/"]),
    st.one_of(st.sampled_from(["ftp://a", "https://a?x=1", "http://", "//a"]), st.text()),
)
env_names = mostly(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True), st.text(max_size=8))

Fields = st.SearchStrategy[dict[str, TomlValue]]


def fields(**strategies: st.SearchStrategy[TomlValue]) -> Fields:
    return st.fixed_dictionaries(strategies)


def one_key(values: dict[str, st.SearchStrategy[TomlValue]]) -> Fields:
    """One of the keys alone, which may break a rule that spans keys."""
    return st.sampled_from(sorted(values)).flatmap(lambda key: fields(**{key: values[key]}))


KEY_PLACES = {
    "api_key_env": env_names,
    "api_key_header": mostly(st.sampled_from(["X-Api-Key", "authorization"]), st.text()),
    "api_key_query": st.text(max_size=8),
    "api_key_prefix": st.text(max_size=8),
}
# Each group sets keys that go together, mostly in a way that passes the rules across them.
PROVIDER_GROUPS: dict[str, Fields] = {
    "name": fields(name=mostly(st.text(min_size=1, max_size=10), st.sampled_from(["x/y", " "]))),
    "category": fields(category=mostly(st.sampled_from(CATEGORIES), st.text(max_size=10))),
    "base_url": fields(base_url=urls),
    "health_path": fields(health_path=st.text(max_size=12)),
    "schedule": mostly(
        st.one_of(fields(interval=durations), fields(cron=crons)),
        fields(interval=durations, cron=crons),
    ),
    "timing": st.one_of(
        fields(timeout=durations),
        fields(degraded_latency=durations),
        fields(timeout=st.just("1h"), degraded_latency=durations),
    ),
    "rate_limit": fields(
        rate_limit=mostly(
            fields(requests=st.integers(1, 10**6), per=durations),
            st.one_of(
                fields(requests=st.integers(-3, 0), per=durations),
                st.dictionaries(st.sampled_from(["requests", "per", "burst"]), anything),
            ),
        )
    ),
    "key": st.one_of(
        fields(api_key_env=env_names, api_key_header=KEY_PLACES["api_key_header"]),
        fields(
            api_key_env=env_names,
            api_key_header=KEY_PLACES["api_key_header"],
            api_key_prefix=KEY_PLACES["api_key_prefix"],
        ),
        fields(api_key_env=env_names, api_key_query=KEY_PLACES["api_key_query"]),
        one_key(KEY_PLACES),
    ),
    "enabled": fields(enabled=mostly(st.booleans(), anything)),
    "collections": fields(
        collections=st.lists(
            mostly(
                st.fixed_dictionaries(
                    {"path": st.text(max_size=10)},
                    optional={"expect_key": st.text(max_size=5), "expect_non_empty": st.booleans()},
                ),
                anything,
            ),
            max_size=2,
        )
    ),
}
CHANNEL_GROUPS: dict[str, Fields] = {
    "name": fields(name=mostly(st.from_regex(r"[a-z][a-z0-9_.-]{0,8}", fullmatch=True), st.text())),
    "target": st.one_of(
        fields(kind=st.just("webhook"), url=urls, hmac_secret_env=env_names),
        fields(kind=st.sampled_from(["slack", "discord"]), url_env=env_names),
        fields(kind=st.just("telegram"), url_env=env_names, chat_id=st.integers() | st.text()),
        one_key(
            {
                "kind": st.text(max_size=8),
                "url": urls,
                "url_env": env_names,
                "chat_id": st.integers(),
                "hmac_secret_env": env_names,
            }
        ),
    ),
    "headers": fields(
        headers=st.dictionaries(
            mostly(st.from_regex(r"X-[A-Za-z-]{1,8}", fullmatch=True), key_names),
            mostly(
                st.one_of(st.text(max_size=10), env_names.map("env:{}".format)),
                st.one_of(anything, st.just("a\r\nSet-Cookie: x")),
            ),
            max_size=2,
        )
    ),
    "severities": fields(
        severities=st.lists(mostly(st.sampled_from(["warning", "critical"]), st.text()))
    ),
    "providers": fields(providers=st.lists(st.sampled_from(["P0", "p0", "P1"]), max_size=2)),
    "categories": fields(
        categories=st.lists(mostly(st.sampled_from(CATEGORIES), st.text(max_size=4)))
    ),
    "events": fields(
        events=st.lists(
            st.sampled_from(["raised", "acknowledged", "resolved", "rate_limit", "x"]), max_size=4
        )
    ),
    "renotify_interval": fields(renotify_interval=durations),
    "timeout": fields(timeout=durations),
}
SECTION_VALUES: dict[str, dict[str, st.SearchStrategy[TomlValue]]] = {
    "server": {
        "host": st.text(max_size=10),
        "port": mostly(st.integers(1, 65535), st.integers(-1, 70000)),
        "api_token_env": env_names,
        "cors_origins": st.lists(
            mostly(st.sampled_from(["https://a.example", "http://b:8"]), st.text()), max_size=2
        ),
    },
    "storage": {
        "database": st.text(max_size=10),
        "archive_after": durations,
        "snapshot_interval": durations,
    },
    "websocket": {"status_interval": durations, "heartbeat_interval": durations},
    "monitoring": {
        "offline_after_failures": mostly(st.integers(1, 5), st.integers(-2, 0)),
        "online_after_successes": mostly(st.integers(1, 5), anything),
    },
}


def mutated(
    draw: st.DrawFn, base: dict[str, TomlValue], groups: dict[str, Fields]
) -> dict[str, TomlValue]:
    """`base` with some groups of keys drawn anew and, now and then, a key dropped, a
    known key given a value of any type, or an unknown key."""
    table = {key: value for key, value in base.items() if not sometimes(draw, 30)}
    for group in draw(st.lists(st.sampled_from(sorted(groups)), max_size=4, unique=True)):
        drawn = draw(groups[group])
        if group == "schedule":
            table.pop("interval", None)
        table.update(drawn)
    if sometimes(draw):
        known = draw(st.sampled_from(sorted(draw(groups[draw(st.sampled_from(sorted(groups)))]))))
        table[known] = draw(anything)
    if sometimes(draw):
        table[draw(key_names)] = draw(anything)
    return table


@st.composite
def config_documents(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for section, values in SECTION_VALUES.items():
        if draw(st.booleans()):
            groups = {key: fields(**{key: value}) for key, value in values.items()}
            parts.append(toml_table(f"[{section}]", mutated(draw, {}, groups)))
    for index in range(draw(st.integers(1, 3))):
        base = {
            "name": f"P{index}",
            "category": "news",
            "base_url": "https://api.example.com",
            "interval": "30s",
        }
        parts.append(toml_table("[[providers]]", mutated(draw, base, PROVIDER_GROUPS)))
    for index in range(draw(st.integers(0, 2))):
        base = {"name": f"ch{index}", "kind": "webhook", "url": "https://hooks.example.com/x"}
        parts.append(toml_table("[[notifications]]", mutated(draw, base, CHANNEL_GROUPS)))
    if sometimes(draw, 20):
        parts.append(f"{toml_string(draw(key_names))} = {toml_value(draw(anything))}\n")
    if sometimes(draw, 20):  # a stray line, most often not TOML at all
        parts.insert(draw(st.integers(0, len(parts))), draw(st.text(max_size=30)) + "\n")
    order = draw(st.permutations(range(len(parts))))
    return "".join(parts[i] for i in order)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("configs") / "fuzzed.toml"


def assert_names_the_file(error: ConfigError, path: Path) -> None:
    assert error.errors, "a ConfigError with no message"
    for message in error.errors:
        assert message.startswith(f"{path}: "), message
    for line in str(error).splitlines():
        assert str(path) in line, line


def load_or_explain(path: Path) -> Config | ConfigError:
    """`load_config(path)`, or the ConfigError it raised; any other exception propagates."""
    try:
        return load_config(path)
    except ConfigError as error:
        assert_names_the_file(error, path)
        return error


@FAST
@given(document=config_documents())
@example(document='[[providers]]\nname = "A"\ncategory = "news"\nbase_url = "https://a"\n')
@example(document='[server]\nport = 0\n[websocket]\nstatus_interval = "0s"\n')
@example(document="providers = 3\nnotifications = [1, 2]\n")
def test_any_config_document_loads_or_fails_naming_the_file(
    config_file: Path, document: str
) -> None:
    config_file.write_text(document, encoding="utf-8")
    outcome = load_or_explain(config_file)
    event(f"{type(outcome).__name__} with {document.count('[[providers]]')} provider tables")
    if isinstance(outcome, Config):  # what was accepted is usable
        assert outcome.source == str(config_file)
        assert outcome.storage.snapshot_interval_seconds > 0
        assert outcome.websocket.heartbeat_interval_seconds > 0
        for provider in outcome.providers:
            assert (provider.interval_seconds is None) != (provider.cron is None)
            assert provider.degraded_latency_seconds < provider.timeout_seconds
            assert provider.rate_limit is None or provider.rate_limit.per_seconds > 0
        for channel in outcome.notifications:
            assert channel.timeout_seconds > 0
            assert (channel.url is None) != (channel.url_env is None)


@FAST
@given(raw=st.binary(max_size=200))
@example(raw=b"\xff\xfe[server]")
@example(raw=b'[server]\nhost = "\xc3"')
def test_any_bytes_as_a_config_file_load_or_fail_naming_the_file(
    config_file: Path, raw: bytes
) -> None:
    config_file.write_bytes(raw)
    outcome = load_or_explain(config_file)
    assert isinstance(outcome, Config | ConfigError)


def test_a_missing_or_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.toml", tmp_path):
        with pytest.raises(ConfigError) as raised:
            load_config(path)
        assert_names_the_file(raised.value, path)


@FAST
@given(
    text=st.one_of(
        st.text(),
        durations,
        st.builds(
            lambda whole, fraction, unit: f"{whole}.{fraction}{unit}",
            st.integers(10**300, 10**310),
            st.integers(0, 10**300),
            st.sampled_from(UNITS),
        ),
    )
)
@example(text="1e9s")
@example(text="nan" + "s")
@example(text="0.0000000000ms")
@example(text="1" * 400 + "d")
@example(text="٣s")  # a digit, but not an ASCII one
def test_parse_duration_returns_a_positive_length_or_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        assert repr(text) in str(error)
    else:
        assert math.isfinite(seconds) and seconds > 0
        assert re.fullmatch(r"[0-9]+(\.[0-9]+)?(ms|s|m|h|d)", text)


def cron_document(expression: str) -> str:
    return (
        '[[providers]]\nname = "Timed"\ncategory = "news"\nbase_url = "https://a.example"\n'
        f"cron = {toml_string(expression)}\n"
    )


@FAST
@given(expression=crons)
@example(expression="*/5 * * * *")
@example(expression="*/0 * * * *")
@example(expression="61 * * * *")
@example(expression="0 0 * * 5#9")
@example(expression=f"{10**30} * * * *")
def test_a_five_field_cron_is_accepted_or_refused_naming_cron(
    config_file: Path, expression: str
) -> None:
    config_file.write_text(cron_document(expression), encoding="utf-8")
    outcome = load_or_explain(config_file)
    event("refused" if isinstance(outcome, ConfigError) else "accepted")
    if isinstance(outcome, ConfigError):
        assert all(".cron (provider 'Timed')" in message for message in outcome.errors), outcome
    else:
        assert outcome.providers[0].cron == expression


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *"])
def test_a_cron_that_never_fires_is_refused(tmp_path: Path, expression: str) -> None:
    path = tmp_path / "never.toml"
    path.write_text(cron_document(expression), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert_names_the_file(raised.value, path)
    assert "providers[0].cron" in str(raised.value)


def test_a_key_with_a_line_break_still_gives_lines_that_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[server]\n"port\\nfake.toml: all good" = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert_names_the_file(raised.value, path)


# ---- the event decoder ------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
short = st.text(max_size=12)
optional_float = st.none() | finite
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        ProviderRegistered,
        provider=short,
        category=st.sampled_from(CATEGORIES),
        base_url=short,
        health_path=short,
        schedule=short,
        timeout_ms=st.integers(0, 10**6),
        degraded_latency_ms=st.integers(0, 10**6),
        rate_limit=st.none() | st.builds(RateLimitSpec, st.integers(1, 1000), finite),
        api_key_env=st.none() | short,
        key_configured=st.booleans(),
        collections=st.lists(short, max_size=2).map(tuple),
    ),
    st.builds(ProviderRemoved, provider=short),
    st.builds(
        ProbeRecorded,
        provider=short,
        kind=st.sampled_from(["health", "collection"]),
        endpoint=short,
        outcome=st.sampled_from(["success", "failed", "timeout", "rate_limited"]),
        started_at=finite,
        latency_ms=optional_float,
        http_status=st.none() | st.integers(100, 599),
        response_bytes=st.integers(0, 2**40),
        error_kind=st.none() | st.sampled_from(["timeout", "dns", "tls", "http_5xx"]),
        error_message=st.none() | short,
        scheduled_at=optional_float,
    ),
    st.builds(
        RateLimitChanged,
        provider=short,
        used=st.integers(0, 10**6),
        limit=st.integers(0, 10**6),
        window_seconds=finite,
        percentage=finite,
        observed_at=finite,
        reset_at=optional_float,
        reason=short,
        blocked_until=optional_float,
    ),
    st.builds(
        AlertAcknowledged,
        alert_id=st.none() | st.integers(0, 2**62),
        actor=short,
        acknowledged_at=finite,
        note=st.none() | short,
        raised_position=st.none() | st.integers(1, 2**62),
        provider=st.none() | short,
        kind=st.none() | short,
        legacy_alert_id=st.none() | st.integers(0, 2**62),
    ),
    st.builds(JobTriggered, job_id=short, actor=short, triggered_at=finite),
)
type_names = st.one_of(st.sampled_from(sorted(EVENT_TYPES)), st.text(max_size=20))
positions = st.integers(1, 2**62)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short, inner, max_size=4),
    max_leaves=12,
)


def assert_decodes_or_explains(
    position: int, event_type: str, version: int, payload: bytes
) -> Event | None:
    """`decode_event`'s answer, or None after checking its EventDecodeError."""
    try:
        event = decode_event(position, event_type, version, payload)
    except EventDecodeError as error:
        assert error.position == position
        assert f"event at position {position} " in str(error)
        assert error.event_type == event_type
        return None
    assert type(event).__name__ == event_type
    return event


def known_versions(event_type: str) -> st.SearchStrategy[int]:
    """Versions this cryptomon knows, one from its future, or none that can exist."""
    return st.integers(-2, SCHEMA_VERSIONS.get(event_type, 1) + 5)


@FAST
@given(data=st.data(), position=positions, event_type=type_names, payload=st.binary())
def test_random_bytes_never_decode_as_an_event(
    data: st.DataObject, position: int, event_type: str, payload: bytes
) -> None:
    version = data.draw(known_versions(event_type))
    assert assert_decodes_or_explains(position, event_type, version, payload) is None


@FAST
@given(event=events, position=positions)
def test_every_truncation_of_a_real_event_is_a_decode_error(event: Event, position: int) -> None:
    event_type = type(event).__name__
    version = SCHEMA_VERSIONS[event_type]
    payload = encode_event(event)
    assert decode_event(position, event_type, version, payload) == event
    for cut in range(len(payload)):
        assert assert_decodes_or_explains(position, event_type, version, payload[:cut]) is None
        if event_type in ("ProbeRecorded", "AlertAcknowledged"):  # read as v1, upcast
            assert assert_decodes_or_explains(position, event_type, 1, payload[:cut]) is None


@FAST
@given(event=events, position=positions, other=st.sampled_from(sorted(EVENT_TYPES)))
def test_a_real_event_under_another_type_name_is_a_decode_error(
    event: Event, position: int, other: str
) -> None:
    if other == type(event).__name__:
        return
    payload = encode_event(event)
    for version in range(1, SCHEMA_VERSIONS[other] + 1):
        assert assert_decodes_or_explains(position, other, version, payload) is None


@FAST
@given(
    data=st.data(),
    position=positions,
    event_type=st.sampled_from(sorted(EVENT_TYPES)),
    value=json_values,
)
def test_json_of_any_shape_decodes_as_its_type_or_is_a_decode_error(
    data: st.DataObject, position: int, event_type: str, value: Any
) -> None:
    version = data.draw(known_versions(event_type))
    tagged = {"type": event_type, **value} if isinstance(value, dict) else value
    for shape in (value, tagged, [tagged], {"type": event_type, "provider": value}):
        payload = json.dumps(shape).encode()
        assert_decodes_or_explains(position, event_type, version, payload)


@FAST
@given(event=events, position=positions, ahead=st.integers(1, 2**40))
def test_unknown_types_and_future_versions_are_decode_errors(
    event: Event, position: int, ahead: int
) -> None:
    event_type = type(event).__name__
    payload = encode_event(event)
    for unknown in ("", event_type.lower(), event_type + "V2", "ProviderStatusChanged"):
        with pytest.raises(EventDecodeError, match=f"position {position} .*unknown event type"):
            decode_event(position, unknown, 1, payload)
    future = SCHEMA_VERSIONS[event_type] + ahead
    with pytest.raises(EventDecodeError, match=f"position {position} .*schema version {future}"):
        decode_event(position, event_type, future, payload)


@pytest.mark.parametrize("event_type", ["ProbeRecorded", "ProviderRemoved"])
@pytest.mark.parametrize("version", [0, -1])
def test_a_schema_version_below_one_is_a_decode_error(event_type: str, version: int) -> None:
    payload = encode_event(ProviderRemoved(provider="A"))
    assert assert_decodes_or_explains(7, event_type, version, payload) is None


@pytest.mark.parametrize(
    ("event_type", "version"), [("ProbeRecorded", 1), ("ProbeRecorded", 2), ("JobTriggered", 1)]
)
def test_a_deeply_nested_payload_is_a_decode_error(event_type: str, version: int) -> None:
    payload = b'{"type":"JobTriggered","a":' * 100_000
    assert assert_decodes_or_explains(9, event_type, version, payload) is None


# ---- the app under attack -----------------------------------------------------------------


@pytest.fixture
def make_app(tmp_path: Path, standin: StandIn) -> Callable[[], web.Application]:
    def make() -> web.Application:
        path = tmp_path / "bad.toml"
        # The attacks below come from one client, more than the default burst of requests.
        path.write_text(
            f"""
[server]
request_burst = 100000

[[providers]]
name = "Up"
category = "market_data"
base_url = "{standin.url("")}"
health_path = "/healthy"
interval = "1h"
"""
        )
        settings = Settings.from_config(
            load_config(path),
            database=tmp_path / "bad.db",
            environ={"CRYPTOMON_API_TOKEN": TOKEN},
            probing=False,
        )
        return create_app(settings)

    return make


@pytest.fixture
async def client(
    aiohttp_client: MakeClient, make_app: Callable[[], web.Application]
) -> AsyncIterator[Client]:
    made = await aiohttp_client(make_app())
    yield made


def port_of(client: Client) -> int:
    port = client.server.port
    assert port is not None
    return port


# ---- raw WebSocket ------------------------------------------------------------------------


class RawSocket:
    """A WebSocket client written by hand, so it can send what aiohttp's would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, target: str = f"/ws/live?token={TOKEN}") -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    @staticmethod
    def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
        first = (0x80 if fin else 0) | opcode
        mask_bit = 0x80 if masked else 0
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, mask_bit | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, length)
        if not masked:
            return header + payload
        mask = os.urandom(4)
        body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        return header + mask + body

    async def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def messages_until_close(self, within: float = 5.0) -> tuple[list[Any], int | None]:
        """The JSON messages received, and the close code (None: closed without a frame)."""
        received: list[Any] = []
        try:
            async with asyncio.timeout(within):
                while True:
                    opcode, payload = await self.read_frame()
                    if opcode == 0x8:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                        return received, code
                    if opcode == 0x1:
                        received.append(json.loads(payload))
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            return received, None

    async def next_message(self, within: float = 5.0) -> Any:
        async with asyncio.timeout(within):
            while True:
                opcode, payload = await self.read_frame()
                assert opcode != 0x8, f"closed: {payload!r}"
                if opcode == 0x1:
                    return json.loads(payload)

    def close(self) -> None:
        self.writer.close()


async def ws_json(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> Any:
    message = await asyncio.wait_for(ws.receive(), within)
    assert message.type == WSMsgType.TEXT, message
    return json.loads(message.data)


async def close_code_of(ws: aiohttp.ClientWebSocketResponse, within: float = 10.0) -> int | None:
    """Read (and drop) messages until the server closes; its close code."""
    async with asyncio.timeout(within):
        while True:
            message = await ws.receive()
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return ws.close_code


async def still_serving(client: Client) -> None:
    """Another client gets its greeting and REST still answers."""
    async with client.ws_connect(f"/ws/live?token={TOKEN}") as other:
        assert (await ws_json(other))["type"] == "connection_established"
        await other.send_json({"type": "subscribe", "topics": ["alerts"]})
        assert (await ws_json(other))["type"] == "subscribed"
    response = await client.get("/api/status")
    assert response.status == 200, await response.text()


async def test_binary_frames_close_with_1003_and_others_are_unaffected(client: Client) -> None:
    for payload in (b"", b"\x00\x01", b'{"type": "subscribe", "topics": ["alerts"]}', b"x" * 5000):
        async with client.ws_connect(f"/ws/live?token={TOKEN}") as ws:
            assert (await ws_json(ws))["type"] == "connection_established"
            await ws.send_bytes(payload)
            assert await close_code_of(ws) == 1003
    raw = await RawSocket.open(port_of(client))
    try:
        assert (await raw.next_message())["type"] == "connection_established"
        # A binary message split over fragments is still binary.
        await raw.send(raw.frame(0x2, b"ab", fin=False), raw.frame(0x0, b"cd"))
        assert (await raw.messages_until_close())[1] == 1003
    finally:
        raw.close()
    await still_serving(client)
    stats = await (await client.get("/ws/stats")).json()
    assert stats["disconnect_reasons"]["binary_frame"] == 5


BAD_MESSAGES = (
    "",
    " ",
    "{",
    "}",
    "null",
    "[]",
    "42",
    '"subscribe"',
    "NaN",
    '{"type": null}',
    '{"type": 5}',
    '{"type": ""}',
    '{"type": "dance"}',
    '{"type": "' + "x" * 10_000 + '"}',
    '{"type": "SUBSCRIBE", "topics": ["alerts"]}',
    '{"type": "subscribe"}',
    '{"type": "subscribe", "topics": []}',
    '{"type": "subscribe", "topics": "alerts"}',
    '{"type": "subscribe", "topics": [1, 2]}',
    '{"type": "subscribe", "topics": ["../../etc/passwd"]}',
    '{"type": "subscribe", "topics": ["provider:"]}',
    '{"type": "subscribe", "topics": ["provider:../Up"]}',
    '{"type": "subscribe", "topics": ["alerts", "weather"]}',
    '{"type": "subscribe", "topics": ["alerts"], "extra": 1}',
    '{"type": "unsubscribe", "topics": [null]}',
    '{"type": "resume"}',
    '{"type": "resume", "since": -1}',
    '{"type": "resume", "since": "0"}',
    '{"type": "resume", "since": 1e400}',
    '{"type": "auth", "token": 5}',
    '{"type": "subscribe", "topics": ["alerts"]}garbage',
    '{"type": "subscribe", "topics": ["alerts"], "type": "dance"}',
    '{"type": "subscribe", "topics": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"type": "subscribe", "topics": [' + ",".join(['"x"'] * 5000) + "]}",
    "\u0000",
    "\ufeff{}",
    '{"type": "\ud7ff\ue000"}',
)
# Odd but well-formed: no reply, and the connection carries on.
QUIET_MESSAGES = (
    '{"type": "pong"}',
    '{"type": "ping"}',
    '{"type": "auth", "token": "not the token"}',
    '{"type": "resume", "since": 99999999999999999999999999}',
)


async def test_invalid_json_and_unknown_types_get_errors_and_the_connection_stays(
    client: Client,
) -> None:
    async with client.ws_connect(f"/ws/live?token={TOKEN}") as ws:
        assert (await ws_json(ws))["type"] == "connection_established"
        for bad in BAD_MESSAGES:
            await ws.send_str(bad)
            reply = await ws_json(ws)
            assert reply["type"] == "error", (bad[:80], reply)
            assert reply["message"] and len(reply["message"]) < 2 * MAX_MESSAGE_BYTES
            assert reply["timestamp"]
        for quiet in QUIET_MESSAGES:
            await ws.send_str(quiet)
        await ws.send_json({"type": "subscribe", "topics": ["alerts", "provider:Up"]})
        reply = await ws_json(ws)
        assert reply["type"] == "subscribed"
        assert {"alerts", "provider:Up"} <= set(reply["topics"])
        # A resume from the start replays the log (no error), and then the feed goes on.
        await ws.send_json({"type": "resume", "since": 0})
        await ws.send_json({"type": "unsubscribe", "topics": ["alerts"]})
        replies = [await ws_json(ws)]
        while replies[-1]["type"] != "subscribed":
            replies.append(await ws_json(ws))
        assert "error" not in [reply["type"] for reply in replies]
        assert "alerts" not in replies[-1]["topics"] and "provider:Up" in replies[-1]["topics"]
    await still_serving(client)
    assert (await (await client.get("/health")).json())["components"]["websocket"]["status"] == (
        "running"
    )


async def test_protocol_violations_close_the_socket_and_nothing_else(client: Client) -> None:
    port = port_of(client)
    cases = {
        "invalid UTF-8 in a text frame": [RawSocket.frame(0x1, b'{"type": "\xff\xfe"}')],
        "a control frame over 125 bytes": [RawSocket.frame(0x9, b"p" * 200)],
        "a fragmented control frame": [RawSocket.frame(0x9, b"p", fin=False)],
        "a continuation with nothing to continue": [RawSocket.frame(0x0, b"x")],
        "a reserved opcode": [RawSocket.frame(0x3, b"x")],
        "a text frame inside a fragmented message": [
            RawSocket.frame(0x1, b"{", fin=False),
            RawSocket.frame(0x1, b"}"),
        ],
    }
    for case, frames in cases.items():
        raw = await RawSocket.open(port)
        try:
            assert (await raw.next_message())["type"] == "connection_established"
            await raw.send(*frames)
            messages, code = await raw.messages_until_close()
            assert code in (1002, 1003, 1007, None), (case, code, messages)
        finally:
            raw.close()
    # RFC 6455 says a server must close on an unmasked client frame; aiohttp reads it as if
    # it were masked. Either is acceptable here: what matters is that nothing breaks.
    raw = await RawSocket.open(port)
    try:
        assert (await raw.next_message())["type"] == "connection_established"
        subscribe = b'{"type": "subscribe", "topics": ["alerts"]}'
        await raw.send(RawSocket.frame(0x1, subscribe, masked=False))
        messages, code = await raw.messages_until_close(within=1.0)
        assert code in (1002, None) or [m["type"] for m in messages] == ["subscribed"]
    finally:
        raw.close()
    await still_serving(client)


async def test_messages_over_64_kib_close_with_1009(client: Client) -> None:
    port = port_of(client)
    over = MAX_MESSAGE_BYTES + 1
    async with client.ws_connect(f"/ws/live?token={TOKEN}") as ws:
        assert (await ws_json(ws))["type"] == "connection_established"
        await ws.send_str(json.dumps({"type": "subscribe", "topics": ["x" * over]}))
        assert await close_code_of(ws) == 1009
    # Just under the limit is read (and refused for what it says, not for its size).
    async with client.ws_connect(f"/ws/live?token={TOKEN}") as ws:
        assert (await ws_json(ws))["type"] == "connection_established"
        await ws.send_str(" " * (MAX_MESSAGE_BYTES - 3) + "{}")
        assert (await ws_json(ws))["type"] == "error"
    raw = await RawSocket.open(port)
    try:
        assert (await raw.next_message())["type"] == "connection_established"
        # Fragments, each small, adding up to more than the limit.
        piece = b"x" * 16_384
        fragments = [raw.frame(0x1, b'"', fin=False)]
        fragments += [raw.frame(0x0, piece, fin=False) for _ in range(over // len(piece) + 1)]
        await raw.send(*fragments, raw.frame(0x0, b'"'))
        assert (await raw.messages_until_close())[1] == 1009
    finally:
        raw.close()
    raw = await RawSocket.open(port)
    try:
        assert (await raw.next_message())["type"] == "connection_established"
        # A header announcing 2**62 bytes: the server must not wait for (or allocate) them.
        await raw.send(struct.pack("!BBQ", 0x81, 0x80 | 127, 2**62) + os.urandom(4) + b"{}")
        assert (await raw.messages_until_close())[1] in (1009, 1002)
    finally:
        raw.close()
    await still_serving(client)


async def test_an_oversized_message_is_counted_as_message_too_big(client: Client) -> None:
    async with client.ws_connect(f"/ws/live?token={TOKEN}") as ws:
        assert (await ws_json(ws))["type"] == "connection_established"
        await ws.send_str("x" * (MAX_MESSAGE_BYTES + 1))
        assert await close_code_of(ws) == 1009
    stats = await (await client.get("/ws/stats")).json()
    assert stats["disconnect_reasons"] == {"message_too_big": 1}


async def test_thousands_of_subscribes_a_second_close_with_1008_and_spare_the_others(
    client: Client,
) -> None:
    hub = client.app[HUB]
    subscribe = json.dumps({"type": "subscribe", "topics": ["alerts", "status"]})
    async with client.ws_connect(f"/ws/live?token={TOKEN}") as bystander:
        assert (await ws_json(bystander))["type"] == "connection_established"
        floods = []
        for _ in range(4):
            flooder = await client.ws_connect(f"/ws/live?token={TOKEN}")
            assert (await ws_json(flooder))["type"] == "connection_established"
            floods.append(flooder)
        started = time.monotonic()
        deepest = 0
        for _ in range(5):
            for flooder in floods:
                with contextlib.suppress(ConnectionError):
                    for _ in range(400):
                        await flooder.send_str(subscribe)
            stats = await (await client.get("/ws/stats")).json()
            deepest = max([deepest, *(c["queue_depth"] for c in stats["connections"])])
        codes = [await close_code_of(flooder) for flooder in floods]
        elapsed = time.monotonic() - started
        assert elapsed < INBOUND_BURST / 50, "the flood was too slow to be a flood"
        assert codes == [1008] * len(floods)
        assert deepest <= hub.max_queue
        # The bystander is still connected and answered.
        await bystander.send_json({"type": "subscribe", "topics": ["alerts"]})
        assert (await ws_json(bystander))["type"] == "subscribed"
    await still_serving(client)
    stats = await (await client.get("/ws/stats")).json()
    assert stats["disconnect_reasons"]["too_many_messages"] == len(floods)
    assert hub.running


async def test_a_flooder_that_never_reads_holds_a_bounded_queue(client: Client) -> None:
    """Each message (about 60 KB of unknown topics) asks for an error; the flooder never
    reads. The replies quote the request only briefly, so what waits for it stays small."""
    hub = client.app[HUB]
    hub.max_queue = 50  # what a client connecting from now on gets
    raw = await RawSocket.open(port_of(client))
    try:
        topics = json.dumps({"type": "subscribe", "topics": ["nope" * 10] * 1400})
        assert len(topics) < MAX_MESSAGE_BYTES
        frame = raw.frame(0x1, topics.encode())
        sent = INBOUND_BURST - 10
        await raw.send(*[frame] * sent)
        flooder = next(iter(hub.clients.values()))

        async def settled() -> None:
            # Every message answered (after the greeting), or the flooder dropped.
            while flooder.sent < sent + 1 and flooder.client_id in hub.clients:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        await asyncio.wait_for(settled(), 10)
        assert len(flooder.queue) <= 50
        queued = sum(len(frame.wire) for frame in flooder.queue)
        assert queued <= 50 * 2 * MAX_MESSAGE_BYTES
        # ~190 replies of well under 1 KiB each, not ~190 copies of 60 KB.
        assert flooder.transport.get_write_buffer_size() <= sent * 1024
        await still_serving(client)
    finally:
        raw.close()


# ---- HTTP: traversal, injection, oversized headers ----------------------------------------

PATH_VALUES = {
    "name": "Up",
    "log_type": "connection",
    "alert_id": "1",
    "incident_id": "1",
    "job_id": "health_checks",
    "chain": "ethereum",
    "pair": "BTC-USD",
    "window_id": "api:0",
    "window": "24h",
}
TRAVERSALS = (
    "..%2f..%2fetc%2fpasswd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fpyproject.toml",
    "..%5c..%5cpyproject.toml",
    "....%2f%2f....%2f%2fetc%2fpasswd",
    "%252e%252e%252fpyproject.toml",
    "..%c0%af..%c0%afetc%c0%afpasswd",
    "%00",
    "Up%00.json",
    "%00..%2f..%2fetc%2fpasswd",
    "%ff%fe",
    "%ed%a0%80",
    "%0d%0aSet-Cookie:%20pwned=1",
    "%0aX-Injected:%20yes",
    "x" * 5000,
)
SUFFIXES = (
    "/../../pyproject.toml",
    "/..%2f..%2fetc/passwd",
    "/%2e%2e/%2e%2e/pyproject.toml",
    "%00",
    "/%00",
    "%0d%0aX-Injected:%20yes",
    "//etc/passwd",
    "/.",
    "/..",
)
STATIC_TARGETS = (
    "/static/../../pyproject.toml",
    "/static/../../../../../../etc/passwd",
    "/static/..%2f..%2fpyproject.toml",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%5c..%5cpyproject.toml",
    "/static/dashboard.js%00.png",
    "/static/%00",
    "/static/index.html",
    "/static/../dashboard/index.html",
    "/static/..%2fconfig.py",
    "/static/..%2f__init__.py",
    "/static/..%2fcatalogue.toml",
    "/static/..%2f..%2f..%2fmigrations%2f0001_event_log.sql",
    "/static/" + "..%2f" * 40 + "etc%2fpasswd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/.",
    "/static/..",
    "/../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2fpyproject.toml",
    "..%2f..%2fetc/passwd",
    "/static/dashboard.css?../../pyproject.toml",
)
# What must never come back: files outside the dashboard, the package's own sources, the db.
FORBIDDEN = (
    b"root:x:0:0",
    b"root:*:0:0",
    b'requires = ["hatchling',
    b"[build-system]",
    b"CREATE TABLE",
    b"SQLite format 3",
    b"def parse_duration(",
    b"__version__ =",
    b'name = "CoinGecko"',
)


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: the server closed the connection without answering
    head: bytes
    body: bytes

    def header_names(self) -> list[bytes]:
        return [line.split(b":", 1)[0].strip().lower() for line in self.head.split(b"\r\n")[1:]]


async def raw_request(port: int, request: bytes, within: float = 10.0) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionError):
                writer.write(request)
                await writer.drain()
            try:
                data = await reader.read()
            except ConnectionError:
                data = b""  # reset after refusing what we were still sending
    finally:
        writer.close()
    if not data:
        return Answer(None, b"", b"")
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    assert match, data[:200]
    return Answer(int(match[1]), head, body)


def request_bytes(
    method: str, target: str, headers: dict[str, str] | None = None, extra: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if method == "POST":
        lines += [f"Authorization: Bearer {TOKEN}", "Content-Length: 0"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n" + extra + b"\r\n"


def filled(endpoint: Endpoint, **values: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], PATH_VALUES[m[1]]), endpoint.path)


def attacks_on(endpoint: Endpoint) -> Iterator[str]:
    base = filled(endpoint)
    for name in re.findall(r"\{(\w+)\}", endpoint.path):
        for value in TRAVERSALS:
            yield filled(endpoint, **{name: value})
    for suffix in SUFFIXES:
        yield base.rstrip("/") + suffix if base != "/" else suffix
    query_names = [p.name for p in endpoint.params if p.where == "query"] + ["file"]
    for name in query_names:
        for value in TRAVERSALS[:4] + TRAVERSALS[7:8] + TRAVERSALS[10:14]:
            yield f"{base}?{name}={value}"


def check_answer(endpoint: Endpoint | None, target: str, answer: Answer) -> None:
    where = f"{endpoint.method if endpoint else 'GET'} {target[:120]}"
    if answer.status is not None:
        allowed_5xx = endpoint is not None and answer.status == endpoint.unhealthy_status
        assert answer.status < 500 or allowed_5xx, (where, answer.status, answer.body[:300])
    for marker in FORBIDDEN:
        assert marker not in answer.body, (where, marker)
        assert marker.lower() not in answer.head.lower(), (where, marker)
    assert b"set-cookie" not in answer.header_names(), where
    assert b"x-injected" not in answer.header_names(), where
    assert b"pwned" not in answer.head, where


async def test_no_route_serves_files_outside_the_package_or_fails_on_traversal(
    client: Client,
) -> None:
    port = port_of(client)
    semaphore = asyncio.Semaphore(16)
    outcomes: list[tuple[str, int | None]] = []

    async def attack(endpoint: Endpoint | None, target: str) -> None:
        method = endpoint.method if endpoint is not None else "GET"
        async with semaphore:
            answer = await raw_request(port, request_bytes(method, target))
        check_answer(endpoint, target, answer)
        outcomes.append((target, answer.status))

    jobs = [attack(e, target) for e in ENDPOINTS for target in attacks_on(e)]
    jobs += [attack(None, target) for target in STATIC_TARGETS]
    await asyncio.gather(*jobs)
    assert len(outcomes) > 500
    static = {target: status for target, status in outcomes if target in STATIC_TARGETS}
    # The dashboard's own files, and nothing else, are served from /static/.
    served = [t for t, status in static.items() if status == 200]
    assert served == ["/static/dashboard.css?../../pyproject.toml"], static
    assert all(status in (400, 404) for t, status in static.items() if t not in served), static
    await still_serving(client)


async def test_header_injection_and_oversized_headers_get_a_4xx_or_a_close(
    client: Client,
) -> None:
    port = port_of(client)
    semaphore = asyncio.Semaphore(16)
    bad_headers = {
        "a bare CR in a value": b"X-Note: a\rSet-Cookie: pwned=1\r\n",
        "a bare LF in a value": b"X-Note: a\nSet-Cookie: pwned=1\r\n",
        "a bare LF in a token": b"Authorization: Bearer " + TOKEN.encode() + b"\nX-Injected: 1\r\n",
        "a NUL in a value": b"X-Note: a\x00b\r\n",
        "a NUL in a name": b"X-No\x00te: a\r\n",
        "a space before the colon": b"Host : evil.example\r\n",
        "obsolete line folding": b"X-Note: a\r\n Set-Cookie: pwned=1\r\n",
        "a 100 KB header": b"X-Big: " + b"a" * 100_000 + b"\r\n",
        "a 100 KB header name": b"X-" + b"n" * 100_000 + b": a\r\n",
        "1000 headers": b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(1000)),
        "a 100 KB cookie": b"Cookie: " + b"c=" + b"x" * 100_000 + b"\r\n",
        "a 100 KB authorization": b"Authorization: Bearer " + b"t" * 100_000 + b"\r\n",
        "a non-latin-1 value": "X-Note: \u2028\u0085é\r\n".encode(),
        "a bad Content-Length": b"Content-Length: -1\r\n",
        "two Content-Lengths": b"Content-Length: 0\r\nContent-Length: 5\r\n",
        "a bad Transfer-Encoding": b"Transfer-Encoding: chunked, identity\r\n",
    }
    results: list[tuple[str, str, int | None]] = []

    async def send(endpoint: Endpoint, case: str, header: bytes) -> None:
        target = filled(endpoint)
        async with semaphore:
            answer = await raw_request(port, request_bytes(endpoint.method, target, extra=header))
        check_answer(endpoint, f"{target} with {case}", answer)
        results.append((endpoint.path, case, answer.status))

    await asyncio.gather(
        *(send(e, case, header) for e in ENDPOINTS for case, header in bad_headers.items())
    )
    refused = {
        "a bare CR in a value",
        "a bare LF in a value",
        "a bare LF in a token",
        "a NUL in a value",
        "a NUL in a name",
        "a space before the colon",
        "a 100 KB header",
        "a 100 KB header name",
        "1000 headers",
        "a 100 KB cookie",
        "a 100 KB authorization",
        "a bad Content-Length",
        "two Content-Lengths",
    }
    for path, case, status in results:
        if case in refused:
            assert status in (400, 413, 431, None), (path, case, status)
    # The request-line itself: too long, or with control characters in it.
    for target in ("/api/providers?" + "x" * 100_000, "/api/providers/a\x00b", "/api/status\x7f"):
        answer = await raw_request(port, request_bytes("GET", target))
        assert answer.status in (400, 404, 413, 414, 431, None), (target[:40], answer.status)
    await still_serving(client)


async def test_crlf_in_a_reflected_value_never_becomes_a_header(client: Client) -> None:
    """aiohttp's client refuses CR and LF in header values; what the server echoes back
    (paths in problem bodies, a bad parameter's value) must stay in the body."""
    with pytest.raises(ValueError):
        await client.get("/health", headers={"X-Note": "a\r\nSet-Cookie: pwned=1"})
    for target in (
        "/api/providers/a%0d%0aSet-Cookie:%20pwned=1",
        "/api/logs/a%0d%0aX-Injected:%20yes",
        "/api/providers/Up/stats?hours=%0d%0aSet-Cookie:%20pwned=1",
        "/api/events?type=%0d%0aX-Injected:%20yes",
        "/ws/live?since=%0d%0aX-Injected:%20yes",
    ):
        answer = await raw_request(port_of(client), request_bytes("GET", target))
        assert answer.status in (400, 404), (target, answer.status)
        assert b"set-cookie" not in answer.header_names()
        assert b"x-injected" not in answer.header_names()
        assert answer.head.count(b"\r\n") == len(answer.header_names())
