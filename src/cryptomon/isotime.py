"""How every surface writes a time: ISO 8601 in UTC with a `Z`.

REST responses, the live feed, log rows, alert messages, notifications and the
service's JSON log lines all write times through `iso_time`, so a script reads
one spelling everywhere. It imports nothing of cryptomon's: every layer may use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, overload

TimeSpec = Literal["auto", "seconds", "milliseconds", "microseconds"]


@overload
def iso_time(moment: float, timespec: TimeSpec = "auto") -> str: ...


@overload
def iso_time(moment: None, timespec: TimeSpec = "auto") -> None: ...


@overload
def iso_time(moment: float | None, timespec: TimeSpec = "auto") -> str | None: ...


def iso_time(moment: float | None, timespec: TimeSpec = "auto") -> str | None:
    """Unix seconds as ISO 8601 in UTC, `2026-11-25T10:00:00Z` (fractions shown when there
    are any, unless `timespec` says otherwise); None stays None."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec=timespec)[:-6] + "Z"
