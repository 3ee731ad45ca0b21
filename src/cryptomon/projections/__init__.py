"""Pure folds from events to read models, and the aggregate that feeds them all.

`Projections` holds one of each projection and the position of the last event
it applied. `apply` returns the notices the live feed broadcasts (including a
`LogEntry` per new log row); `fold` is the same without building notices' log
rows, for replays. Its state snapshots to msgpack per projection, with the
settings and position it covers, and restores only into the same projection
versions and settings: anything else is a `SnapshotMismatch`, and the caller
rebuilds from the log.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from cryptomon.events.types import (
    Event,
    ProbeRecorded,
    ProviderRegistered,
    ProviderRemoved,
    RecordedEvent,
)
from cryptomon.projections.alerts import (
    AcknowledgeError,
    AlertsProjection,
    AlreadyAcknowledgedError,
    UnknownAlertError,
)
from cryptomon.projections.base import Handler, JudgingProjection, Projection, StateT
from cryptomon.projections.chains import ChainsProjection
from cryptomon.projections.durations import DurationsProjection
from cryptomon.projections.failures import FailureAnalysis, FailuresProjection
from cryptomon.projections.incidents import INCIDENT_KINDS, IncidentsProjection
from cryptomon.projections.maintenance import MaintenanceProjection
from cryptomon.projections.metrics import (
    ALL,
    MetricsProjection,
    SeriesPoint,
    WindowStats,
)
from cryptomon.projections.notices import (
    Alert,
    AlertAcked,
    AlertRaised,
    AlertResolved,
    Incident,
    IncidentAlert,
    IncidentClosed,
    IncidentEscalated,
    IncidentOpened,
    Judged,
    LogEntry,
    MaintenanceChanged,
    Notice,
    ProviderStatusChanged,
    RateLimitHigh,
    log_entries,
)
from cryptomon.projections.providers import ProvidersProjection, ProviderState
from cryptomon.projections.quotes import QuotesProjection
from cryptomon.projections.rate_limits import RateLimitsProjection, RateLimitState
from cryptomon.projections.settings import ProjectionSettings

__all__ = [
    "ALL",
    "INCIDENT_KINDS",
    "AcknowledgeError",
    "Alert",
    "AlertAcked",
    "AlertRaised",
    "AlertResolved",
    "AlertsProjection",
    "AlreadyAcknowledgedError",
    "ChainsProjection",
    "FailureAnalysis",
    "FailuresProjection",
    "Incident",
    "IncidentAlert",
    "IncidentClosed",
    "IncidentEscalated",
    "IncidentOpened",
    "IncidentsProjection",
    "LogEntry",
    "MaintenanceChanged",
    "MaintenanceProjection",
    "MetricsProjection",
    "Notice",
    "Projection",
    "ProjectionSettings",
    "Projections",
    "ProviderState",
    "ProviderStatusChanged",
    "ProvidersProjection",
    "QuotesProjection",
    "RateLimitHigh",
    "RateLimitState",
    "RateLimitsProjection",
    "SeriesPoint",
    "SnapshotMismatch",
    "UnknownAlertError",
    "WindowStats",
]

# The snapshot entry holding the position and settings, next to one entry per projection.
META = "__meta__"
META_VERSION = 1
# state_equal stops listing after this many differences: enough to see what went wrong.
MAX_DIFFERENCES = 50
_MAX_VALUE_CHARS = 120


class SnapshotMismatch(Exception):
    """A snapshot these projections cannot continue from; rebuild them from the log."""


class _SnapshotMeta(msgspec.Struct, frozen=True, gc=False):
    position: int
    settings: ProjectionSettings


T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(_SnapshotMeta)

Snapshot = Mapping[str, tuple[int, bytes]]

# Every projection, in the order they fold an event; each is the attribute of its name.
# Chains and quotes come before providers: their judgements of a probe reach the
# provider's status as the providers projection folds that probe. Maintenance windows come
# first: the providers, metrics and alerts folds ask them whether a probe is covered.
# Incidents follow the alerts' notices, so they come after them.
_KINDS: tuple[type[Projection[Any]], ...] = (
    MaintenanceProjection,
    ChainsProjection,
    QuotesProjection,
    ProvidersProjection,
    MetricsProjection,
    DurationsProjection,
    AlertsProjection,
    IncidentsProjection,
    RateLimitsProjection,
    FailuresProjection,
)
NAMES = tuple(kind.name for kind in _KINDS)


# What each projection's fold reads of others' (their notices): folding it needs them.
_NEEDS: dict[str, tuple[str, ...]] = {
    "providers": ("maintenance", "chains", "quotes", "alerts"),
    "alerts": ("maintenance", "providers"),
    "incidents": ("alerts",),
    "durations": ("providers",),
    "metrics": ("maintenance",),
}


def _folds(names: Collection[str]) -> tuple[str, ...]:
    """`names` checked, in folding order. Alerts follow the status changes the providers
    fold decides, which follows the chains' and quotes' judgements: those fold together."""
    unknown = set(names) - set(NAMES)
    if unknown:
        raise ValueError(f"no projection named {', '.join(sorted(unknown))}")
    for name in names:
        missing = [need for need in _NEEDS.get(name, ()) if need not in names]
        if missing:
            raise ValueError(f"the {name} projection must fold together with {', '.join(missing)}")
    return tuple(name for name in NAMES if name in names)


def with_needs(names: Collection[str]) -> tuple[str, ...]:
    """`names` and every projection their folds read, in folding order: what a fold of
    `names` must fold."""
    folded = set(names)
    while True:
        more = {need for name in folded for need in _NEEDS.get(name, ())} - folded
        if not more:
            return tuple(name for name in NAMES if name in folded)
        folded |= more


def _dependents(names: Collection[str]) -> tuple[str, ...]:
    """`names` and every projection whose fold reads theirs, in folding order: what must be
    rebuilt when they are. Folded together they need nothing else (see `_NEEDS`)."""
    rebuilt = set(names)
    while True:
        more = {name for name, needs in _NEEDS.items() if rebuilt & set(needs)} - rebuilt
        if not more:
            return tuple(name for name in NAMES if name in rebuilt)
        rebuilt |= more


class Projections:
    def __init__(
        self, settings: ProjectionSettings | None = None, *, only: Collection[str] = NAMES
    ) -> None:
        """Every projection, or with `only` just those, folding: the others stay empty (a
        subscriber that reads a few projections folds no more)."""
        self.settings = ProjectionSettings() if settings is None else settings
        self.position = 0
        self.folds = _folds(only)
        # After a partial `restore`: the projections to fold from the start of the log.
        self.stale: tuple[str, ...] = ()
        self.maintenance = MaintenanceProjection(self.settings)
        self.chains = ChainsProjection(self.settings)
        self.quotes = QuotesProjection(self.settings)
        self.providers = ProvidersProjection(self.settings)
        self.metrics = MetricsProjection(self.settings)
        self.durations = DurationsProjection(self.settings)
        self.alerts = AlertsProjection(self.settings)
        self.incidents = IncidentsProjection(self.settings)
        self.rate_limits = RateLimitsProjection(self.settings)
        self.failures = FailuresProjection(self.settings)
        self._route()

    def all(self) -> tuple[Projection[Any], ...]:
        return (
            self.maintenance,
            self.chains,
            self.quotes,
            self.providers,
            self.metrics,
            self.durations,
            self.alerts,
            self.incidents,
            self.rate_limits,
            self.failures,
        )

    # ---- folding -------------------------------------------------------------

    def apply(self, recorded: RecordedEvent) -> list[Notice]:
        """Fold one event into every projection; the notices for the live feed.

        An event at or before `position` was applied already and is skipped."""
        if recorded.position <= self.position:
            return []
        notices: list[Notice] = []
        notices += log_entries(recorded)
        notices += self._fold(recorded.position, recorded.recorded_at, recorded.event)
        return notices

    def fold(self, recorded: RecordedEvent) -> None:
        """`apply` for a replay: the same state, without log rows nobody will read."""
        if recorded.position > self.position:
            self._fold(recorded.position, recorded.recorded_at, recorded.event)

    def fold_columns(
        self, positions: Sequence[int], times: Sequence[float], events: Sequence[Event]
    ) -> None:
        """`fold` over a page of events given as columns: their positions (ascending),
        recorded_at times and the events, the only parts of a recorded event a fold reads
        (what a replay fetches, see `EventStore.replay_pages`). The projections that fold a
        page at once (`Projection.folds_pages`) take it whole, the others event by event."""
        skip = bisect_right(positions, self.position)  # applied already
        if skip:
            positions, times, events = positions[skip:], times[skip:], events[skip:]
        if not positions:
            return
        if self._page_folds and "maintenance" in self.folds:
            # A page fold reads the windows as they stand: split the page after each event
            # that changes them, so each part folds with the windows its events saw.
            changes = self.maintenance.handlers
            cut = 0
            for index, event in enumerate(events):
                if type(event) in changes and index + 1 < len(events):
                    self._fold_part(
                        positions[cut : index + 1], times[cut : index + 1], events[cut : index + 1]
                    )
                    cut = index + 1
            if cut:
                positions, times, events = positions[cut:], times[cut:], events[cut:]
        self._fold_part(positions, times, events)

    def _fold_part(
        self, positions: Sequence[int], times: Sequence[float], events: Sequence[Event]
    ) -> None:
        for projection in self._page_folds:
            projection.fold_page(positions, times, events)
        dispatch, members, fold = self._event_dispatch, self._event_members, self._fold_with
        for position, recorded_at, event in zip(positions, times, events, strict=True):
            # `_handlers`, written out: this runs for every event of a replay.
            handlers = dispatch.get(type(event), ())
            if members and type(event) is ProbeRecorded:
                handlers = members.get(event.provider, handlers)
            fold(handlers, position, recorded_at, event)
        self.position = positions[-1]

    def _fold(self, position: int, recorded_at: float, event: Event) -> list[Notice]:
        self.position = position
        return self._fold_with(self._handlers(event), position, recorded_at, event)

    def _handlers(self, event: Event) -> Sequence[Handler]:
        """Who folds `event`: by its type, and a probe of a chain's node or a pair's source
        by its provider too (`_route_probes_of`)."""
        handlers = self._dispatch.get(type(event), ())
        if type(event) is ProbeRecorded:
            return self._members.get(event.provider, handlers)
        return handlers

    def _fold_with(
        self, handlers: Sequence[Handler], position: int, recorded_at: float, event: Event
    ) -> list[Notice]:
        notices: list[Notice] = []
        for handler in handlers:
            notices += handler(position, recorded_at, event)
        if notices and self._judges:
            # Alerts follow the status the providers projection just decided, and the
            # judgements (which reached that status through the judges' `forward`).
            for notice in list(notices):
                if isinstance(notice, ProviderStatusChanged):
                    notices += self.alerts.observe_status(notice)
                elif isinstance(notice, Judged):
                    # In a maintenance window no alert is raised: the first probe after
                    # it announces the judgements that still hold again.
                    if notice.active and self.providers.in_window(notice.provider):
                        continue
                    notices += self.alerts.observe_judged(notice)
        if notices and self._incidents:
            # Incidents follow the alerts this event raised, acknowledged and resolved.
            notices += self.incidents.observe(notices)
        if notices and self._durations:
            # The time in each status follows the status changes this event made.
            self.durations.observe(notices)
        return notices

    def _route(self) -> None:
        """Who folds which event type: a lookup per event instead of a test per projection.
        A replay's pages skip the handlers of the projections that fold pages themselves."""
        dispatch: dict[type[Event], list[Handler]] = {}
        by_event: dict[type[Event], list[Handler]] = {}
        # Whether status changes and judgements are followed (by providers and alerts).
        self._judges = "providers" in self.folds
        self._incidents = "incidents" in self.folds
        self._durations = "durations" in self.folds
        forward = self.providers.judge if self._judges else None
        # The folds that ask whether a probe is in a maintenance window.
        windows = self.maintenance if "maintenance" in self.folds else None
        self.providers.windows = self.alerts.windows = self.metrics.windows = windows
        self.chains.forward = self.quotes.forward = forward
        self._page_folds: tuple[Projection[Any], ...] = ()
        for projection in self.all():
            if projection.name not in self.folds:
                continue
            if projection.folds_pages:
                self._page_folds += (projection,)
            for kind, handler in projection.handlers.items():
                dispatch.setdefault(kind, []).append(handler)
                if not projection.folds_pages:
                    by_event.setdefault(kind, []).append(handler)
        # The judges' probe handlers are called for their members' probes alone: each
        # member's probes have their own handlers (`_members`), the rest skip the judges.
        judges: tuple[JudgingProjection[Any], ...] = (self.chains, self.quotes)
        self._judging = tuple(judge for judge in judges if judge.name in self.folds)
        judging = self._judge_probes = {j.handlers[ProbeRecorded] for j in self._judging}
        self._probes = tuple(dispatch.get(ProbeRecorded, ()))
        self._event_probes = tuple(by_event.get(ProbeRecorded, ()))
        for table in (dispatch, by_event):
            if ProbeRecorded in table:
                table[ProbeRecorded] = [h for h in table[ProbeRecorded] if h not in judging]
            if self._judging:
                for kind in (ProviderRegistered, ProviderRemoved):
                    table.setdefault(kind, []).append(self._route_member)
        self._dispatch = {kind: tuple(handlers) for kind, handlers in dispatch.items()}
        self._event_dispatch = {kind: tuple(handlers) for kind, handlers in by_event.items()}
        self._members: dict[str, tuple[Handler, ...]] = {}
        self._event_members: dict[str, tuple[Handler, ...]] = {}
        for provider in {member for judge in self._judging for member in judge.members()}:
            self._route_probes_of(provider)

    def _route_member(
        self, position: int, recorded_at: float, change: ProviderRegistered | ProviderRemoved
    ) -> list[Notice]:
        """After the judges folded a change of the provider's config: who folds its probes."""
        self._route_probes_of(change.provider)
        return []

    def _route_probes_of(self, provider: str) -> None:
        """Who folds the probes of `provider`: the handlers of every probe, and those of the
        judges whose member it is, in folding order (none: the type's handlers)."""
        judged_by = {
            judge.handlers[ProbeRecorded] for judge in self._judging if provider in judge.members()
        }
        # Changed in place: a page being folded holds these tables.
        for table, handlers in (
            (self._members, self._probes),
            (self._event_members, self._event_probes),
        ):
            if judged_by:
                table[provider] = tuple(
                    h for h in handlers if h in judged_by or h not in self._judge_probes
                )
            else:
                table.pop(provider, None)

    # ---- snapshots -----------------------------------------------------------

    def snapshot_state(self, names: Collection[str] | None = None) -> dict[str, tuple[int, bytes]]:
        """name -> (version, msgpack state) per projection folded (or only those in `names`),
        plus `META` (position, settings)."""
        names = self.folds if names is None else names
        snapshot = {p.name: (p.version, p.encode_state()) for p in self.all() if p.name in names}
        snapshot[META] = (
            META_VERSION,
            _encoder.encode(_SnapshotMeta(self.position, self.settings)),
        )
        return snapshot

    @classmethod
    def restore(
        cls,
        snapshot: Snapshot,
        settings: ProjectionSettings | None = None,
        *,
        only: Collection[str] = NAMES,
        partial: bool = False,
    ) -> Projections:
        """Projections continuing from `snapshot_state()` output; with `only`, just those
        projections are restored and fold on (the others stay empty, see `__init__`).

        Raises `SnapshotMismatch` when a projection is missing, has another version or
        does not decode, or when the snapshot was folded with other settings. With
        `partial`, such projections (and those folding together with them) are left empty
        and named in `stale` instead, for the caller to fold from the start of the log
        (`adopt`): an upgrade that adds or changes one projection rebuilds that one alone."""
        restored = cls(settings, only=only)
        meta = _decode_entry(snapshot, META, META_VERSION, _meta_decoder.decode)
        if meta.settings != restored.settings:
            changed = ", ".join(
                f"{name} {getattr(meta.settings, name)!r} -> {getattr(restored.settings, name)!r}"
                for name in meta.settings.__struct_fields__
                if getattr(meta.settings, name) != getattr(restored.settings, name)
            )
            raise SnapshotMismatch(f"the snapshot was folded with other settings ({changed})")
        restored.position = meta.position
        states: dict[str, Any] = {}
        stale: set[str] = set()
        for kind in _KINDS:
            if kind.name in restored.folds:
                try:
                    states[kind.name] = _decode_projection(snapshot, kind)
                except SnapshotMismatch:
                    if not partial:
                        raise
                    stale.add(kind.name)
        restored.stale = _dependents(stale)
        for kind in _KINDS:
            if kind.name in states and kind.name not in restored.stale:
                setattr(restored, kind.name, kind(restored.settings, states[kind.name]))
        restored._route()
        return restored

    def adopt(self, rebuilt: Projections) -> None:
        """Take the `stale` projections' state from `rebuilt`, folded from the start of the
        log up to this position."""
        if rebuilt.position != self.position:
            raise SnapshotMismatch(
                f"the rebuilt projections cover {rebuilt.position}, the rest {self.position}"
            )
        for name in self.stale:
            setattr(self, name, getattr(rebuilt, name))
        self.stale = ()
        self._route()

    # ---- audit ---------------------------------------------------------------

    def state_equal(self, other: Projections) -> list[str]:
        """Differences from `other`, one readable line each (at most MAX_DIFFERENCES);
        empty when both hold the same state at the same position."""
        found: list[str] = []
        if self.position != other.position:
            found.append(f"position: {self.position} != {other.position}")
        if self.settings != other.settings:
            found.append("settings differ")
        for mine, theirs in zip(self.all(), other.all(), strict=True):
            _differences(mine.name, mine.state, theirs.state, found)
        return found[:MAX_DIFFERENCES]


def _decode_entry(snapshot: Snapshot, name: str, version: int, decode: Callable[[bytes], T]) -> T:
    entry = snapshot.get(name)
    if entry is None:
        raise SnapshotMismatch(f"the snapshot has no {name!r} entry")
    found, data = entry
    if found != version:
        raise SnapshotMismatch(
            f"the snapshot's {name!r} is version {found}, this cryptomon builds version {version}"
        )
    try:
        return decode(data)
    except (msgspec.DecodeError, ValueError) as exc:
        raise SnapshotMismatch(f"the snapshot's {name!r} does not decode: {exc}") from None


def _decode_projection(snapshot: Snapshot, kind: type[Projection[StateT]]) -> StateT:
    return _decode_entry(snapshot, kind.name, kind.version, kind.decode_state)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _differences(path: str, mine: object, theirs: object, found: list[str]) -> None:
    """Append where `mine` and `theirs` differ, descending into structs, dicts and lists."""
    if len(found) >= MAX_DIFFERENCES or mine == theirs:
        return
    if isinstance(mine, msgspec.Struct) and type(mine) is type(theirs):
        for field in mine.__struct_fields__:
            _differences(f"{path}.{field}", getattr(mine, field), getattr(theirs, field), found)
    elif isinstance(mine, dict) and isinstance(theirs, dict):
        for key, value in mine.items():
            if key in theirs:
                _differences(f"{path}[{key!r}]", value, theirs[key], found)
            else:
                found.append(f"{path}[{key!r}]: only in this state")
        found.extend(
            f"{path}[{key!r}]: only in the other state" for key in theirs if key not in mine
        )
    elif isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        for index, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            _differences(f"{path}[{index}]", a, b, found)
    else:
        found.append(f"{path}: {_short(mine)} != {_short(theirs)}")
