"""Query and path parameters, validated: a bad value is an `InvalidParameter`
naming the parameter and what was expected."""

from __future__ import annotations

import math

from aiohttp import web

from cryptomon.http.errors import InvalidParameter


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
    if text is None:
        return None
    if text not in allowed:
        raise InvalidParameter(
            name, f"{name} must be one of {', '.join(allowed)}; not {text[:40]!r}"
        )
    return text


def text(request: web.Request, name: str, *, max_length: int = 200) -> str | None:
    value = _raw(request, name)
    if value is not None and (not value or len(value) > max_length):
        raise InvalidParameter(name, f"{name} must be 1 to {max_length} characters")
    return value
