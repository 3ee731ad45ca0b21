"""How the service's log lines look: readable text by default, or one JSON object a line.

JSON lines carry `time` (ISO 8601 UTC), `level`, `logger`, `message`, and the
`provider` (and scheduler `task`) when the code that logged named one with
`extra={"provider": name}`. Nothing else a record carries is copied out, so a
stray attribute cannot put a secret in a log line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import orjson
from aiohttp.http_exceptions import HttpProcessingError

from cryptomon.isotime import iso_time

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
# Attributes a record may carry through `extra=` that a line shows.
CONTEXT_FIELDS = ("provider", "task")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": iso_time(record.created, "milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, with ` [provider=...]` when the record names one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        provider = getattr(record, "provider", None)
        return text if provider is None else f"{text} [provider={provider}]"


class ClientQuoteFilter(logging.Filter):
    """Two of aiohttp's log lines quote what a client sent, which may hold a secret:
    a request its parser refuses (the bad line: a `?token=` or an `Authorization`
    header) and the WebSocket subprotocols offered (`bearer, <token>` is common).
    Keep who and what went wrong, in one line, never the quote."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Both messages begin with the client's address.
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        error = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(error, HttpProcessingError):
            record.msg = "refused a malformed HTTP request from %s: %s (HTTP %d)"
            record.args = (remote, type(error).__name__, error.code)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        elif record.name == "aiohttp.websocket" and "Client protocols" in str(record.msg):
            record.msg = "%s: offered only WebSocket subprotocols this server does not speak"
            record.args = (remote,)
        return True


def configure_logging(log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Send INFO and above to `stream` (stderr) in the chosen format, replacing other handlers."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(ClientQuoteFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
