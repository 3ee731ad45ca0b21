"""Maintenance windows: which are defined, and whether one covers a provider at a time.

A window is recorded as `MaintenanceWindowScheduled` (its whole definition, from the
config file or the API) and ended by `MaintenanceWindowCancelled`. It covers the
providers it names and those of the categories it names (a provider's category is the
one its last `ProviderRegistered` says). A one-off window covers `[start, end)`; a
recurring one covers `[fire, fire + duration)` after each time its cron expression fires
(UTC). Whether a window covers a probe is computed from the window's definition and the
probe's `started_at` alone, never from the wall clock, so a replay folds the same.

The providers, alerts and metrics folds read `covering` (see those modules for what a
window does to a status, an alert or uptime): this projection folds before them.
"""

from __future__ import annotations

import math
from typing import ClassVar

import msgspec
from croniter import croniter

from cryptomon.events.types import (
    Event,
    MaintenanceWindowCancelled,
    MaintenanceWindowScheduled,
    ProviderRegistered,
    ProviderRemoved,
)
from cryptomon.projections.base import Handler, Projection
from cryptomon.projections.notices import Notice
from cryptomon.projections.settings import ProjectionSettings


class Window(msgspec.Struct, gc=False, kw_only=True):
    """A window as the log last defined it."""

    definition: MaintenanceWindowScheduled
    position: int  # of the event that last defined it
    scheduled_at: float  # when that event was recorded
    cancelled_at: float | None = None
    cancelled_by: str | None = None

    @property
    def id(self) -> str:
        return self.definition.window_id


class MaintenanceState(msgspec.Struct, gc=False):
    windows: dict[str, Window] = {}  # by id, in the order first scheduled
    categories: dict[str, str] = {}  # provider -> category, from its registration


_decoder = msgspec.msgpack.Decoder(MaintenanceState)


def occurrence(definition: MaintenanceWindowScheduled, at: float) -> tuple[float, float] | None:
    """The `(start, end)` of the window's occurrence that holds `at`, if one does."""
    if definition.cron is not None and definition.duration_seconds is not None:
        # Cron fires on whole seconds and `get_prev` is strict: from just after `at`'s
        # second, the latest fire at or before `at`.
        fire = float(croniter(definition.cron, math.floor(at) + 0.5).get_prev(float))
        until = fire + definition.duration_seconds
        return (fire, until) if fire <= at < until else None
    start, end = definition.start, definition.end
    if start is not None and end is not None:
        return (start, end) if start <= at < end else None
    return None


def next_occurrence(
    definition: MaintenanceWindowScheduled, at: float
) -> tuple[float, float] | None:
    """The occurrence that holds `at`, else the next one to start after it; None when
    none is to come (a one-off window that ended)."""
    current = occurrence(definition, at)
    if current is not None:
        return current
    if definition.cron is not None and definition.duration_seconds is not None:
        fire = float(croniter(definition.cron, at).get_next(float))
        return fire, fire + definition.duration_seconds
    if definition.start is not None and definition.end is not None and at < definition.start:
        return definition.start, definition.end
    return None


class MaintenanceProjection(Projection[MaintenanceState]):
    name: ClassVar[str] = "maintenance"
    version: ClassVar[int] = 1

    def __init__(self, settings: ProjectionSettings, state: MaintenanceState | None = None) -> None:
        super().__init__(settings, state)
        # The providers, alerts and metrics folds each ask about the same probe: the last
        # answer, forgotten whenever a window or a provider's category changes.
        self._last: tuple[str, float, Window | None] | None = None

    def new_state(self) -> MaintenanceState:
        return MaintenanceState()

    @classmethod
    def decode_state(cls, data: bytes) -> MaintenanceState:
        return _decoder.decode(data)

    # ---- queries -------------------------------------------------------------

    def get(self, window_id: str) -> Window | None:
        return self.state.windows.get(window_id)

    def all(self) -> list[Window]:
        return list(self.state.windows.values())

    def any_open(self) -> bool:
        """Whether any window is not cancelled: when none is, no probe is covered."""
        return any(window.cancelled_at is None for window in self.state.windows.values())

    def covering(self, provider: str, at: float) -> Window | None:
        """The first window (in the order scheduled) not cancelled that covers `provider`
        at `at`."""
        windows = self.state.windows
        if not windows:
            return None
        last = self._last
        if last is not None and last[0] == provider and last[1] == at:
            return last[2]
        found = None
        category = self.state.categories.get(provider)
        for window in windows.values():
            if window.cancelled_at is not None:
                continue
            definition = window.definition
            if provider not in definition.providers and (
                category is None or category not in definition.categories
            ):
                continue
            if occurrence(definition, at) is not None:
                found = window
                break
        self._last = (provider, at, found)
        return found

    # ---- the fold ------------------------------------------------------------

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {
            MaintenanceWindowScheduled: self._scheduled,
            MaintenanceWindowCancelled: self._cancelled,
            ProviderRegistered: self._registered,
            ProviderRemoved: self._removed,
        }

    def _scheduled(
        self, position: int, recorded_at: float, event: MaintenanceWindowScheduled
    ) -> list[Notice]:
        self._last = None
        windows = self.state.windows
        windows[event.window_id] = Window(
            definition=event, position=position, scheduled_at=recorded_at
        )
        return []

    def _cancelled(
        self, position: int, recorded_at: float, event: MaintenanceWindowCancelled
    ) -> list[Notice]:
        self._last = None
        window = self.state.windows.get(event.window_id)
        if window is not None and window.cancelled_at is None:
            window.cancelled_at = event.cancelled_at
            window.cancelled_by = event.actor
        return []

    def _registered(
        self, position: int, recorded_at: float, event: ProviderRegistered
    ) -> list[Notice]:
        self._last = None
        self.state.categories[event.provider] = event.category
        return []

    def _removed(self, position: int, recorded_at: float, event: ProviderRemoved) -> list[Notice]:
        self._last = None
        self.state.categories.pop(event.provider, None)
        return []
