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


def configure_logging(log_format: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Send INFO and above to `stream` (stderr) in the chosen format, replacing other handlers."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
