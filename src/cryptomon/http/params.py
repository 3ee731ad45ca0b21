"""Query and path parameters, declared once and validated: a bad value is an
`InvalidParameter` naming the parameter and what was expected.

A route's `Param`s in the route table are read by `read` before its handler
runs; the handler finds the parsed values in `request[ARGUMENTS]`."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

from aiohttp import web

from cryptomon.http.errors import InvalidParameter
from cryptomon.http.keys import ARGUMENTS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Value = float | int | bool | str | None


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "query", "path" or "header" (a header's value is the handler's to check)
    type: str  # JSON schema type
    description: str
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None  # strings are 1 to max_length characters
    default: float | None = None  # a number's value when the query does not give it
    # A path id's noun: "alert" answers "alert ids are whole numbers" and "no alert has id 7".
    noun: str | None = None
    required: bool = False  # a path parameter always is
    # A moment: unix seconds or an RFC 3339 time (ISO 8601 with an offset), read as seconds.
    moment: bool = False
    # A text's whole value must match this regular expression (with `max_length`), and
    # what it must look like, for the message when it does not ("lower-case letters...").
    pattern: str | None = None
    pattern_description: str = ""

    def schema(self) -> dict[str, Any]:
        """Its JSON schema, as the OpenAPI document gives it."""
        if self.moment:
            return {
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": LAST_MOMENT},
                    {"type": "string", "format": "date-time"},
                ]
            }
        schema: dict[str, Any] = {"type": self.type}
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.max_length is not None:
            schema["minLength"] = 1
            schema["maxLength"] = self.max_length
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$"
        return schema


# The last second of the year 9999 (UTC): no later moment can be written back.
LAST_MOMENT = 253_402_300_799
_SECONDS = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_RFC_3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


class Arguments:
    """A route's parameters as its declaration parsed them."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Value]) -> None:
        self._values = values

    def number(self, name: str) -> float:
        return cast(float, self._values[name])

    def integer(self, name: str) -> int:
        return cast(int, self._values[name])

    def boolean(self, name: str) -> bool | None:
        return cast(bool | None, self._values[name])

    def text(self, name: str) -> str | None:
        return cast(str | None, self._values[name])

    def moment(self, name: str) -> float | None:
        return cast(float | None, self._values[name])

    def path(self, name: str) -> str:
        return cast(str, self._values[name])


def read(request: web.Request, declared: tuple[Param, ...]) -> Arguments:
    """Every declared parameter, parsed and checked in the order declared."""
    values = {param.name: _parse(request, param) for param in declared}
    # A text with both a length and an enum: its length is checked in turn with the
    # others, its value once all are read (so of several bad ones, the same is named).
    for param in declared:
        value = values[param.name]
        if param.enum and param.max_length is not None and isinstance(value, str):
            _one_of(param.name, value, param.enum)
    return Arguments(values)


def parsed(handler: Handler, declared: tuple[Param, ...]) -> Handler:
    """`handler`, run with its parameters read into `request[ARGUMENTS]`."""

    @functools.wraps(handler)
    async def with_arguments(request: web.Request) -> web.StreamResponse:
        request[ARGUMENTS] = read(request, declared)
        return await handler(request)

    return with_arguments


def _parse(request: web.Request, param: Param) -> Value:
    name = param.name
    if param.where == "header":
        return request.headers.get(name)
    if param.where == "path":
        given = request.match_info[name]
        if param.enum:
            return _one_of(name, given, param.enum)
        if param.type == "integer":
            return _path_id(param, given)
        return given
    if param.type in ("number", "integer"):
        assert param.minimum is not None and param.maximum is not None
        default = param.default if param.default is not None else 0
        if param.type == "number":
            return number(request, name, default, low=param.minimum, high=param.maximum)
        return integer(request, name, int(default), low=int(param.minimum), high=int(param.maximum))
    if param.type == "boolean":
        return boolean(request, name)
    if param.moment:
        return moment(request, name)
    if param.max_length is not None:
        value = text(request, name, max_length=param.max_length)
        if value is not None and param.pattern is not None:
            _matching(param, value)
        return value
    if param.enum:
        return choice(request, name, param.enum)
    return _raw(request, name)


def _path_id(param: Param, given: str) -> int:
    assert param.noun is not None and param.minimum is not None and param.maximum is not None
    try:
        value = int(given)
    except ValueError:
        raise InvalidParameter(
            param.name, f"{param.noun} ids are whole numbers, not {given[:40]!r}"
        ) from None
    if not param.minimum <= value <= param.maximum:
        raise InvalidParameter(param.name, f"no {param.noun} has id {value}")
    return value


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _matching(param: Param, given: str) -> None:
    assert param.pattern is not None
    if _compiled(param.pattern).fullmatch(given) is None:
        raise InvalidParameter(
            param.name,
            f"{param.name} must be {param.pattern_description or 'like ' + param.pattern};"
            f" not {given[:40]!r}",
        )


def _one_of(name: str, given: str, allowed: tuple[str, ...]) -> str:
    if given not in allowed:
        raise InvalidParameter(
            name, f"{name} must be one of {', '.join(allowed)}; not {given[:40]!r}"
        )
    return given


def _raw(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise InvalidParameter(name, f"{name} was given {len(values)} times; give it once")
    return values[0] if values else None


def number(request: web.Request, name: str, default: float, *, low: float, high: float) -> float:
    text = _raw(request, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise InvalidParameter(name, f"{name} must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidParameter(
            name, f"{name} must be between {low:g} and {high:g}, not {text[:40]!r}"
        )
    return value


def integer(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    text = _raw(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameter(name, f"{name} must be a whole number, not {text[:40]!r}") from None
    if not low <= value <= high:
        raise InvalidParameter(name, f"{name} must be between {low} and {high}, not {value}")
    return value


def boolean(request: web.Request, name: str) -> bool | None:
    text = _raw(request, name)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidParameter(name, f"{name} must be true or false, not {text[:40]!r}")


def choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    text = _raw(request, name)
    return None if text is None else _one_of(name, text, allowed)


def moment(request: web.Request, name: str) -> float | None:
    """Unix seconds, or an RFC 3339 time such as 2026-11-25T10:00:00Z (an offset is
    required), as unix seconds; None when the query does not give it."""
    given = _raw(request, name)
    if given is None:
        return None
    expected = f"{name} must be unix seconds or an ISO 8601 time like 2026-11-25T10:00:00Z"
    if _SECONDS.fullmatch(given):
        seconds = float(given)
        if not 0 <= seconds <= LAST_MOMENT:
            raise InvalidParameter(
                name, f"{name} must be between 0 and {LAST_MOMENT} unix seconds, not {given[:40]!r}"
            )
        return seconds
    match = _RFC_3339.fullmatch(given)
    if match is None:
        raise InvalidParameter(name, f"{expected}, not {given[:40]!r}")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction = float(match[7]) if match[7] else 0.0
    try:
        if match[8]:
            zone = UTC
        else:
            offset = timedelta(hours=int(match[10]), minutes=int(match[11]))
            zone = timezone(-offset if match[9] == "-" else offset)
        # A leap second (:60) is the first moment of the next minute.
        leap = second == 60
        at = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=zone)
    except ValueError:
        raise InvalidParameter(name, f"{expected}; {given[:40]!r} is no such time") from None
    return at.timestamp() + fraction + (1 if leap else 0)


def text(request: web.Request, name: str, *, max_length: int = 200) -> str | None:
    value = _raw(request, name)
    if value is not None and (not value or len(value) > max_length):
        raise InvalidParameter(name, f"{name} must be 1 to {max_length} characters")
    return value
