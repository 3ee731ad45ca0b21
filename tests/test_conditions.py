"""The condition language: Gatus's cases, the providers' answers we watch, every parse
error with its position, and properties over arbitrary text and bodies."""

from __future__ import annotations

import pickle
import timeit
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from cryptomon.config import conditions
from cryptomon.config.conditions import (
    SEEN_LIMIT,
    Answer,
    ConditionError,
    Verdict,
    parse_condition,
    parse_observation,
)


def answer(
    body: bytes | str = b"",
    *,
    status: int | None = 200,
    ms: float = 0.0,
    headers: Any = None,
    cert: float | None = None,
    secrets: tuple[str, ...] = (),
) -> Answer:
    return Answer(
        status=status,
        response_time_ms=ms,
        headers=headers if headers is not None else {},
        body=body.encode() if isinstance(body, str) else body,
        certificate_expires_in_ms=cert,
        secrets=secrets,
    )


H = 3_600_000  # an hour in milliseconds
D = 24 * H

# --------------------------------------------------------------------------------------------
# Ported from Gatus: config/endpoint/condition_test.go, TestCondition_evaluate, as of
# v5.36.0-10-g08c46354 (commit 08c463542f56872a267e5b2e1e1cf421f0ea8a6a). Gatus checks a
# display string ("[STATUS] (500) == 200"); we check `held` and `seen`, what the placeholder
# side resolved to. Cases that read [IP], [CONNECTED], [DNS_RCODE], [DOMAIN_EXPIRATION] or
# [CONTEXT] are not ported (we have no such placeholders: see GATUS_ONLY below); cases our
# notation decides differently say so in a comment and are listed in GATUS_DEVIATIONS.
# (name, condition, answer, held, seen)

_HTML_JOHN = (
    '<!DOCTYPE html><html lang="en"><head><meta http-equiv="Content-Type" '
    'content="text/html; charset=UTF-8" /></head><body><div id="user">john.doe</div></body></html>'
)
_HTML_JANE = _HTML_JOHN.replace("john.doe", "jane.doe")
_ARTICLE = (
    '{\n  "article": {\n    "id": 123,\n    "title": "Hello, world!",\n    "author": "John Doe",'
    '\n    "tags": ["hello", "world"],\n    "content": "I really like Gatus!"\n  }\n}'
)

GATUS_EVALUATE: list[tuple[str, str, Answer, bool, str]] = [
    ("status", "[STATUS] == 200", answer(status=200), True, "200"),
    ("status-failure", "[STATUS] == 200", answer(status=500), False, "500"),
    ("status-using-less-than", "[STATUS] < 300", answer(status=201), True, "201"),
    ("status-using-less-than-failure", "[STATUS] < 300", answer(status=404), False, "404"),
    ("response-time-using-less-than", "[RESPONSE_TIME] < 500", answer(ms=50), True, "50"),
    (
        "response-time-using-less-than-with-duration",
        "[RESPONSE_TIME] < 1s",
        answer(ms=50),
        True,
        "50",
    ),
    # response-time-using-less-than-invalid ("< potato") is a ConditionError here: see ERRORS.
    ("response-time-using-greater-than", "[RESPONSE_TIME] > 500", answer(ms=750), True, "750"),
    (
        "response-time-using-greater-than-with-duration",
        "[RESPONSE_TIME] > 1s",
        answer(ms=2000),
        True,
        "2000",
    ),
    (
        "response-time-using-greater-than-or-equal-to-equal",
        "[RESPONSE_TIME] >= 500",
        answer(ms=500),
        True,
        "500",
    ),
    (
        "response-time-using-greater-than-or-equal-to-greater",
        "[RESPONSE_TIME] >= 500",
        answer(ms=499),
        False,
        "499",
    ),
    (
        "response-time-using-greater-than-or-equal-to-failure",
        "[RESPONSE_TIME] >= 500",
        answer(ms=499),
        False,
        "499",
    ),
    (
        "response-time-using-less-than-or-equal-to-equal",
        "[RESPONSE_TIME] <= 500",
        answer(ms=500),
        True,
        "500",
    ),
    (
        "response-time-using-less-than-or-equal-to-less",
        "[RESPONSE_TIME] <= 500",
        answer(ms=25),
        True,
        "25",
    ),
    (
        "response-time-using-less-than-or-equal-to-failure",
        "[RESPONSE_TIME] <= 500",
        answer(ms=750),
        False,
        "750",
    ),
    ("body", "[BODY] == test", answer("test"), True, "test"),
    ("body-resolved-on-success", "[BODY].status == UP", answer('{"status":"UP"}'), True, "UP"),
    ("body-numerical-equal", "[BODY] == 123", answer("123"), True, "123"),
    ("body-numerical-less-than", "[BODY] < 124", answer("123"), True, "123"),
    ("body-numerical-greater-than", "[BODY] > 122", answer("123"), True, "123"),
    ("body-numerical-greater-than-failure", "[BODY] > 123", answer("100"), False, "100"),
    ("body-jsonpath", "[BODY].status == UP", answer('{"status":"UP"}'), True, "UP"),
    (
        "body-jsonpath-complex",
        "[BODY].data.name == john",
        answer('{"data": {"id": 1, "name": "john"}}'),
        True,
        "john",
    ),
    (
        "body-jsonpath-complex-invalid",
        "[BODY].data.name == john",
        answer('{"data": {"id": 1}}'),
        False,
        "[BODY].data.name: missing",
    ),
    # body-jsonpath-complex-len-invalid compares len() with "john": a ConditionError here (see
    # ERRORS); its point, len() of a missing path fails, is this case:
    (
        "body-jsonpath-complex-len-invalid (as a number)",
        "len([BODY].data.name) == 4",
        answer('{"data": {"id": 1}}'),
        False,
        "len([BODY].data.name): missing",
    ),
    (
        "body-jsonpath-double-placeholder",
        "[BODY].user.firstName != [BODY].user.lastName",
        answer('{"user": {"firstName": "john", "lastName": "doe"}}'),
        True,
        "[BODY].user.firstName: john; [BODY].user.lastName: doe",
    ),
    (
        "body-jsonpath-double-placeholder-failure",
        "[BODY].user.firstName == [BODY].user.lastName",
        answer('{"user": {"firstName": "john", "lastName": "doe"}}'),
        False,
        "[BODY].user.firstName: john; [BODY].user.lastName: doe",
    ),
    (
        "body-jsonpath-when-body-is-array",
        "[BODY][0].id == 1",
        answer('[{"id": 1}, {"id": 2}]'),
        True,
        "1",
    ),
    # Gatus's two "null" bodies end in a stray quote: they are not JSON at all.
    (
        "body-jsonpath-when-body-has-null-parameter",
        "[BODY].data == OK",
        answer('{"data": null}"'),
        False,
        "[BODY].data: body is not JSON",
    ),
    (
        "body-jsonpath-when-body-has-array-with-null",
        "[BODY].items[0] == OK",
        answer('{"items": [null, null]}"'),
        False,
        "[BODY].items[0]: body is not JSON",
    ),
    (
        "body-jsonpath-when-body-is-null",
        "[BODY].data == OK",
        answer("null"),
        False,
        "[BODY].data: missing ([BODY] is null)",
    ),
    (
        "body-jsonpath-when-body-is-array-but-actual-body-is-not",
        "[BODY][0].name == test",
        answer('{"statusCode": 500, "message": "Internal Server Error"}'),
        False,
        "[BODY][0].name: missing ([BODY] is an object)",
    ),
    ("body-jsonpath-complex-int", "[BODY].data.id == 1", answer('{"data": {"id": 1}}'), True, "1"),
    (
        "body-jsonpath-complex-array-int",
        "[BODY].data[1].id == 2",
        answer('{"data": [{"id": 1}, {"id": 2}, {"id": 3}]}'),
        True,
        "2",
    ),
    (
        "body-jsonpath-complex-int-using-greater-than",
        "[BODY].data.id > 0",
        answer('{"data": {"id": 1}}'),
        True,
        "1",
    ),
    (
        "body-jsonpath-hexadecimal-int-using-greater-than",
        "[BODY].data > 0",
        answer('{"data": "0x1"}'),
        True,
        "0x1",
    ),
    (
        "body-jsonpath-hexadecimal-int-using-equal-to-0x1",
        "[BODY].data == 1",
        answer('{"data": "0x1"}'),
        True,
        "0x1",
    ),
    (
        "body-jsonpath-hexadecimal-int-using-equals",
        "[BODY].data == 0x1",
        answer('{"data": "0x1"}'),
        True,
        "0x1",
    ),
    (
        "body-jsonpath-hexadecimal-int-using-equal-to-0x2",
        "[BODY].data == 2",
        answer('{"data": "0x2"}'),
        True,
        "0x2",
    ),
    (
        "body-jsonpath-hexadecimal-int-using-equal-to-0xF",
        "[BODY].data == 15",
        answer('{"data": "0xF"}'),
        True,
        "0xF",
    ),
    (
        "body-jsonpath-hexadecimal-int-using-equal-to-0xC0ff33",
        "[BODY].data == 12648243",
        answer('{"data": "0xC0ff33"}'),
        True,
        "0xC0ff33",
    ),
    (
        "body-jsonpath-hexadecimal-int-len",
        "len([BODY].data) == 3",
        answer('{"data": "0x1"}'),
        True,
        "3",
    ),
    (
        "body-jsonpath-hexadecimal-int-greater",
        "[BODY].data >= 1",
        answer('{"data": "0x01"}'),
        True,
        "0x01",
    ),
    (
        "body-jsonpath-hexadecimal-int-0x01-len",
        "len([BODY].data) == 4",
        answer('{"data": "0x01"}'),
        True,
        "4",
    ),
    (
        "body-jsonpath-octal-int-using-greater-than",
        "[BODY].data > 0",
        answer('{"data": "0o1"}'),
        True,
        "0o1",
    ),
    (
        "body-jsonpath-octal-int-using-equal",
        "[BODY].data == 2",
        answer('{"data": "0o2"}'),
        True,
        "0o2",
    ),
    (
        "body-jsonpath-octal-int-using-equals",
        "[BODY].data == 0o2",
        answer('{"data": "0o2"}'),
        True,
        "0o2",
    ),
    (
        "body-jsonpath-binary-int-using-greater-than",
        "[BODY].data > 0",
        answer('{"data": "0b1"}'),
        True,
        "0b1",
    ),
    (
        "body-jsonpath-binary-int-using-equal",
        "[BODY].data == 2",
        answer('{"data": "0b0010"}'),
        True,
        "0b0010",
    ),
    (
        "body-jsonpath-binary-int-using-equals",
        "[BODY].data == 0b10",
        answer('{"data": "0b0010"}'),
        True,
        "0b0010",
    ),
    (
        "body-jsonpath-complex-int-using-greater-than-failure",
        "[BODY].data.id > 5",
        answer('{"data": {"id": 1}}'),
        False,
        "1",
    ),
    (
        "body-jsonpath-float-using-greater-than-issue433",
        "[BODY].balance > 100",
        answer('{"balance": "123.40000000000005"}'),
        True,
        "123.40000000000005",
    ),
    (
        "body-jsonpath-complex-int-using-less-than",
        "[BODY].data.id < 5",
        answer('{"data": {"id": 2}}'),
        True,
        "2",
    ),
    (
        "body-jsonpath-complex-int-using-less-than-failure",
        "[BODY].data.id < 5",
        answer('{"data": {"id": 10}}'),
        False,
        "10",
    ),
    # Gatus reads a missing certificate as 0, so "== 0" held; here it is unresolved.
    (
        "certificate-expiration-not-set",
        "[CERTIFICATE_EXPIRATION] == 0",
        answer(),
        False,
        "[CERTIFICATE_EXPIRATION]: no certificate",
    ),
    (
        "certificate-expiration-greater-than-numerical",
        "[CERTIFICATE_EXPIRATION] > 2419200000",
        answer(cert=60 * D),
        True,
        "5184000000 (60d)",
    ),
    (
        "certificate-expiration-greater-than-numerical-failure",
        "[CERTIFICATE_EXPIRATION] > 2419200000",
        answer(cert=14 * D),
        False,
        "1209600000 (14d)",
    ),
    (
        "certificate-expiration-greater-than-duration",
        "[CERTIFICATE_EXPIRATION] > 12h",
        answer(cert=24 * H),
        True,
        "86400000 (1d)",
    ),
    (
        "certificate-expiration-greater-than-duration (48h)",
        "[CERTIFICATE_EXPIRATION] > 48h",
        answer(cert=24 * H),
        False,
        "86400000 (1d)",
    ),
    # no-placeholders ("1 == 2") is a ConditionError here: see ERRORS.
    (
        "len-body-jsonpath-complex",
        "len([BODY].data.name) == 4",
        answer('{"data": {"name": "john"}}'),
        True,
        "4",
    ),
    ("len-body-array", "len([BODY]) == 3", answer('[{"id": 1}, {"id": 2}, {"id": 3}]'), True, "3"),
    (
        "len-body-keyed-array",
        "len([BODY].data) == 3",
        answer('{"data": [{"id": 1}, {"id": 2}, {"id": 3}]}'),
        True,
        "3",
    ),
    (
        "len-body-array-invalid",
        "len([BODY].data) == 8",
        answer('{"name": "john.doe"}'),
        False,
        "len([BODY].data): missing",
    ),
    ("len-body-string", "len([BODY]) == 8", answer("john.doe"), True, "8"),
    ("len-body-keyed-string", "len([BODY].name) == 8", answer('{"name": "john.doe"}'), True, "8"),
    ("len-body-keyed-int", "len([BODY].age) == 2", answer('{"age":18}'), True, "2"),
    ("len-body-keyed-bool", "len([BODY].adult) == 4", answer('{"adult":true}'), True, "4"),
    # Gatus counts the characters of the minified object (23); len() of an object counts its
    # keys here.
    (
        "len-body-object-inside-array",
        "len([BODY][0]) == 23",
        answer('[{"age":18,"adult":true}]'),
        False,
        "2",
    ),
    (
        "len-body-object-inside-array (keys)",
        "len([BODY][0]) == 2",
        answer('[{"age":18,"adult":true}]'),
        True,
        "2",
    ),
    (
        "len-body-object-keyed-int-inside-array",
        "len([BODY][0].age) == 2",
        answer('[{"age":18,"adult":true}]'),
        True,
        "2",
    ),
    (
        "len-body-keyed-bool-inside-array",
        "len([BODY][0].adult) == 4",
        answer('[{"age":18,"adult":true}]'),
        True,
        "4",
    ),
    ("len-body-object", "len([BODY]) == 20", answer('{"name": "john.doe"}'), True, "20"),
    (
        "pat-body-1",
        "[BODY] == pat(*john*)",
        answer('{"name": "john.doe"}'),
        True,
        '{"name": "john.doe"}',
    ),
    ("pat-body-2", "[BODY].name == pat(john*)", answer('{"name": "john.doe"}'), True, "john.doe"),
    (
        "pat-body-failure",
        "[BODY].name == pat(bob*)",
        answer('{"name": "john.doe"}'),
        False,
        "john.doe",
    ),
    (
        "pat-body-html",
        '[BODY] == pat(*<div id="user">john.doe</div>*)',
        answer(_HTML_JOHN),
        True,
        _HTML_JOHN,
    ),
    (
        "pat-body-html-failure",
        '[BODY] == pat(*<div id="user">john.doe</div>*)',
        answer(_HTML_JANE),
        False,
        _HTML_JANE,
    ),
    (
        "pat-body-html-failure-alt",
        'pat(*<div id="user">john.doe</div>*) == [BODY]',
        answer(_HTML_JANE),
        False,
        _HTML_JANE,
    ),
    (
        "pat-body-in-array",
        "[BODY].data == pat(*Whatever*)",
        answer('{"data": ["hello", "world", "Whatever"]}'),
        True,
        '["hello","world","Whatever"]',
    ),
    ("pat-status", "[STATUS] == pat(4*)", answer(status=404), True, "404"),
    ("pat-status-failure", "[STATUS] == pat(4*)", answer(status=200), False, "200"),
    (
        "any-body-1",
        "[BODY].name == any(john.doe, jane.doe)",
        answer('{"name": "john.doe"}'),
        True,
        "john.doe",
    ),
    (
        "any-body-2",
        "[BODY].name == any(john.doe, jane.doe)",
        answer('{"name": "jane.doe"}'),
        True,
        "jane.doe",
    ),
    (
        "any-body-failure",
        "[BODY].name == any(john.doe, jane.doe)",
        answer('{"name": "bob"}'),
        False,
        "bob",
    ),
    ("any-status-1", "[STATUS] == any(200, 429)", answer(status=200), True, "200"),
    ("any-status-2", "[STATUS] == any(200, 429)", answer(status=429), True, "429"),
    ("any-status-reverse", "any(200, 429) == [STATUS]", answer(status=429), True, "429"),
    ("any-status-failure", "[STATUS] == any(200, 429)", answer(status=404), False, "404"),
    (
        "any-status-failure-but-dont-resolve",
        "[STATUS] == any(200, 429)",
        answer(status=404),
        False,
        "404",
    ),
    ("has", "has([BODY].errors) == false", answer("{}"), True, "false"),
    ("has-key-of-map", "has([BODY].article) == true", answer(_ARTICLE), True, "true"),
    ("has-failure", "has([BODY].errors) == false", answer('{"errors": ["1"]}'), False, "true"),
    (
        "has-failure-but-dont-resolve",
        "has([BODY].errors) == false",
        answer('{"errors": ["1"]}'),
        False,
        "true",
    ),
]


@pytest.mark.parametrize(
    ("condition", "probe", "held", "seen"),
    [case[1:] for case in GATUS_EVALUATE],
    ids=[case[0] for case in GATUS_EVALUATE],
)
def test_gatus_evaluate(condition: str, probe: Answer, held: bool, seen: str) -> None:
    assert parse_condition(condition).check(probe) == Verdict(held, seen)


# Gatus's TestCondition_Validate (same file and commit): the conditions it accepts that our
# notation shares. `[STATUS]==201` is an error in Gatus (it wants spaces around operators);
# spaces are optional here. Its FIXME case `len([BODY].users == 100`, which Gatus wants to
# reject but can't, is rejected here (see ERRORS).
GATUS_VALID = [
    "[STATUS] == 200",
    "[STATUS] != 200",
    "[STATUS] <= 200",
    "[STATUS] >= 200",
    "[STATUS] < 200",
    "[STATUS] > 200",
    "[STATUS] == any(200, 201, 202, 203)",
    "[STATUS] == [BODY].status",
    "[RESPONSE_TIME] < 500",
    "[BODY] == 1",
    "[BODY].test == wat",
    "[BODY].test.wat == wat",
    "[BODY].age == [BODY].id",
    "[BODY].users[0].id == 1",
    "len([BODY].users) == 100",
    "len([BODY].data) < 5",
    "has([BODY].errors) == false",
    "has([BODY].users[0].name) == true",
    "[BODY].name == pat(john*)",
    "[CERTIFICATE_EXPIRATION] > 48h",
    "[STATUS]==201",
]


@pytest.mark.parametrize("text", GATUS_VALID)
def test_gatus_valid(text: str) -> None:
    condition = parse_condition(text)
    assert condition.text == text
    assert condition.uses_status == ("[STATUS]" in text)


# Gatus's placeholders we don't have (its [IP], [CONNECTED], [DNS_RCODE], [DOMAIN_EXPIRATION]
# and [CONTEXT] cases in TestCondition_Validate, TestCondition_evaluate and the [CONTEXT]
# tests of the same file): a ConditionError that says so.
GATUS_ONLY = [
    "[IP] == 127.0.0.1",
    "[IP] == pat(10.*)",
    "[CONNECTED] == true",
    "[DNS_RCODE] == NOERROR",
    "[DOMAIN_EXPIRATION] > 720h",
    "[CONTEXT].expected_status == 200",
]


@pytest.mark.parametrize("text", GATUS_ONLY)
def test_gatus_only_placeholders(text: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert caught.value.position == 0
    assert "is a Gatus placeholder cryptomon does not have" in caught.value.reason
    assert "[BODY]" in caught.value.reason  # names the ones we have


# --------------------------------------------------------------------------------------------
# The answers of the providers we watch, and what Gatus has no placeholder for.

KRAKEN_MAINTENANCE = (
    '{"error":[],"result":{"status":"maintenance","timestamp":"2026-12-01T21:00:00Z"}}'
)
ETHERSCAN_V1 = (
    '{"status":"0","message":"NOTOK","result":"Exception: You are using a deprecated V1 '
    'endpoint, switch to Etherscan API V2 using https://docs.etherscan.io/v2-migration"}'
)
RPC_BATCH = '[{"jsonrpc":"2.0","id":1,"result":"0x1b4"},{"jsonrpc":"2.0","id":2,"result":"0x1"}]'
JSON_TYPE = {"Content-Type": "application/json; charset=utf-8", "X-RateLimit-Remaining": "0"}

OURS: list[tuple[str, str, Answer, bool, str]] = [
    # Headers: names are case-insensitive, whatever case the mapping has.
    (
        "header",
        "[HEADER].Content-Type == pat(application/json*)",
        answer(headers=JSON_TYPE),
        True,
        "application/json; charset=utf-8",
    ),
    (
        "header-lower-case-name",
        "[HEADER].content-type == pat(application/json*)",
        answer(headers=JSON_TYPE),
        True,
        "application/json; charset=utf-8",
    ),
    (
        "header-upper-case-mapping",
        "[HEADER].x-ratelimit-remaining > 0",
        answer(headers={"X-RATELIMIT-REMAINING": "0"}),
        False,
        "0",
    ),
    (
        "header-multidict",
        "[HEADER].Retry-After <= 60",
        answer(headers=CIMultiDictProxy(CIMultiDict([("retry-after", "30")]))),
        True,
        "30",
    ),
    (
        "header-missing",
        "[HEADER].Retry-After <= 60",
        answer(headers=JSON_TYPE),
        False,
        "[HEADER].Retry-After: missing",
    ),
    (
        "header-missing-not-equal",
        "[HEADER].X-Error != fatal",
        answer(headers=JSON_TYPE),
        False,
        "[HEADER].X-Error: missing",
    ),
    (
        "has-header",
        "has([HEADER].X-RateLimit-Remaining) == true",
        answer(headers=JSON_TYPE),
        True,
        "true",
    ),
    (
        "has-header-missing",
        "has([HEADER].Retry-After) == false",
        answer(headers=JSON_TYPE),
        True,
        "false",
    ),
    (
        "header-value-with-equals",
        "[HEADER].Content-Type == application/json; charset=utf-8",
        answer(headers=JSON_TYPE),
        True,
        "application/json; charset=utf-8",
    ),
    # Hex quantities compare as numbers, with == and with ordering.
    ("hex-greater", "[BODY].result > 0x10", answer('{"result":"0x1b4"}'), True, "0x1b4"),
    ("hex-greater-failure", "[BODY].result > 0x1b4", answer('{"result":"0x1b4"}'), False, "0x1b4"),
    ("hex-equal-decimal", "[BODY].result == 436", answer('{"result":"0x1b4"}'), True, "0x1b4"),
    (
        "hex-equal-leading-zeros",
        "[BODY].result == 0x01b4",
        answer('{"result":"0x1B4"}'),
        True,
        "0x1B4",
    ),
    ("hex-zero", "[BODY].result == 0", answer('{"result":"0x0"}'), True, "0x0"),
    ("hex-not-equal", "[BODY].result != 0x1", answer('{"result":"0x38"}'), True, "0x38"),
    ("hex-empty-data-is-text", "[BODY].result == 0x", answer('{"result":"0x"}'), True, "0x"),
    ("literal-on-the-left", "0x10 < [BODY].result", answer('{"result":"0x1b4"}'), True, "0x1b4"),
    # Durations are milliseconds.
    (
        "duration-days",
        "[CERTIFICATE_EXPIRATION] > 14d",
        answer(cert=13 * D + 23 * H),
        False,
        "1206000000 (13d23h)",
    ),
    (
        "duration-days-held",
        "[CERTIFICATE_EXPIRATION] > 14d",
        answer(cert=30 * D),
        True,
        "2592000000 (30d)",
    ),
    (
        "duration-expired",
        "[CERTIFICATE_EXPIRATION] > 0",
        answer(cert=-2 * H),
        False,
        "-7200000 (-2h)",
    ),
    (
        "duration-plain-http",
        "[CERTIFICATE_EXPIRATION] > 14d",
        answer(cert=None),
        False,
        "[CERTIFICATE_EXPIRATION]: no certificate",
    ),
    ("duration-seconds", "[RESPONSE_TIME] < 2s", answer(ms=1999.5), True, "1999.5"),
    ("duration-seconds-failure", "[RESPONSE_TIME] < 2s", answer(ms=2000), False, "2000"),
    ("duration-plain-number-is-ms", "[RESPONSE_TIME] < 800", answer(ms=812.25), False, "812.25"),
    ("duration-ms", "[RESPONSE_TIME] <= 500ms", answer(ms=500), True, "500"),
    ("duration-minutes", "[RESPONSE_TIME] < 30m", answer(ms=29 * 60_000), True, "1740000"),
    (
        "duration-hours",
        "[CERTIFICATE_EXPIRATION] >= 48h",
        answer(cert=48 * H),
        True,
        "172800000 (2d)",
    ),
    ("duration-compound", "[RESPONSE_TIME] < 1m30s", answer(ms=89_999), True, "89999"),
    ("duration-fraction", "[RESPONSE_TIME] < 1.5s", answer(ms=1499), True, "1499"),
    ("response-time-fraction-shown", "[RESPONSE_TIME] < 1", answer(ms=12.3456789), False, "12.346"),
    # JSON-RPC batches: one answer per call, by position.
    ("rpc-batch-chain-id", "[BODY][1].result == 0x1", answer(RPC_BATCH), True, "0x1"),
    ("rpc-batch-wrong-chain", "[BODY][1].result == 0x38", answer(RPC_BATCH), False, "0x1"),
    ("rpc-batch-head", "[BODY][0].result > 0x100", answer(RPC_BATCH), True, "0x1b4"),
    (
        "rpc-batch-short",
        "[BODY][2].result == 0x1",
        answer(RPC_BATCH),
        False,
        "[BODY][2].result: missing ([BODY] has 2 items)",
    ),
    (
        "rpc-batch-one-item",
        "[BODY][1].result == 0x1",
        answer('[{"id":1,"result":"0x1"}]'),
        False,
        "[BODY][1].result: missing ([BODY] has 1 item)",
    ),
    (
        "rpc-error-instead-of-batch",
        "[BODY][1].result == 0x1",
        answer('{"jsonrpc":"2.0","error":{"code":-32600}}'),
        False,
        "[BODY][1].result: missing ([BODY] is an object)",
    ),
    (
        "rpc-has-no-error",
        "has([BODY].error) == false",
        answer('{"jsonrpc":"2.0","id":1,"result":"0x1"}'),
        True,
        "false",
    ),
    (
        "rpc-null-error-is-no-error",
        "has([BODY].error) == false",
        answer('{"jsonrpc":"2.0","id":1,"error":null,"result":"0x1"}'),
        True,
        "false",
    ),
    # Kraken's system status in maintenance.
    (
        "kraken-maintenance",
        "[BODY].result.status == online",
        answer(KRAKEN_MAINTENANCE),
        False,
        "maintenance",
    ),
    (
        "kraken-maintenance-declared",
        "[BODY].result.status == any(maintenance, cancel_only, post_only)",
        answer(KRAKEN_MAINTENANCE),
        True,
        "maintenance",
    ),
    ("kraken-no-errors", "len([BODY].error) == 0", answer(KRAKEN_MAINTENANCE), True, "0"),
    (
        "kraken-path-missing",
        "[BODY].result.state == online",
        answer(KRAKEN_MAINTENANCE),
        False,
        "[BODY].result.state: missing",
    ),
    (
        "kraken-path-through-a-string",
        "[BODY].result.status.code == 1",
        answer(KRAKEN_MAINTENANCE),
        False,
        "[BODY].result.status.code: missing ([BODY].result.status is a string)",
    ),
    # Bitfinex's platform status: [1] operative, [0] maintenance.
    ("bitfinex-maintenance", "[BODY][0] == 1", answer("[0]"), False, "0"),
    ("bitfinex-operative", "[BODY][0] == 1", answer("[1]"), True, "1"),
    ("bitfinex-either", "[BODY][0] == any(0, 1)", answer("[0]"), True, "0"),
    # Solana's /health: plain text.
    ("solana-behind", "[BODY] == ok", answer("behind"), False, "behind"),
    ("solana-ok", "[BODY] == ok", answer("ok\n"), True, "ok"),
    (
        "solana-not-json",
        "[BODY].result == ok",
        answer("behind"),
        False,
        "[BODY].result: body is not JSON",
    ),
    # Etherscan's V1 deprecation notice: HTTP 200, status "0".
    ("etherscan-v1-deprecated", "[BODY].status == 1", answer(ETHERSCAN_V1), False, "0"),
    (
        "etherscan-ok-string",
        "[BODY].status == 1",
        answer('{"status":"1","message":"OK","result":"42"}'),
        True,
        "1",
    ),
    ("etherscan-ok-number", "[BODY].status == 1", answer('{"status":1}'), True, "1"),
    ("etherscan-message", "[BODY].message == OK", answer(ETHERSCAN_V1), False, "NOTOK"),
    (
        "etherscan-result-pattern",
        "[BODY].result != pat(*deprecated*)",
        answer(ETHERSCAN_V1),
        False,
        msgspec.json.decode(ETHERSCAN_V1)["result"],
    ),
    # Equality: numbers when both sides are numbers, else text.
    ("float-equals-int", "[BODY].price == 1", answer('{"price": 1.0}'), True, "1.0"),
    (
        "float-string-equals-float",
        "[BODY].price == 43000.10",
        answer('{"price": "43000.1"}'),
        True,
        "43000.1",
    ),
    (
        "quoted-compares-text",
        '[BODY].version == "1.10"',
        answer('{"version": "1.1"}'),
        False,
        "1.1",
    ),
    (
        "quoted-keeps-spaces",
        '[BODY].message == "Service Unavailable "',
        answer('{"message": "Service Unavailable "}'),
        True,
        "Service Unavailable ",
    ),
    (
        "quoted-escapes",
        r'[BODY].q == "say \"hi\" \\ bye"',
        answer(r'{"q": "say \"hi\" \\ bye"}'),
        True,
        'say "hi" \\ bye',
    ),
    (
        "bare-text-with-spaces",
        "[BODY].message == Service Unavailable",
        answer('{"message": "Service Unavailable"}'),
        True,
        "Service Unavailable",
    ),
    ("bool-is-not-a-number", "[BODY].ok == 1", answer('{"ok": true}'), False, "true"),
    ("bool-as-text", "[BODY].ok == true", answer('{"ok": true}'), True, "true"),
    ("null-as-text", "[BODY].data == null", answer('{"data": null}'), True, "null"),
    ("object-as-json", '[BODY].data == {"a":1}', answer('{"data": {"a": 1}}'), True, '{"a":1}'),
    ("lower-case-placeholder", "[body].status == UP", answer('{"status":"UP"}'), True, "UP"),
    (
        "key-with-dash-and-digits",
        "[BODY].x-rate_2.v == 1",
        answer('{"x-rate_2": {"v": 1}}'),
        True,
        "1",
    ),
    ("key-with-dollar", "[BODY].$schema == x", answer('{"$schema": "x"}'), True, "x"),
    ("nested-index", "[BODY].m[1][0] == 3", answer('{"m": [[1, 2], [3, 4]]}'), True, "3"),
    (
        "ordering-needs-a-number",
        "[BODY].result.status > 0",
        answer(KRAKEN_MAINTENANCE),
        False,
        "maintenance (not a number)",
    ),
    (
        "ordering-two-placeholders",
        "[BODY].a < [BODY].b",
        answer('{"a": "x", "b": 2}'),
        False,
        "[BODY].a: x (not a number); [BODY].b: 2",
    ),
    (
        "ordering-two-placeholders-held",
        "[BODY].a < [BODY].b",
        answer('{"a": "0x1", "b": 2}'),
        True,
        "[BODY].a: 0x1; [BODY].b: 2",
    ),
    (
        "status-from-body",
        "[STATUS] == [BODY].code",
        answer('{"code": 200}', status=200),
        True,
        "[STATUS]: 200; [BODY].code: 200",
    ),
    (
        "two-placeholders-one-missing",
        "[BODY].a == [BODY].b",
        answer('{"a": 1}'),
        False,
        "[BODY].b: missing",
    ),
    ("no-answer", "[STATUS] == 200", answer(status=None), False, "[STATUS]: no answer"),
    ("no-answer-has", "has([STATUS]) == false", answer(status=None), True, "false"),
    ("len-status", "len([STATUS]) == 3", answer(status=503), True, "3"),
    ("len-null", "len([BODY].a) == 0", answer('{"a": null}'), False, "len([BODY].a): null"),
    ("has-empty-body", "has([BODY]) == false", answer(b"  \n"), True, "false"),
    ("empty-body-path", "[BODY].a == 1", answer(b""), False, "[BODY].a: body is empty"),
    ("body-not-utf8", "[BODY] == pat(*ok*)", answer(b"\xffok\xfe"), True, "\ufffdok\ufffd"),
    ("pat-no-wildcard", "[BODY].a == pat(abc)", answer('{"a": "abc"}'), True, "abc"),
    ("pat-middle", "[BODY].a == pat(a*b*c)", answer('{"a": "a--c--b--c"}'), True, "a--c--b--c"),
    ("pat-overlap", "[BODY].a == pat(ab*ba)", answer('{"a": "aba"}'), False, "aba"),
    ("pat-not-equal", "[STATUS] != pat(5*)", answer(status=503), False, "503"),
    ("any-none-of", "[STATUS] != any(500, 502, 503)", answer(status=429), True, "429"),
    ("any-numbers", "[BODY].chain == any(0x1, 0x38)", answer('{"chain": 56}'), True, "56"),
    ("any-quoted", '[BODY].m == any("a, b", c)', answer('{"m": "a, b"}'), True, "a, b"),
]


@pytest.mark.parametrize(
    ("condition", "probe", "held", "seen"),
    [case[1:] for case in OURS],
    ids=[case[0] for case in OURS],
)
def test_conditions(condition: str, probe: Answer, held: bool, seen: str) -> None:
    assert parse_condition(condition).check(probe) == Verdict(held, seen)


@pytest.mark.parametrize(
    ("text", "uses_status"),
    [
        ("[STATUS] == 200", True),
        ("200 == [STATUS]", True),
        ("len([STATUS]) == 3", True),
        ("has([STATUS]) == true", True),
        ("[BODY].code == [STATUS]", True),
        ("[BODY].status == 1", False),
        ("[HEADER].Status == 1", False),
        ("[RESPONSE_TIME] < 1s", False),
    ],
)
def test_uses_status(text: str, uses_status: bool) -> None:
    assert parse_condition(text).uses_status is uses_status


def test_text_is_stripped() -> None:
    assert parse_condition("  [STATUS]  ==  200 \n").text == "[STATUS]  ==  200"


# --------------------------------------------------------------------------------------------
# Seen texts: bounded, and never a secret.

KEY = "sk-live-0123456789abcdef"


@pytest.mark.parametrize(
    ("condition", "probe", "seen"),
    [
        ("[BODY] == ok", answer(f"bad key {KEY}", secrets=(KEY,)), "bad key ***"),
        ("[BODY].echo == x", answer(f'{{"echo": "{KEY}:{KEY}"}}', secrets=(KEY,)), "***:***"),
        ("[HEADER].X-Key == x", answer(headers={"x-key": KEY}, secrets=(KEY,)), "***"),
        ("[BODY].a > 0", answer(f'{{"a": "{KEY}"}}', secrets=(KEY,)), "*** (not a number)"),
        # The longest secret first: one that contains another goes whole.
        ("[BODY] == ok", answer(f"{KEY}!", secrets=("0123", KEY)), "***!"),
        ("[BODY] == ok", answer("tokenABC", secrets=("", "ABC")), "token***"),
        # A secret that is only a word of the suffix, even.
        ("[BODY].a > 0", answer('{"a": "x"}', secrets=("number",)), "x (not a ***)"),
        # Header values decoded with surrogate escapes come out as valid UTF-8.
        ("[HEADER].X == y", answer(headers={"X": "a\udcffb"}), "a\ufffdb"),
    ],
)
def test_seen_redacts_secrets(condition: str, probe: Answer, seen: str) -> None:
    assert parse_condition(condition).check(probe).seen == seen


@pytest.mark.parametrize(
    ("body", "seen"),
    [
        ("x" * SEEN_LIMIT, "x" * SEEN_LIMIT),
        ("x" * (SEEN_LIMIT + 1), "x" * (SEEN_LIMIT - 1) + "…"),
        ("é" * 10_000, "é" * (SEEN_LIMIT - 1) + "…"),
    ],
)
def test_seen_is_cut(body: str, seen: str) -> None:
    verdict = parse_condition("[BODY] == ok").check(answer(body))
    assert verdict == Verdict(False, seen)
    assert len(verdict.seen) <= SEEN_LIMIT


def test_seen_cut_redacts_a_secret_across_the_cut() -> None:
    # The secret starts before the cut and ends after it: no prefix of it may show.
    body = "x" * (SEEN_LIMIT - 5) + KEY + "y" * 1000
    seen = parse_condition("[BODY] == ok").check(answer(body, secrets=(KEY,))).seen
    assert seen == "x" * (SEEN_LIMIT - 5) + "***" + "y" + "…"
    assert len(seen) == SEEN_LIMIT


def test_seen_cut_redacts_a_secret_pulled_in_by_earlier_redactions() -> None:
    # Long secrets early shrink the text: a later one, beyond the first window, moves into view.
    long_key = "k" * 150
    body = long_key * 3 + "a" * 40 + KEY + "z" * 5000
    seen = parse_condition("[BODY] == ok").check(answer(body, secrets=(long_key, KEY))).seen
    assert KEY[:4] not in seen
    assert seen == "*********" + "a" * 40 + "***" + "z" * (SEEN_LIMIT - 1 - 52) + "…"


def test_seen_of_a_long_pattern_failure_is_cut() -> None:
    body = "<html>" + "x" * 5000 + "</html>"
    verdict = parse_condition("[BODY] == pat(*<h1>Example Domain</h1>*)").check(answer(body))
    assert verdict == Verdict(False, "<html>" + "x" * (SEEN_LIMIT - 7) + "…")


def test_seen_of_two_placeholders_shows_both() -> None:
    body = msgspec.json.encode({"a": "x" * 500, "b": "y"})
    seen = parse_condition("[BODY].a == [BODY].b").check(answer(body)).seen
    left = "[BODY].a: " + "x" * (99 - len("[BODY].a: ") - 1) + "…"
    assert seen == left + "; [BODY].b: y"
    assert len(seen) <= SEEN_LIMIT


# --------------------------------------------------------------------------------------------
# Every parse error, with its position (0-based) and its reason.

ERRORS: list[tuple[str, int, str]] = [
    ("", 0, "an empty condition"),
    ("   ", 0, "an empty condition"),
    ("[STATUS] 200", 12, "expected an operator (==, !=, <, <=, >, >=)"),
    ("[STATUS]", 8, "expected an operator"),
    ("  [STATUS] 200  ", 14, "expected an operator"),
    ("[STATUS] ? 201", 14, "expected an operator"),  # Gatus: invalid condition
    ("[STATUS] = = 201", 9, "expected an operator (==, !=, <, <=, >, >=), not '='"),  # Gatus
    ("[STATUS] = 200", 9, "not '='"),
    ("[STATUS] ==", 11, "nothing after '=='"),  # Gatus: invalid condition
    ("== 200", 0, "nothing before '=='"),
    ("[STATUS] == 200 == 201", 16, "a second operator '=='"),
    ("[BODY] == a<b", 11, "a second operator '<' (a condition has one; quote a value holding it)"),
    ("[BODY] <> 1", 8, "a second operator '>'"),
    ("[STATUS] === 200", 9, "unknown operator '==='"),
    ("[STATUS] !== 200", 9, "unknown operator '!=='"),
    ("raw == raw", 0, "compares two constants"),  # Gatus accepts it
    ("1 == 2", 0, "compares two constants"),  # Gatus: no-placeholders, never holds
    ("pat(a*) == any(a)", 0, "compares two constants"),
    ("[FOO] == 1", 0, "unknown placeholder [FOO] (known: [STATUS], [RESPONSE_TIME], [BODY]"),
    ("[BODY].a == [NOPE].b", 12, "unknown placeholder [NOPE]"),
    ("[] == 1", 0, "unknown placeholder []"),
    ("[BODY == 1", 0, "unclosed '['"),
    ("len([BODY].users == 100", 3, "unclosed '('"),  # Gatus's FIXME case
    ("len([BODY)] == 1", 4, "unclosed '[' (found ')')"),
    ("[BODY].a == pat(x", 15, "unclosed '('"),
    ('[BODY] == "abc', 10, "unclosed '\"'"),
    ('[BODY] == pat(*"*)', 15, "unclosed '\"'"),
    ('[BODY] == "a" b', 14, "unexpected text after a quoted value"),
    ("foo([BODY]) == 1", 0, "unknown function 'foo' (known: len, has, pat, any)"),
    ("[BODY] == LEN(x)", 10, "unknown function 'LEN'"),
    ("pat([BODY]) == x", 4, "pat() takes a pattern, not a placeholder"),
    ("[STATUS] == any([BODY].a, 2)", 16, "any() takes values, not a placeholder"),
    ("[BODY] < pat(1*)", 9, "pat() works only with == and !="),
    ("[STATUS] >= any(200, 300)", 12, "any() works only with == and !="),
    ("any(1, 2) < [STATUS]", 0, "any() works only with == and !="),
    ("[STATUS] == any()", 16, "any() needs at least one value"),
    ("[STATUS] == any(200,,201)", 20, "an empty value in any()"),
    ("[STATUS] == any(200, )", 20, "an empty value in any()"),
    ("len(x) == 1", 4, "len() takes a placeholder, as in len([BODY].data)"),
    ("has() == true", 4, "has() takes a placeholder"),
    ("len(len([BODY])) == 1", 4, "len() takes a placeholder"),
    ("len([BODY]) x == 1", 12, "unexpected text after len(...)"),
    ("[BODY]..x == 1", 7, "expected a key after '.'"),
    ("[BODY]. == 1", 7, "expected a key after '.'"),
    ("[BODY].a. == 1", 9, "expected a key after '.'"),
    ("[BODY].a[x] == 1", 9, "expected an array index (0, 1, 2, ...)"),
    ("[BODY].a[] == 1", 9, "expected an array index"),
    ("[BODY].a[ 1] == 1", 9, "expected an array index"),
    ("[BODY].data[-1] == 1", 12, "negative indices are not supported"),
    ("[BODY]x == 1", 6, "unexpected 'x' in a [BODY] path (expected .key or [N])"),
    ("[BODY].a(b) == 1", 8, "unexpected '(' in a [BODY] path"),
    ('[BODY]."a" == 1', 7, "expected a key after '.'"),
    ("[HEADER] == 1", 8, "expected a header name, as in [HEADER].Content-Type"),
    ("[HEADER]. == 1", 9, "expected a header name"),
    ("[HEADER].a.b == 1", 10, "expected a header name"),
    ("[HEADER]x == 1", 8, "expected a header name"),
    ("[STATUS].x == 1", 8, "unexpected text after [STATUS] (it takes no path)"),
    ("[RESPONSE_TIME][0] < 1", 15, "unexpected text after [RESPONSE_TIME]"),
    # Gatus: response-time-using-less-than-invalid (fails every probe there: 0 stands in).
    (
        "[RESPONSE_TIME] < potato",
        18,
        "'<' compares numbers: 'potato' is neither a number nor a duration",
    ),
    ('[BODY].a > "x"', 11, "'>' compares numbers: 'x'"),
    ("[BODY].a >= 1_000", 12, "'>=' compares numbers"),
    ("[STATUS] == ok", 12, "[STATUS] is a number: 'ok' is neither a number nor a duration"),
    ("[CERTIFICATE_EXPIRATION] != never", 28, "[CERTIFICATE_EXPIRATION] is a number"),
    # Gatus: body-jsonpath-complex-len-invalid (fails every probe there).
    ("len([BODY].data.name) == john", 25, "len([BODY].data.name) is a number"),
    ("has([BODY].a) == yes", 17, "has() is true or false: compare it with true or false"),
    ("has([BODY].a) == TRUE", 17, "has() is true or false"),
    ("has([BODY].a) > 0", 0, "has() is true or false: compare it with == or !="),
    ("[BODY].n < has([BODY].a)", 0, "has() is true or false: compare it with == or !="),
]


@pytest.mark.parametrize(("text", "position", "reason"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(text: str, position: int, reason: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    error = caught.value
    assert (error.expression, error.position) == (text, position)
    assert reason in error.reason
    assert str(error) == f"{error.reason} at character {position + 1} of '{text}'"
    assert isinstance(error, ValueError)


def test_error_message_reads_as_documented() -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition("[STATUS] 200")
    assert str(caught.value) == (
        "expected an operator (==, !=, <, <=, >, >=) at character 13 of '[STATUS] 200'"
    )


def test_error_message_is_one_line() -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition("[STATUS]\n\t200\r")
    assert "\n" not in str(caught.value) and "\r" not in str(caught.value)
    assert str(caught.value).endswith(r"of '[STATUS]\n\t200\r'")
    assert caught.value.expression == "[STATUS]\n\t200\r"


def test_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(ConditionError("[X] == 1", 0, "unknown placeholder [X]")))
    assert (error.expression, error.position, error.reason) == (
        "[X] == 1",
        0,
        "unknown placeholder [X]",
    )
    assert str(error) == "unknown placeholder [X] at character 1 of '[X] == 1'"


# --------------------------------------------------------------------------------------------
# Observations.

OBSERVATIONS: list[tuple[str, Answer, object]] = [
    ("[BODY].result", answer('{"result":"0x1b4"}'), 436),
    ("[BODY].result", answer('{"result":"0x0"}'), 0),
    ("[BODY][0].result", answer(RPC_BATCH), 436),
    ("[BODY].result", answer('{"result":"0x"}'), "0x"),  # empty data, not a quantity
    ("[BODY].result", answer('{"result":"-0x1"}'), "-0x1"),
    ("[BODY].result", answer('{"result":"123"}'), "123"),  # other strings stay strings
    ("[BODY].result", answer(KRAKEN_MAINTENANCE), None),  # an object
    ("[BODY].error", answer(KRAKEN_MAINTENANCE), None),  # an array
    ("[BODY].result.status", answer(KRAKEN_MAINTENANCE), "maintenance"),
    ("[BODY].result.missing", answer(KRAKEN_MAINTENANCE), None),
    ("[BODY].price", answer('{"price": 43000.5}'), 43000.5),
    ("[BODY].height", answer('{"height": 870000}'), 870000),
    ("[BODY].ok", answer('{"ok": false}'), False),
    ("[BODY].data", answer('{"data": null}'), None),
    ("[BODY].a", answer("not json"), None),
    ("[BODY]", answer("870000\n"), 870000),  # a plain-text tip height is a JSON number
    ("[BODY]", answer('"0x1b4"'), 436),
    ("[BODY]", answer("behind"), "behind"),
    ("[BODY]", answer("[1, 2]"), None),
    ("[BODY]", answer(b""), ""),
    # Wider than 64 bits (an event snapshot's msgpack): a float; wider than 256: data.
    ("[BODY].wei", answer('{"wei": "0x10000000000000000"}'), float(2**64)),
    ("[BODY].wei", answer('{"wei": 18446744073709551616}'), float(2**64)),
    ("[BODY].wei", answer('{"wei": 18446744073709551615}'), 2**64 - 1),
    ("[BODY].code", answer('{"code": "0x' + "ab" * 33 + '"}'), "0x" + "ab" * 33),
    ("[BODY].s", answer('{"s": "' + "y" * 500 + '"}'), "y" * (SEEN_LIMIT - 1) + "…"),
    ("[BODY].s", answer(f'{{"s": "key={KEY}"}}', secrets=(KEY,)), "key=***"),
    ("[HEADER].X-Height", answer(headers={"x-height": "0x10"}), "0x10"),  # not JSON: text
    ("[HEADER].X-Height", answer(), None),
    ("[STATUS]", answer(status=503), 503),
    ("[STATUS]", answer(status=None), None),
    ("[RESPONSE_TIME]", answer(ms=12.5), 12.5),
    ("[CERTIFICATE_EXPIRATION]", answer(cert=None), None),
    ("[CERTIFICATE_EXPIRATION]", answer(cert=5.0 * D), 5.0 * D),
    ("len([BODY].data)", answer('{"data": [1, 2, 3]}'), 3),
    ("len([BODY].data)", answer("{}"), None),
    ("has([BODY].data)", answer("{}"), False),
    ("  [BODY].result  ", answer('{"result":"0x1"}'), 1),
]


@pytest.mark.parametrize(("text", "probe", "value"), OBSERVATIONS)
def test_observations(text: str, probe: Answer, value: object) -> None:
    observation = parse_observation(text)
    assert observation.text == text.strip()
    extracted = observation.extract(probe)
    assert extracted == value
    assert type(extracted) is type(value)


OBSERVATION_ERRORS: list[tuple[str, int, str]] = [
    ("", 0, "an empty observation"),
    ("[BODY].a == 1", 9, "an observation is one placeholder, not a comparison ('==')"),
    ("42", 0, "an observation is a placeholder, as in [BODY].result or len([BODY])"),
    ("pat(x*)", 0, "an observation is a placeholder"),
    ('"[BODY]"', 0, "an observation is a placeholder"),
    ("[FOO]", 0, "unknown placeholder [FOO]"),
    ("[BODY].a[x]", 9, "expected an array index"),
    ("len([BODY]", 3, "unclosed '('"),
]


@pytest.mark.parametrize(("text", "position", "reason"), OBSERVATION_ERRORS)
def test_observation_errors(text: str, position: int, reason: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_observation(text)
    assert caught.value.position == position
    assert caught.value.reason.startswith(reason)


# --------------------------------------------------------------------------------------------
# Cheap checks: nothing parsed per check, the body decoded at most once and only if read.


class CountingDecoder:
    def __init__(self) -> None:
        self.calls = 0
        self.decoder = msgspec.json.Decoder()

    def decode(self, data: bytes) -> Any:
        self.calls += 1
        return self.decoder.decode(data)


def test_body_is_decoded_once_and_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingDecoder()
    monkeypatch.setattr(conditions, "_DECODER", counting)
    checks = [
        parse_condition(text)
        for text in ("[STATUS] == 200", "[BODY][1].result == 0x1", "len([BODY]) == 2")
    ]
    head = parse_observation("[BODY][0].result")
    probe = answer(RPC_BATCH)
    assert checks[0].check(probe).held
    assert counting.calls == 0  # [STATUS] alone never reads the body
    assert all(check.check(probe).held for check in checks)
    assert head.extract(probe) == 436
    assert counting.calls == 1
    not_json = answer("behind")
    for _ in range(3):
        assert not checks[1].check(not_json).held
    assert counting.calls == 2  # a failed decode is remembered too


def test_checks_parse_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    condition = parse_condition("[BODY].result == 0x1")
    observation = parse_observation("[BODY].result")

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed during a check")

    monkeypatch.setattr(conditions, "_Parser", no_parsing)
    monkeypatch.setattr(conditions, "_parse_duration", no_parsing)
    probe = answer('{"result":"0x1"}')
    assert condition.check(probe) == Verdict(True, "0x1")
    assert observation.extract(probe) == 1


def test_check_is_fast() -> None:
    # A generous bound (the figure is a few microseconds): catches a parse per check.
    condition = parse_condition("[BODY].result == 0x1")
    body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "result": "0x1", "pad": "x" * 1000})
    probe = answer(body)
    seconds = min(timeit.repeat(lambda: condition.check(probe), number=2000, repeat=3)) / 2000
    assert seconds < 50e-6


def test_answer_helpers() -> None:
    probe = answer(' {"a": 1} ', secrets=(KEY,))
    assert probe.json == {"a": 1}
    assert probe.text == '{"a": 1}'
    assert answer("nope").json is None
    assert probe.redact(f"x{KEY}y") == "x***y"
    assert probe.header("missing") is None


# --------------------------------------------------------------------------------------------
# Properties: no input makes parsing raise anything but ConditionError, nor a check raise.

TOKENS = [
    "[STATUS]",
    "[BODY]",
    "[HEADER]",
    "[RESPONSE_TIME]",
    "[CERTIFICATE_EXPIRATION]",
    "[FOO]",
    ".a",
    ".result",
    "[0]",
    "[1]",
    "[-1]",
    "[x]",
    ".",
    "[",
    "]",
    "(",
    ")",
    "len(",
    "has(",
    "pat(",
    "any(",
    "foo(",
    ",",
    '"',
    "\\",
    "*",
    " ",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "!",
    "0x1",
    "1",
    "-2",
    "1.5",
    "2s",
    "14d",
    "ok",
    "true",
    "\n",
]
VALID = [
    "[STATUS] == 200",
    "[STATUS] == any(200, 429)",
    "[RESPONSE_TIME] < 2s",
    "[CERTIFICATE_EXPIRATION] > 14d",
    "[BODY] == ok",
    "[BODY] == pat(*ok*)",
    "[BODY].a == 1",
    "[BODY].a > 0x10",
    "[BODY].a.b[0] != x",
    "[BODY][0] == any(0, 1)",
    "[BODY][1].result == 0x1",
    "[BODY].a == [BODY].b",
    "[BODY].a < [BODY].b",
    "len([BODY]) > 0",
    "len([BODY].a) == 2",
    "has([BODY].a) == true",
    "[HEADER].X == pat(a*)",
    "[HEADER].X <= 5",
]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.sampled_from(["0x1", "0x10", "0x", "1", "ok"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "result", "0"]) | st.text(), children, max_size=4
        )
    ),
    max_leaves=12,
)
BODIES = st.binary(max_size=300) | JSON.map(msgspec.json.encode)
SECRETS = st.text(
    st.characters(codec="utf-8", exclude_characters="*…\ufffd"), min_size=1, max_size=12
)


@settings(max_examples=500)
@given(st.text())
def test_any_text_parses_or_raises_condition_error(text: str) -> None:
    for parse in (parse_condition, parse_observation):
        try:
            parse(text)
        except ConditionError as error:
            assert 0 <= error.position <= len(text)
            assert "\n" not in str(error)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(TOKENS), max_size=12).map("".join), BODIES)
def test_near_conditions_parse_and_check_safely(text: str, body: bytes) -> None:
    try:
        condition = parse_condition(text)
    except ConditionError as error:
        assert 0 <= error.position <= len(text)
        return
    verdict = condition.check(answer(body, headers={"x": "1"}))
    assert isinstance(verdict.held, bool) and len(verdict.seen) <= SEEN_LIMIT


@settings(max_examples=300)
@given(
    st.sampled_from(VALID),
    BODIES,
    st.none() | st.integers(100, 599),
    st.floats(allow_nan=False, min_value=0, max_value=1e9),
    st.dictionaries(st.sampled_from(["X", "x-y", "Content-Type"]), st.text(), max_size=3),
    st.none() | st.floats(allow_nan=False, allow_infinity=False),
)
def test_checks_never_raise(
    text: str,
    body: bytes,
    status: int | None,
    ms: float,
    headers: dict[str, str],
    cert: float | None,
) -> None:
    probe = answer(body, status=status, ms=ms, headers=headers, cert=cert)
    verdict = parse_condition(text).check(probe)
    assert isinstance(verdict.held, bool)
    assert len(verdict.seen) <= SEEN_LIMIT
    verdict.seen.encode()  # valid UTF-8
    for observed in ("[BODY]", "[BODY].a", "[BODY][0]", "len([BODY].a)", "[HEADER].X"):
        value = parse_observation(observed).extract(probe)
        assert value is None or isinstance(value, int | float | str | bool)


@settings(max_examples=300)
@given(
    st.sampled_from(["[BODY] == x", "[BODY].a == x", "[BODY].a > 1", "[HEADER].K == x"]),
    SECRETS,
    st.text(max_size=400),
    st.text(max_size=400),
)
def test_seen_never_shows_a_secret(text: str, secret: str, before: str, after: str) -> None:
    value = before + secret + after
    body = msgspec.json.encode({"a": value}) if ".a" in text else value.encode()
    probe = answer(body, headers={"K": value}, secrets=(secret,))
    seen = parse_condition(text).check(probe).seen
    assert secret not in seen
    assert len(seen) <= SEEN_LIMIT


def test_imports_nothing_from_cryptomon() -> None:
    # The config loader imports this module: it sits below config in the layers.
    import ast
    from pathlib import Path

    tree = ast.parse(Path(conditions.__file__).read_text())
    modules = [
        name
        for node in ast.walk(tree)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    assert modules and not [name for name in modules if name.split(".")[0] == "cryptomon"]
