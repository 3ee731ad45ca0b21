"""What every projection is: a named, versioned, pure fold over recorded events.

A projection owns one msgspec Struct `state` that it mutates in `apply`, reading
time only from the events, so folding the same log always builds equal state.
The state round-trips through msgpack (a snapshot) unchanged; `version` is
bumped whenever its shape or meaning changes, so an older snapshot is rebuilt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import msgspec

from cryptomon.events.types import Event
from cryptomon.projections.notices import Judged, Judgement, Notice
from cryptomon.projections.settings import ProjectionSettings

StateT = TypeVar("StateT", bound=msgspec.Struct)

# Folds one event: called with its position, the time it was recorded and the event itself,
# the only parts of a recorded event a fold reads (so a replay fetches no more than these).
Handler = Callable[[int, float, Any], list[Notice]]

_encoder = msgspec.msgpack.Encoder()


# Between a provider's name and a region in the key of what a fold keeps of the provider
# in one region (metrics rollups, failure windows): no provider name holds it (names are
# printable).
REGION_SEPARATOR = "\0"


def regional(provider: str, region: str) -> str:
    """The key of what a fold keeps of `provider` in `region` alone (the metrics' rollups:
    query `window`, `series` and the like with it for that region)."""
    return provider + REGION_SEPARATOR + region


class Projection(ABC, Generic[StateT]):
    name: ClassVar[str]
    version: ClassVar[int]
    # Folds a replay's page of events at once (`fold_page`), not a handler call per event:
    # for a projection whose fold reads nothing another one decides, when that is faster.
    folds_pages: ClassVar[bool] = False

    def __init__(self, settings: ProjectionSettings, state: StateT | None = None) -> None:
        self.settings = settings
        self.state: StateT = self.new_state() if state is None else state
        self.handlers: dict[type[Event], Handler] = self.handlers_by_type()

    @abstractmethod
    def new_state(self) -> StateT:
        """The state before any event."""

    @classmethod
    @abstractmethod
    def decode_state(cls, data: bytes) -> StateT:
        """State from `encode_state` bytes; raises msgspec errors when they do not fit."""

    def encode_state(self) -> bytes:
        return _encoder.encode(self.state)

    @abstractmethod
    def handlers_by_type(self) -> dict[type[Event], Handler]:
        """The event types this projection folds, each with its handler. Dispatching on
        the exact type, once per event, keeps replays fast."""

    def fold_page(
        self, positions: Sequence[int], times: Sequence[float], events: Sequence[Event]
    ) -> None:
        """Fold a page of events given as columns (see `Projections.fold_columns`), without
        notices, into the same state as their handlers: only with `folds_pages`."""
        raise NotImplementedError(f"the {self.name} projection folds event by event")


class Judgeable(Protocol):
    """A provider as a judging projection keeps it: a chain's node, a pair's source."""

    provider: str
    states: list[Judgement]  # the judgements that hold, in the order they began
    succeeded: bool  # whether its last probe succeeded: only then does it count
    over: int  # probes in a row past a threshold
    paused: bool  # its probes (another instance's, in flight) judge nothing until resumed


class JudgingProjection(Projection[StateT]):
    """A projection that judges providers against each other (chains, quotes). Its
    judgements must reach the providers' status before the providers projection folds the
    same event: `forward` (set by `Projections` when providers are folded) takes each one
    and returns the notices it causes, which join the handler's own."""

    forward: Callable[[Judged], list[Notice]] | None = None

    @abstractmethod
    def members(self) -> Collection[str]:
        """The providers whose probes it judges (changed only by `ProviderRegistered` and
        `ProviderRemoved`): only their probes are handed to its `ProbeRecorded` handler."""

    def forwarded(self, notices: list[Notice]) -> list[Notice]:
        forward = self.forward
        if forward is None or not notices:
            return notices
        for notice in list(notices):
            if isinstance(notice, Judged):
                notices += forward(notice)
        return notices

    def flip(
        self,
        position: int,
        at: float,
        group: str,
        member: Judgeable,
        state: Judgement,
        active: bool,
        details: str,
    ) -> Judged:
        """`state` begins (`active`) or ends for `member` of `group` ("chain:ethereum")."""
        if active:
            member.states.append(state)
        else:
            member.states.remove(state)
        return Judged(position, at, member.provider, group, state, active, details)

    def rest(self, position: int, at: float, group: str, member: Judgeable) -> list[Notice]:
        """`member` is paused: it counts for its group no more until a probe of it
        succeeds again after it is resumed, and its judgements end."""
        member.paused = True
        member.succeeded = False
        member.over = 0
        ended = [
            self.flip(position, at, group, member, state, False, "paused")
            for state in list(member.states)
        ]
        return self.forwarded(list(ended))
