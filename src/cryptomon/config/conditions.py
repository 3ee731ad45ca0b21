"""The condition language probes evaluate on a provider's answer, in Gatus's notation.

A condition compares two sides with one operator; at least one side reads the answer::

    [STATUS] == 200                         [STATUS] == any(200, 429)
    [RESPONSE_TIME] < 2s                    [CERTIFICATE_EXPIRATION] > 14d
    [BODY].result.status == online          [BODY][1].result == 0x1
    [BODY] == pat(*<h1>Example Domain</h1>*) len([BODY].data) > 0
    has([BODY].error) == false              [HEADER].Content-Type == pat(application/json*)

Placeholders (names are case-insensitive, paths are not):

- ``[STATUS]``: the HTTP status (unresolved when there was no answer).
- ``[RESPONSE_TIME]``: milliseconds.
- ``[CERTIFICATE_EXPIRATION]``: milliseconds until the TLS certificate expires
  (unresolved over plain HTTP).
- ``[BODY]``: the whole body as text (UTF-8, undecodable bytes replaced, whitespace trimmed).
- ``[BODY].a.b[0].c``, ``[BODY][0]``: a value in the JSON body. A key is any run of characters
  but ``. [ ] ( ) "``; an index is a non-negative integer (as in Gatus, no negative indices).
- ``[HEADER].Name``: a response header, its name case-insensitive.

Functions: ``len(p)`` (items of an array, keys of an object, characters of anything else;
``len([BODY])`` counts the items of a JSON array body, else the characters of the body),
``has(p)`` (``true`` when ``p`` resolves to a value that isn't JSON ``null``, as in Gatus),
``pat(...)`` (``*`` matches any run of characters; ``==`` and ``!=`` only) and
``any(a, b, ...)`` (``==`` any of them, ``!=`` none of them).

Values: bare text (trimmed; it may hold spaces) or ``"quoted"`` (``\\"`` and ``\\\\`` escape).
A quoted value is compared as text only. Numbers are decimal, float, or ``0x``/``0o``/``0b``
quantities; ``14d``, ``48h``, ``30m``, ``10s``, ``500ms`` (and sums such as ``1h30m``) are
milliseconds.

Semantics: ``==``/``!=`` compare numbers when both sides are numbers (a JSON string such as
``"0x1b4"`` or ``"1"`` counts), else text: JSON strings as they are, ``true``/``false``,
``null``, numbers as JSON writes them, arrays and objects as compact JSON. Ordering operators
need numbers on both sides. A side that does not resolve (a missing path, a body that isn't
JSON, a missing header, no certificate, no answer) fails the condition, whatever the
operator, except inside ``has()``.

Conditions are parsed once (``parse_condition``), then checked on every probe
(``Condition.check``) against an ``Answer``, which decodes the body's JSON at most once and
only if asked. What a check saw (``Verdict.seen``) is at most 200 characters, never holds a
secret and is always valid UTF-8.

This module imports nothing from cryptomon: the config loader, below which it sits, uses it.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, ClassVar, Final, NamedTuple

import msgspec

__all__ = [
    "SEEN_LIMIT",
    "Answer",
    "Condition",
    "ConditionError",
    "Observation",
    "Verdict",
    "parse_condition",
    "parse_observation",
]

SEEN_LIMIT: Final = 200  # characters of a seen text (and of an observed string)
_REDACTED: Final = "***"
_ELLIPSIS: Final = "…"
_NUMBER_CHARS: Final = 1000  # a longer string is never read as a number
_HEX_QUANTITY_DIGITS: Final = 64  # a longer "0x…" string is data, not a quantity (256 bits)
_INT_MIN: Final = -(2**63)  # observed ints outside what msgpack carries become floats
_INT_MAX: Final = 2**64 - 1

_OPERATORS_TEXT: Final = "(==, !=, <, <=, >, >=)"
_KNOWN_TEXT: Final = (
    "[STATUS], [RESPONSE_TIME], [BODY], [BODY].<path>, [HEADER].<name>, [CERTIFICATE_EXPIRATION]"
)
_GATUS_ONLY: Final = frozenset({"IP", "CONNECTED", "DNS_RCODE", "DOMAIN_EXPIRATION", "CONTEXT"})
_FUNCTIONS: Final = ("len", "has", "pat", "any")


# ---------------------------------------------------------------------------------------------
# Errors


class ConditionError(ValueError):
    """A condition that does not parse. `position` is the 0-based character offset in
    `expression` (the text as given); the message counts characters from 1."""

    expression: str
    position: int
    reason: str

    def __init__(self, expression: str, position: int, reason: str) -> None:
        self.expression = expression
        self.position = position
        self.reason = reason
        super().__init__(f"{reason} at character {position + 1} of '{_one_line(expression)}'")

    def __reduce__(self) -> tuple[type[ConditionError], tuple[str, int, str]]:
        return (ConditionError, (self.expression, self.position, self.reason))


_CONTROL_ESCAPES: Final = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F)},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def _one_line(text: str) -> str:
    return text.translate(_CONTROL_ESCAPES)


# ---------------------------------------------------------------------------------------------
# The answer a probe saw


class _Unresolved:
    """Why a placeholder has no value in this answer."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_NO_ANSWER: Final = _Unresolved("no answer")
_NO_CERTIFICATE: Final = _Unresolved("no certificate")
_MISSING: Final = _Unresolved("missing")
_NOT_JSON: Final = _Unresolved("body is not JSON")
_EMPTY_BODY: Final = _Unresolved("body is empty")
_NULL: Final = _Unresolved("null")
_UNREAD: Final[Any] = object()
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_ABSENT: Final[Any] = object()

_DECODER: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()


class Answer:
    """What one probe saw, built once per probe and shared by every condition and
    observation of that probe. The body's text, its JSON and the lower-cased headers are
    worked out on first use, once."""

    __slots__ = (
        "_document",
        "_headers_lower",
        "_longest_secret",
        "_text",
        "body",
        "certificate_expires_in_ms",
        "headers",
        "response_time_ms",
        "secrets",
        "status",
    )

    def __init__(
        self,
        *,
        status: int | None,
        response_time_ms: float,
        headers: Mapping[str, str],
        body: bytes,
        certificate_expires_in_ms: float | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.status = status
        self.response_time_ms = response_time_ms
        self.headers = headers
        self.body = body
        self.certificate_expires_in_ms = certificate_expires_in_ms
        # Longest first, so a secret that contains another is redacted whole.
        self.secrets: tuple[str, ...] = tuple(
            sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        )
        self._longest_secret = len(self.secrets[0]) if self.secrets else 0
        self._document: Any = _UNREAD
        self._text: str | None = None
        self._headers_lower: dict[str, str] | None = None

    @property
    def text(self) -> str:
        """The body as text: UTF-8 with undecodable bytes replaced, whitespace trimmed."""
        text = self._text
        if text is None:
            text = self._text = bytes(self.body).decode("utf-8", "replace").strip()
        return text

    @property
    def json(self) -> Any:
        """The body's JSON document, or None when the body isn't JSON (or is `null`)."""
        document = self.document()
        return None if isinstance(document, _Unresolved) else document

    def document(self) -> Any:
        """The body's JSON document, or an `_Unresolved` saying why there is none."""
        document = self._document
        if document is _UNREAD:
            document = self._document = self._decode()
        return document

    def replace_document(self, document: Any) -> None:
        """Judge `document` as the body's JSON from now on (the prober puts a JSON-RPC
        batch's replies back in call order, as they may arrive in any)."""
        self._document = document

    def _decode(self) -> Any:
        body = self.body
        if not body or body.isspace():
            return _EMPTY_BODY
        try:
            return _DECODER.decode(body)
        except (msgspec.DecodeError, RecursionError, ValueError):
            return _NOT_JSON

    def header(self, name: str) -> str | None:
        """A response header's value (the first, if repeated), its name case-insensitive."""
        lowered = self._headers_lower
        if lowered is None:
            lowered = {}
            for key, value in self.headers.items():
                lowered.setdefault(key.lower(), value)
            self._headers_lower = lowered
        return lowered.get(name.lower())

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by ***."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def safe_text(self, text: str, suffix: str = "", limit: int = SEEN_LIMIT) -> str:
        """`text` + `suffix` as a seen text may show it: secrets redacted, cut to at most
        `limit` characters (… marks a cut), valid UTF-8."""
        total = limit
        limit -= len(suffix)
        if self.secrets:
            text = self._redact_head(text, limit)
        if len(text) > limit:
            text = text[: limit - 1] + _ELLIPSIS
        text += suffix
        if suffix and self.secrets:
            # A secret may be as plain as a word of the suffix.
            text = self.redact(text)
            if len(text) > total:
                text = text[: total - 1] + _ELLIPSIS
        if not text.isascii():
            # Header values may carry surrogate escapes, which no JSON encoder accepts.
            text = _SURROGATE.sub("\ufffd", text)
        return text

    def _redact_head(self, text: str, limit: int) -> str:
        """The redacted text, worked out only as far as its first `limit` characters need."""
        need = limit + self._longest_secret
        if len(text) <= need:
            return self.redact(text)
        window = need
        while True:
            head = self.redact(text[:window])
            # Every secret overlapping the shown part lies wholly inside the window.
            if len(head) >= need or window >= len(text):
                return head
            window *= 2


class Verdict(NamedTuple):
    """Whether a condition held, and what its placeholder side(s) resolved to."""

    held: bool
    seen: str


def _verdict(held: bool, seen: str) -> Verdict:
    # NamedTuple's own __new__ is Python code; the tuple's is not (a third of a check's time).
    return _tuple_new(Verdict, (held, seen))


_tuple_new: Final[Callable[[type[Verdict], tuple[bool, str]], Verdict]] = tuple.__new__


# ---------------------------------------------------------------------------------------------
# Values as text and as numbers

_FLOAT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NUMBER_START: Final = frozenset("+-.0123456789")
_HEX_QUANTITY: Final = re.compile(rf"0[xX][0-9a-fA-F]{{1,{_HEX_QUANTITY_DIGITS}}}")


_RADIX_BASES: Final = {"x": 16, "X": 16, "o": 8, "O": 8, "b": 2, "B": 2}


def _parse_number(text: str) -> int | float | None:
    """A decimal, 0x/0o/0b or float number written in `text`, else None (str methods first:
    this runs on every check of a JSON string against a number)."""
    if not text or len(text) > _NUMBER_CHARS or text[0] not in _NUMBER_START:
        return None
    if not text.isascii():
        return None
    if text.isdigit():
        return int(text)
    digits = text[1:] if text[0] in "+-" else text
    if len(digits) > 2 and digits[0] == "0" and digits[1] in _RADIX_BASES:
        # isalnum() leaves out the "_", spaces and signs int() would accept.
        if not digits[2:].isalnum():
            return None
        try:
            value = int(digits[2:], _RADIX_BASES[digits[1]])
        except ValueError:
            return None
        return -value if text[0] == "-" else value
    if digits.isdigit():
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return None


def _number(value: object) -> int | float | None:
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[return-value]
    if kind is str:
        return _parse_number(value)  # type: ignore[arg-type]
    return None


def _text(value: object) -> str:
    """A resolved value as text: JSON strings as they are, other JSON as JSON writes it."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if kind is int:
        return str(value)
    if kind is float:
        return repr(value)
    try:
        return _ENCODER.encode(value).decode()
    except (msgspec.EncodeError, RecursionError, TypeError, ValueError):
        return f"({type(value).__name__})"


def _ms_text(value: float) -> str:
    if type(value) is int:
        return str(value)
    if not math.isfinite(value):
        return repr(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _duration_text(ms: float) -> str:
    """Milliseconds as days, hours, minutes and seconds: 13d23h59m59s."""
    if not math.isfinite(ms):
        return repr(ms)
    sign = "-" if ms < 0 else ""
    seconds = int(abs(ms) // 1000)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + ("".join(parts) or "0s")


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


_DURATION: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h|d))+")
_DURATION_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_MS: Final = {
    "ns": Fraction(1, 1_000_000),
    "us": Fraction(1, 1000),
    "µs": Fraction(1, 1000),
    "ms": Fraction(1),
    "s": Fraction(1000),
    "m": Fraction(60_000),
    "h": Fraction(3_600_000),
    "d": Fraction(86_400_000),
}


def _parse_duration(text: str) -> int | float | None:
    """`14d`, `1h30m`, `500ms` as milliseconds, else None."""
    if len(text) > 100 or not _DURATION.fullmatch(text):
        return None
    total = sum(
        (Fraction(amount) * _UNIT_MS[unit] for amount, unit in _DURATION_PART.findall(text)),
        Fraction(0),
    )
    return int(total) if total.denominator == 1 else float(total)


# ---------------------------------------------------------------------------------------------
# Operands


class _Placeholder:
    """A side that reads the answer."""

    __slots__ = ("label",)
    numeric: ClassVar[bool] = False  # always resolves to a number
    reads_status: ClassVar[bool] = False

    def __init__(self, label: str) -> None:
        self.label = label

    def resolve(self, answer: Answer) -> object:
        raise NotImplementedError

    def text(self, value: object) -> str:
        return _text(value)

    def describe(self, value: object) -> str:
        return self.text(value)


class _Status(_Placeholder):
    __slots__ = ()
    numeric = True
    reads_status = True

    def resolve(self, answer: Answer) -> object:
        status = answer.status
        return _NO_ANSWER if status is None else status


class _ResponseTime(_Placeholder):
    __slots__ = ()
    numeric = True

    def resolve(self, answer: Answer) -> object:
        return answer.response_time_ms

    def text(self, value: object) -> str:
        return _ms_text(value)  # type: ignore[arg-type]


class _Certificate(_Placeholder):
    __slots__ = ()
    numeric = True

    def resolve(self, answer: Answer) -> object:
        expires = answer.certificate_expires_in_ms
        return _NO_CERTIFICATE if expires is None else expires

    def text(self, value: object) -> str:
        return _ms_text(value)  # type: ignore[arg-type]

    def describe(self, value: object) -> str:
        return f"{_ms_text(value)} ({_duration_text(value)})"  # type: ignore[arg-type]


class _Body(_Placeholder):
    __slots__ = ()

    def resolve(self, answer: Answer) -> object:
        return answer.text


class _BodyPath(_Placeholder):
    """[BODY] followed by .key and [index] steps; each step carries the label of the path
    before it, for saying where a walk stopped."""

    __slots__ = ("steps",)

    def __init__(self, label: str, steps: tuple[tuple[str | int, str], ...]) -> None:
        super().__init__(label)
        self.steps = steps

    def resolve(self, answer: Answer) -> object:
        current = answer.document()
        if isinstance(current, _Unresolved):
            return current
        for step, before in self.steps:
            if type(step) is int:
                if type(current) is list:
                    if step < len(current):
                        current = current[step]
                        continue
                    count = len(current)
                    return _Unresolved(f"missing ({before} has {count} item{'s' * (count != 1)})")
            elif type(current) is dict:
                current = current.get(step, _ABSENT)
                if current is _ABSENT:
                    return _MISSING
                continue
            return _Unresolved(f"missing ({before} is {_kind(current)})")
        return current


class _Header(_Placeholder):
    __slots__ = ("name",)

    def __init__(self, label: str, name: str) -> None:
        super().__init__(label)
        self.name = name.lower()

    def resolve(self, answer: Answer) -> object:
        value = answer.header(self.name)
        return _MISSING if value is None else value


class _Len(_Placeholder):
    __slots__ = ("inner",)
    numeric = True

    def __init__(self, inner: _Placeholder) -> None:
        super().__init__(f"len({inner.label})")
        self.inner = inner

    @property
    def reads_status(self) -> bool:  # type: ignore[override]
        return self.inner.reads_status

    def resolve(self, answer: Answer) -> object:
        inner = self.inner
        value = inner.resolve(answer)
        if isinstance(value, _Unresolved):
            return value
        if type(inner) is _Body:
            # As Gatus: a JSON array body counts its items, any other body its characters.
            if answer.text.startswith("["):
                document = answer.document()
                if type(document) is list:
                    return len(document)
            return len(value)  # type: ignore[arg-type]
        if isinstance(value, str | list | dict):
            return len(value)
        if value is None:
            return _NULL
        return len(inner.text(value))


class _Has(_Placeholder):
    __slots__ = ("inner",)

    def __init__(self, inner: _Placeholder) -> None:
        super().__init__(f"has({inner.label})")
        self.inner = inner

    @property
    def reads_status(self) -> bool:  # type: ignore[override]
        return self.inner.reads_status

    def resolve(self, answer: Answer) -> object:
        value = self.inner.resolve(answer)
        if isinstance(value, _Unresolved) or value is None:
            return False
        if type(self.inner) is _Body:
            return bool(value)
        return True


class _Literal:
    """A constant side. A quoted one compares as text only (`eq_number` is None)."""

    __slots__ = ("eq_number", "number", "position", "quoted", "text")

    def __init__(self, text: str, position: int, *, quoted: bool) -> None:
        self.text = text
        self.position = position
        self.quoted = quoted
        number = _parse_number(text)
        if number is None:
            number = _parse_duration(text)
        self.number = number
        self.eq_number = None if quoted else number


class _Pattern:
    """pat(...): `*` matches any run of characters, the rest matches itself."""

    __slots__ = ("parts", "position", "text")

    def __init__(self, text: str, position: int) -> None:
        self.text = text
        self.position = position
        self.parts = tuple(text.split("*"))

    def match(self, value: str) -> bool:
        parts = self.parts
        if len(parts) == 1:
            return value == parts[0]
        first, last = parts[0], parts[-1]
        if (
            len(value) < len(first) + len(last)
            or not value.startswith(first)
            or not value.endswith(last)
        ):
            return False
        position, limit = len(first), len(value) - len(last)
        for part in parts[1:-1]:
            if part:
                found = value.find(part, position, limit)
                if found < 0:
                    return False
                position = found + len(part)
        return True


class _AnyOf:
    """any(a, b, ...): equal (as == is) to one of the values."""

    __slots__ = ("items", "numbers", "position", "texts")

    def __init__(self, items: tuple[_Literal, ...], position: int) -> None:
        self.items = items
        self.position = position
        self.texts = frozenset(item.text for item in items)
        self.numbers = frozenset(item.eq_number for item in items if item.eq_number is not None)

    def holds_for(self, text: str, value: object) -> bool:
        if text in self.texts:
            return True
        if self.numbers:
            number = _number(value)
            return number is not None and number in self.numbers
        return False


_Constant = _Literal | _Pattern | _AnyOf
_Operand = _Placeholder | _Constant


# ---------------------------------------------------------------------------------------------
# Conditions

_COMPARE: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_FLIPPED: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NOT_A_NUMBER: Final = " (not a number)"
_HALF_SEEN: Final = (SEEN_LIMIT - 2) // 2  # each side of "a: 1; b: 2"


class Condition:
    """A parsed condition. `check` is cheap: nothing is parsed or compiled per answer.

    The placeholder side is always `_first` (a literal on the left is moved to the right,
    the operator flipped); `_second` is a second placeholder, or one of `_literal`,
    `_pattern` and `_any_of` is the constant side.
    """

    __slots__ = (
        "_any_of",
        "_compare",
        "_first",
        "_literal",
        "_negated",
        "_pattern",
        "_second",
        "text",
        "uses_status",
    )

    def __init__(self, text: str, first: _Placeholder, operator_: str, other: _Operand) -> None:
        self.text = text
        self._first = first
        self._second = other if isinstance(other, _Placeholder) else None
        self._literal = other if isinstance(other, _Literal) else None
        self._pattern = other if isinstance(other, _Pattern) else None
        self._any_of = other if isinstance(other, _AnyOf) else None
        self._negated = operator_ == "!="
        self._compare = _COMPARE.get(operator_)
        self.uses_status = first.reads_status or (
            self._second is not None and self._second.reads_status
        )

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"

    def check(self, answer: Answer) -> Verdict:
        first = self._first
        value = first.resolve(answer)
        if isinstance(value, _Unresolved):
            return _verdict(False, answer.safe_text(f"{first.label}: {value.reason}"))
        second = self._second
        if second is not None:
            return self._against_placeholder(answer, first, value, second)
        literal = self._literal
        compare = self._compare
        if literal is not None:
            if compare is not None:
                number = _number(value)
                if number is None:
                    return _verdict(False, answer.safe_text(first.describe(value), _NOT_A_NUMBER))
                return _verdict(
                    compare(number, literal.number), answer.safe_text(first.describe(value))
                )
            if value.__class__ is str and value == literal.text:
                held = True  # the same text is the same number too (the usual success)
            else:
                expected = literal.eq_number
                number = None if expected is None else _number(value)
                held = (
                    number == expected if number is not None else first.text(value) == literal.text
                )
        elif self._pattern is not None:
            held = self._pattern.match(first.text(value))
        else:
            any_of = self._any_of
            assert any_of is not None
            held = any_of.holds_for(first.text(value), value)
        return _verdict(held != self._negated, answer.safe_text(first.describe(value)))

    def _against_placeholder(
        self, answer: Answer, first: _Placeholder, value: object, second: _Placeholder
    ) -> Verdict:
        other = second.resolve(answer)
        if isinstance(other, _Unresolved):
            return _verdict(False, answer.safe_text(f"{second.label}: {other.reason}"))
        left, right = _number(value), _number(other)
        left_suffix = right_suffix = ""
        compare = self._compare
        if compare is not None:
            if left is None or right is None:
                left_suffix = _NOT_A_NUMBER if left is None else ""
                right_suffix = _NOT_A_NUMBER if right is None else ""
                held = False
            else:
                held = compare(left, right)
        else:
            if left is not None and right is not None:
                held = left == right
            else:
                held = first.text(value) == second.text(other)
            held = held != self._negated
        # Each side gets half the room, so a long first value can't hide the second.
        seen_left = answer.safe_text(
            f"{first.label}: {first.describe(value)}", left_suffix, _HALF_SEEN
        )
        seen_right = answer.safe_text(
            f"{second.label}: {second.describe(other)}", right_suffix, _HALF_SEEN
        )
        return _verdict(held, answer.safe_text(f"{seen_left}; {seen_right}"))


def parse_condition(text: str) -> Condition:
    """Parse a condition once, when the config loads; raises ConditionError."""
    return _Parser(text).condition()


class Observation:
    """A value a probe extracts from its answer: one placeholder, len(...) or has(...)."""

    __slots__ = ("_placeholder", "text")

    def __init__(self, text: str, placeholder: _Placeholder) -> None:
        self.text = text
        self._placeholder = placeholder

    def __repr__(self) -> str:
        return f"Observation({self.text!r})"

    def extract(self, answer: Answer) -> int | float | str | bool | None:
        """The value, or None when it doesn't resolve (or is null, an array or an object).

        `[BODY]` is the body's JSON value when the body is JSON, else its text. A JSON
        string that is a hex quantity ("0x1b4") becomes an int; strings are cut to
        SEEN_LIMIT characters with secrets redacted; an int outside 64 bits becomes a
        float; a number that isn't finite becomes None.
        """
        placeholder = self._placeholder
        from_json = type(placeholder) is _BodyPath
        if type(placeholder) is _Body and not isinstance(answer.document(), _Unresolved):
            # A body that is one JSON value (a plain-text tip height "870000" is) is that value.
            value: object = answer.document()
            from_json = True
        else:
            value = placeholder.resolve(answer)
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return _bounded_int(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, str):
            if from_json and _HEX_QUANTITY.fullmatch(value):
                return _bounded_int(int(value, 16))
            return answer.safe_text(value)
        return None


def _bounded_int(value: int) -> int | float:
    return value if _INT_MIN <= value <= _INT_MAX else float(value)


def parse_observation(text: str) -> Observation:
    """Parse an observation once, when the config loads; raises ConditionError."""
    return _Parser(text).observation()


# ---------------------------------------------------------------------------------------------
# The parser

_FUNCTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\(")
_INDEX: Final = re.compile(r"[0-9]+")
_NEGATIVE_INDEX: Final = re.compile(r"\s*-\s*[0-9]+\s*")
_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9!#$%&'*+^_`|~-]+")
_KEY_STOP: Final = frozenset('.[]()"')
_OPENERS: Final = {"(": ")", "[": "]"}


class _Parser:
    """One expression's parse. Positions are offsets in the text as given."""

    def __init__(self, text: str) -> None:
        self.source = text
        self.start = len(text) - len(text.lstrip())
        self.end = len(text.rstrip())
        self.closers: dict[int, int] = {}  # opening ( or [ -> its closing ) or ]

    def fail(self, position: int, reason: str) -> ConditionError:
        return ConditionError(self.source, position, reason)

    def condition(self) -> Condition:
        if self.start >= self.end:
            raise self.fail(0, "an empty condition")
        operators, lone_equals = self.scan()
        if not operators:
            if lone_equals is not None:
                raise self.fail(lone_equals, f"expected an operator {_OPERATORS_TEXT}, not '='")
            raise self.fail(self.end, f"expected an operator {_OPERATORS_TEXT}")
        if len(operators) > 1:
            symbol, position = operators[1]
            raise self.fail(
                position,
                f"a second operator '{symbol}' (a condition has one; quote a value holding it)",
            )
        symbol, at = operators[0]
        if self.strip(self.start, at)[0] == at:
            raise self.fail(at, f"nothing before '{symbol}'")
        if self.strip(at + len(symbol), self.end)[0] == self.end:
            raise self.fail(self.end, f"nothing after '{symbol}'")
        left = self.operand(self.start, at)
        right = self.operand(at + len(symbol), self.end)
        text = self.source[self.start : self.end]
        if isinstance(left, _Placeholder):
            self.validate(left, symbol, right)
            return Condition(text, left, symbol, right)
        if isinstance(right, _Placeholder):
            self.validate(right, _FLIPPED[symbol], left)
            return Condition(text, right, _FLIPPED[symbol], left)
        raise self.fail(self.start, "compares two constants (one side must be a placeholder)")

    def observation(self) -> Observation:
        if self.start >= self.end:
            raise self.fail(0, "an empty observation")
        operators, _ = self.scan()
        if operators:
            symbol, position = operators[0]
            raise self.fail(
                position, f"an observation is one placeholder, not a comparison ('{symbol}')"
            )
        operand = self.operand(self.start, self.end)
        if not isinstance(operand, _Placeholder):
            position = getattr(operand, "position", self.start)
            raise self.fail(
                position, "an observation is a placeholder, as in [BODY].result or len([BODY])"
            )
        return Observation(self.source[self.start : self.end], operand)

    # --- the whole text: brackets, quotes and operators at the top level

    def scan(self) -> tuple[list[tuple[str, int]], int | None]:
        text, end = self.source, self.end
        operators: list[tuple[str, int]] = []
        lone_equals: int | None = None
        open_stack: list[int] = []
        i = self.start
        while i < end:
            char = text[i]
            if char == '"':
                i = self.quote_end(i, end) + 1
                continue
            if char in _OPENERS:
                open_stack.append(i)
            elif char == ")" or char == "]":
                if open_stack:
                    opener = open_stack[-1]
                    if _OPENERS[text[opener]] != char:
                        raise self.fail(opener, f"unclosed '{text[opener]}' (found '{char}')")
                    open_stack.pop()
                    self.closers[opener] = i
                # A stray closer at the top level is text (or fails as an operand later).
            elif not open_stack and char in "=!<>":
                after = text[i + 1] if i + 1 < end else ""
                if after == "=":
                    symbol = char + "="
                    if symbol in ("==", "!=") and text[i + 2 : i + 3] == "=":
                        raise self.fail(i, f"unknown operator '{symbol}='")
                elif char in "<>":
                    symbol = char
                else:
                    if char == "=" and lone_equals is None:
                        lone_equals = i
                    i += 1
                    continue
                operators.append((symbol, i))
                i += len(symbol)
                continue
            i += 1
        if open_stack:
            opener = open_stack[-1]
            raise self.fail(opener, f"unclosed '{text[opener]}'")
        return operators, lone_equals

    def quote_end(self, start: int, end: int) -> int:
        """The closing quote of the quote opening at `start`."""
        text = self.source
        i = start + 1
        while i < end:
            char = text[i]
            if char == "\\":
                i += 2
                continue
            if char == '"':
                return i
            i += 1
        raise self.fail(start, "unclosed '\"'")

    def strip(self, start: int, end: int) -> tuple[int, int]:
        text = self.source
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        return start, end

    def unquote(self, start: int, end: int) -> str:
        """The quoted value text[start:end] (quotes included) without quotes and escapes."""
        chars: list[str] = []
        text = self.source
        i = start + 1
        while i < end - 1:
            char = text[i]
            if char == "\\" and i + 1 < end - 1 and text[i + 1] in '"\\':
                i += 1
                char = text[i]
            chars.append(char)
            i += 1
        return "".join(chars)

    # --- one side

    def operand(self, start: int, end: int) -> _Operand:
        start, end = self.strip(start, end)
        text = self.source
        char = text[start]
        if char == '"':
            closing = self.quote_end(start, end)
            if closing + 1 != end:
                after = self.strip(closing + 1, end)[0]
                raise self.fail(after, "unexpected text after a quoted value")
            return _Literal(self.unquote(start, end), start, quoted=True)
        if char == "[":
            return self.placeholder(start, end)
        function = _FUNCTION_NAME.match(text, start, end)
        if function is not None:
            return self.function(function.group()[:-1], start, function.end() - 1, end)
        return _Literal(text[start:end], start, quoted=False)

    def function(self, name: str, start: int, paren: int, end: int) -> _Operand:
        if name not in _FUNCTIONS:
            raise self.fail(start, f"unknown function '{name}' (known: len, has, pat, any)")
        closing = self.closers[paren]
        if closing + 1 != end:
            after = self.strip(closing + 1, end)[0]
            raise self.fail(after, f"unexpected text after {name}(...)")
        inner_start, inner_end = self.strip(paren + 1, closing)
        if name in ("len", "has"):
            if inner_start == inner_end or self.source[inner_start] != "[":
                raise self.fail(
                    inner_start, f"{name}() takes a placeholder, as in {name}([BODY].data)"
                )
            inner = self.placeholder(inner_start, inner_end)
            return _Len(inner) if name == "len" else _Has(inner)
        if name == "pat":
            pattern = self.constant(inner_start, inner_end, "pat()")
            return _Pattern(pattern.text, start)
        items = tuple(
            self.constant(item_start, item_end, "any()")
            for item_start, item_end in self.items(inner_start, inner_end)
        )
        return _AnyOf(items, start)

    def constant(self, start: int, end: int, where: str) -> _Literal:
        """A value inside pat() or any(): quoted, or bare text; never a placeholder."""
        text = self.source
        if start < end and text[start] == '"' and self.quote_end(start, end) == end - 1:
            return _Literal(self.unquote(start, end), start, quoted=True)
        value = text[start:end]
        if value.startswith("["):
            name = value[1:].partition("]")[0].upper()
            if name in _PLACEHOLDERS or name in _GATUS_ONLY:
                what = "a pattern" if where == "pat()" else "values"
                raise self.fail(
                    start,
                    f"{where} takes {what}, not a placeholder (put the placeholder on the "
                    "other side of the operator)",
                )
        return _Literal(value, start, quoted=False)

    def items(self, start: int, end: int) -> list[tuple[int, int]]:
        """The comma-separated values of any(), each stripped."""
        if start == end:
            raise self.fail(start, "any() needs at least one value")
        text = self.source
        spans: list[tuple[int, int]] = []
        item_start, depth, i = start, 0, start
        while i <= end:
            char = text[i] if i < end else ","
            if char == '"' and i < end:
                i = self.quote_end(i, end) + 1
                continue
            if char in "([":
                depth += 1
            elif char in ")]":
                depth = max(0, depth - 1)
            elif char == "," and depth == 0:
                span = self.strip(item_start, i)
                if span[0] == span[1]:
                    raise self.fail(span[0], "an empty value in any()")
                spans.append(span)
                item_start = i + 1
            i += 1
        return spans

    def placeholder(self, start: int, end: int) -> _Placeholder:
        text = self.source
        closing = self.closers[start]
        raw_name = text[start + 1 : closing]
        name = raw_name.upper()
        kind = _PLACEHOLDERS.get(name)
        if kind is None:
            shown = raw_name if len(raw_name) <= 40 else raw_name[:39] + _ELLIPSIS
            if name in _GATUS_ONLY:
                reason = f"[{shown}] is a Gatus placeholder cryptomon does not have"
            else:
                reason = f"unknown placeholder [{shown}]"
            raise self.fail(start, f"{reason} (known: {_KNOWN_TEXT})")
        label = f"[{name}]"
        rest = closing + 1
        if kind is _Body:
            return self.body_path(label, rest, end) if rest < end else _Body(label)
        if kind is _Header:
            header = _HEADER_NAME.match(text, rest + 1, end)
            if text[rest : rest + 1] != "." or header is None or header.end() != end:
                position = header.end() if header is not None else min(rest + 1, end)
                if text[rest : rest + 1] != ".":
                    position = rest
                raise self.fail(position, "expected a header name, as in [HEADER].Content-Type")
            return _Header(f"{label}.{header.group()}", header.group())
        if rest < end:
            raise self.fail(rest, f"unexpected text after {label} (it takes no path)")
        return kind(label)

    def body_path(self, label: str, start: int, end: int) -> _BodyPath:
        text = self.source
        steps: list[tuple[str | int, str]] = []
        i = start
        while i < end:
            char = text[i]
            if char == ".":
                j = i + 1
                while j < end and text[j] not in _KEY_STOP:
                    j += 1
                key = text[i + 1 : j]
                if not key or key != key.strip():
                    raise self.fail(i + 1, "expected a key after '.'")
                steps.append((key, label))
                label += "." + key
                i = j
            elif char == "[":
                closing = self.closers[i]
                inner = text[i + 1 : closing]
                if not _INDEX.fullmatch(inner):
                    reason = "expected an array index (0, 1, 2, ...)"
                    if _NEGATIVE_INDEX.fullmatch(inner):
                        reason += ": negative indices are not supported"
                    raise self.fail(i + 1, reason)
                index = int(inner)
                steps.append((index, label))
                label += f"[{index}]"
                i = closing + 1
            else:
                raise self.fail(i, f"unexpected {char!r} in a [BODY] path (expected .key or [N])")
        return _BodyPath(label, tuple(steps))

    # --- both sides together

    def validate(self, placeholder: _Placeholder, symbol: str, other: _Operand) -> None:
        """Mistakes that are plain from the text: comparisons that can never hold."""
        ordering = symbol in _COMPARE
        if isinstance(other, _Pattern | _AnyOf):
            name = "pat()" if isinstance(other, _Pattern) else "any()"
            if ordering:
                raise self.fail(other.position, f"{name} works only with == and !=")
            return
        if isinstance(other, _Placeholder):
            for side in (placeholder, other):
                if ordering and isinstance(side, _Has):
                    raise self.fail(self.start, "has() is true or false: compare it with == or !=")
            return
        if isinstance(placeholder, _Has):
            if ordering:
                raise self.fail(self.start, "has() is true or false: compare it with == or !=")
            if other.text not in ("true", "false"):
                raise self.fail(
                    other.position, "has() is true or false: compare it with true or false"
                )
            return
        if other.number is None:
            if ordering:
                raise self.fail(
                    other.position,
                    f"'{symbol}' compares numbers: {other.text!r} is neither a number nor a "
                    "duration",
                )
            if placeholder.numeric and not other.quoted:
                raise self.fail(
                    other.position,
                    f"{placeholder.label} is a number: {other.text!r} is neither a number nor "
                    "a duration",
                )


_PLACEHOLDERS: Final[dict[str, type[_Placeholder]]] = {
    "STATUS": _Status,
    "RESPONSE_TIME": _ResponseTime,
    "CERTIFICATE_EXPIRATION": _Certificate,
    "BODY": _Body,
    "HEADER": _Header,
}
