"""The providers as the log defines them: the book the monitor schedules from.

Each provider's configuration events are on its own stream (`config:<name>`):
registrations (from the file, the catalogue or the API), removals, pauses and resumes.
The book is their fold, read from the log when it is needed (at start-up, on a reload,
on a change over the API, and when another instance on the same PostgreSQL log records
one), so every instance schedules from the same truth. A provider's `position` (of its
last configuration event) is its version: the ETag a `PUT` must name in `If-Match`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptomon.config import BodyError, ProviderConfig, check_provider_body
from cryptomon.events.log import EventLog
from cryptomon.events.types import (
    ProviderPaused,
    ProviderRegistered,
    ProviderRemoved,
    ProviderResumed,
    ProviderSource,
)

log = logging.getLogger(__name__)

CONFIG_EVENT_TYPES = ("ProviderRegistered", "ProviderRemoved", "ProviderPaused", "ProviderResumed")
# Configuration events are one per provider and change: read them all at once.
_ALL = 1_000_000


def registration_stream(name: str) -> str:
    return f"config:{name}"


@dataclass(slots=True)
class Entry:
    """One provider's configuration as its events left it."""

    name: str
    version: int = 0  # of its stream: what the next append expects
    position: int = 0  # of its last configuration event: its version for `If-Match`
    registered: ProviderRegistered | None = None  # the last registration
    registered_by: str | None = None  # the actor of that registration
    removal: ProviderRemoved | None = None  # set while the last of the two is a removal
    paused: bool = False

    @property
    def current(self) -> bool:
        """Registered and not removed since."""
        return self.registered is not None and self.removal is None

    @property
    def source(self) -> ProviderSource | None:
        return None if self.registered is None else self.registered.source

    @property
    def definition(self) -> dict[str, Any] | None:
        """Defined over the API: the definition it was accepted with."""
        return None if self.registered is None else self.registered.definition

    @property
    def disabled(self) -> bool:
        """Deleted over the API: a catalogue provider stays off across restarts."""
        return self.removal is not None and self.removal.over_api


async def read_book(store: EventLog) -> dict[str, Entry]:
    """Every provider the log has a configuration event of, by name."""
    book: dict[str, Entry] = {}
    for recorded in await store.read_by_type(
        list(CONFIG_EVENT_TYPES), limit=_ALL, newest_first=False
    ):
        event = recorded.event
        assert isinstance(
            event, ProviderRegistered | ProviderRemoved | ProviderPaused | ProviderResumed
        )
        if recorded.stream != registration_stream(event.provider):
            # No cryptomon writes one elsewhere; counting its stream's version as this
            # provider's would make every append expect the wrong version, for ever.
            log.warning(
                "%s of %s at position %d is on stream %r, not %r: not a definition",
                type(event).__name__, event.provider, recorded.position, recorded.stream,
                registration_stream(event.provider),
            )  # fmt: skip
            continue
        entry = book.get(event.provider)
        if entry is None:
            entry = book[event.provider] = Entry(event.provider)
        entry.version = recorded.version
        entry.position = recorded.position
        if isinstance(event, ProviderRegistered):
            entry.registered = event
            entry.registered_by = recorded.metadata.actor
            entry.removal = None
        elif isinstance(event, ProviderRemoved):
            entry.removal = event
            entry.paused = False
        else:
            entry.paused = isinstance(event, ProviderPaused)
    return book


def defined_over_api(entry: Entry) -> ProviderConfig | None:
    """The provider an API registration defines, checked again as it was when accepted
    (None, with a log line, if today's rules refuse it: it is left unscheduled, not lost)."""
    registration = entry.registered
    if registration is None or registration.source != "api" or registration.definition is None:
        return None
    try:
        return check_provider_body(registration.definition)
    except BodyError as exc:
        log.warning(
            "provider %s, defined over the API, is not valid any more (%s); not probing it",
            entry.name,
            exc,
            extra={"provider": entry.name},
        )
        return None


@dataclass(frozen=True, slots=True)
class IfMatch:
    """A request's `If-Match`: the versions it names (strong ones; a weak one never
    matches, RFC 9110 13.1.1), or any (`*`)."""

    versions: tuple[int, ...] = ()
    any: bool = False

    def matches(self, position: int) -> bool:
        return self.any or position in self.versions


class DefinitionRefused(Exception):
    """A change over the API the log's definitions do not allow: `status` is the HTTP
    answer (404, 409 or 412), `kind` the problem type, `message` says why and what to do."""

    def __init__(self, status: int, kind: str, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.title = title
        self.message = message
