"""How the service's log lines look: readable text by default, or one JSON object a line.

JSON lines carry `time` (ISO 8601 UTC), `level`, `logger`, `message`, and the
`provider` (and scheduler `task`) when the code that logged named one with
`extra={"provider": name}`. Nothing else a record carries is copied out, so a
stray attribute cannot put a secret in a log line.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson
from aiohttp.http_exceptions import HttpProcessingError

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
# Attributes a record may carry through `extra=` that a line shows.
CONTEXT_FIELDS = ("provider", "task")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
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


class RefusedRequestFilter(logging.Filter):
    """aiohttp logs a request its parser refuses with a traceback quoting the bad
    line, which may hold a `?token=` or an `Authorization` header: say only who
    sent it and what was wrong with it, in one line at WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(error, HttpProcessingError):
            # aiohttp's message is "Error handling request from %s", remote address
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed HTTP request from %s: %s (HTTP %d)"
            record.args = (remote, type(error).__name__, error.code)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Send INFO and above to `stream` (stderr) in the chosen format, replacing other handlers."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RefusedRequestFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
