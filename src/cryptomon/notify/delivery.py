"""Sending one notification to one channel, and what came of it.

Secrets (a URL from `url_env`, header values written "env:NAME", the HMAC
secret) are read from the environment for each request and never kept. The
outcome's error text never holds one either: exceptions are described by their
kind, never by their message (aiohttp puts the URL, token and all, in some),
and a receiver's answer is quoted only after every secret is cut out of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit

import aiohttp

from cryptomon import __version__
from cryptomon.config import ENV_PREFIX, NotificationChannel
from cryptomon.notify.messages import Notification, render

USER_AGENT = f"cryptomon/{__version__} (notifications)"
SIGNATURE_HEADER = "X-Cryptomon-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Enough of a receiver's answer to say why it refused, not a page of HTML.
_ANSWER_BYTES = 2048
_ANSWER_CHARS = 200
# Parts of a URL shorter than this are not worth redacting (and "/" would garble text).
_MIN_SECRET_CHARS = 6


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None = None  # the HTTP status, when there was an answer
    error: str | None = None  # why it failed; never holds a secret
    retry_after: float | None = None  # seconds, when the receiver said so


class _SetupError(Exception):
    """The channel cannot be called as configured right now (an env var is unset...)."""


@dataclass(frozen=True, slots=True)
class _Request:
    url: str
    headers: dict[str, str]
    secrets: tuple[str, ...]


def create_session() -> aiohttp.ClientSession:
    """The session notifications share: no cookies, each request bounds its own time."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=50, limit_per_host=8),
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=None),
    )


def _env(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise _SetupError(f"{what}: environment variable {name} is not set")
    return value


def sign(secret: str, body: bytes) -> str:
    """The X-Cryptomon-Signature value: sha256=<hex HMAC-SHA256 of the body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _prepare(
    channel: NotificationChannel, body: bytes, key: str, environ: Mapping[str, str]
) -> _Request:
    secrets: list[str] = []
    if channel.url_env is not None:
        url = _env(environ, channel.url_env, "url_env")
    else:
        assert channel.url is not None
        url = channel.url
    secrets += _url_secrets(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        where = f"the value of {channel.url_env}" if channel.url_env else "url"
        raise _SetupError(f"{where} is not an http(s) URL")
    headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key}
    for name, value in channel.headers.items():
        if value.startswith(ENV_PREFIX):
            value = _env(environ, value[len(ENV_PREFIX) :], f"header {name}")
            secrets += [value, value.split()[-1]]  # "Bearer X": a receiver may quote X alone
        headers[name] = value
    if channel.hmac_secret_env is not None:
        secret = _env(environ, channel.hmac_secret_env, "hmac_secret_env")
        secrets.append(secret)
        headers[SIGNATURE_HEADER] = sign(secret, body)
    kept = sorted({s for s in secrets if len(s) >= _MIN_SECRET_CHARS}, key=len, reverse=True)
    return _Request(url, headers, tuple(kept))


def _url_secrets(url: str) -> list[str]:
    """The URL and each piece of it that may be a token (path segments, query pairs
    and values, a password), as written and percent-decoded: a receiver may quote either."""
    parts = urlsplit(url)
    pairs = parts.query.split("&")
    pieces = [url, parts.path, parts.query, *parts.path.split("/"), *pairs]
    pieces += [pair.partition("=")[2] for pair in pairs] + [parts.password or ""]
    return pieces + [unquote_plus(piece) for piece in pieces]


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:  # longest first, so a part never leaves the rest of a whole
        text = text.replace(secret, "***")
    return text


def _answer(raw: bytes, secrets: tuple[str, ...]) -> str:
    text = raw.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    text = redact(text, secrets)
    return text[:_ANSWER_CHARS] + ("…" if len(text) > _ANSWER_CHARS else "")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from webhooks; back-off applies
    return seconds if 0 <= seconds < 86_400 else None


def _describe(exc: BaseException, timeout: float) -> str:
    """A failed request in words, from the kind of failure alone (never its message)."""
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno
        reason = os.strerror(code) if code else type(exc.os_error).__name__
        return f"cannot connect: {reason}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the receiver closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the receiver's answer was cut off"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the URL is not valid"
    return f"request failed ({type(exc).__name__})"


async def deliver(
    session: aiohttp.ClientSession,
    channel: NotificationChannel,
    notification: Notification,
    environ: Mapping[str, str],
) -> Outcome:
    """POST `notification` to `channel` once; 2xx is success. Never raises (but cancels)."""
    body = render(channel, notification)
    try:
        request = _prepare(channel, body, notification.idempotency_key, environ)
    except _SetupError as exc:
        return Outcome(False, error=str(exc))
    timeout = channel.timeout_seconds
    try:
        async with session.post(
            request.url,
            data=body,
            headers=request.headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,  # a webhook that moved is a failure to see, not to follow
        ) as response:
            answer = await response.content.read(_ANSWER_BYTES)
            if 200 <= response.status < 300:
                return Outcome(True, response.status)
            text = _answer(answer, request.secrets)
            return Outcome(
                False,
                response.status,
                f"HTTP {response.status}" + (f": {text}" if text else ""),
                _retry_after(response.headers.get("Retry-After")),
            )
    except asyncio.CancelledError:
        raise
    except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
        return Outcome(False, error=redact(_describe(exc, timeout), request.secrets))


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row: exponential, capped, with
    jitter (between half and all of it) so many channels do not retry in step."""
    delay = min(cap, base * 2 ** min(failures - 1, 40))
    return random.uniform(delay / 2, delay)
