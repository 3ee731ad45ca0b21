"""Probe metrics rolled up in minute, hour and day buckets, per provider and system-wide.

Probes in a maintenance the provider declared are left out: they say nothing of its
uptime or latency. So are probes inside a maintenance window that covers the provider
(maintenance.py), unless `maintenance_counts_in_uptime` says they count. A bucket
counts probes by outcome and keeps the latency of successful probes as a sum and a
histogram over fixed, roughly log-spaced bounds, so averages are exact and percentiles
are estimated within a bin. Queries read buckets, never events.

Minute buckets are stored an hour at a time (`MinuteBlock`): a provider is
probed a few times a minute at most, and one small struct per hour costs far
less to fill, keep and fold than sixty sparse ones. A block counts each minute's
probes by one code (a latency bin for a success, else how it ended), so a probe
is one count and, for a success, one latency added: the replay's hottest code.

A probe that carries a region counts in its provider's rollups, everyone's, and its
provider's in that region (keyed `regional(provider, region)`), so the latency and
uptime of each provider are kept overall and per region.

Memory stays bounded by event time: when the newest probe enters a new hour,
minute buckets older than `minute_retention_seconds` fold into hours, hours
older than `hour_retention_seconds` into days, and days older than
`day_retention_seconds` are dropped. Folding goes by whole hours and days, so
each granularity covers a span of time of its own and no probe counts twice.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import ClassVar

import msgspec

from cryptomon.events.types import Event, ProbeKind, ProbeOutcome, ProbeRecorded
from cryptomon.projections.base import REGION_SEPARATOR, Handler, Projection, regional
from cryptomon.projections.maintenance import MaintenanceProjection
from cryptomon.projections.notices import Notice

# The key of the system-wide rollups, next to the providers' names.
ALL = "__all__"
MINUTE = 60
HOUR = 3600
DAY = 86_400
# Upper bounds (inclusive) of the latency bins, in ms; one more bin holds the rest.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
    1000, 1500, 2000, 3000, 5000, 7000, 10_000, 15_000, 20_000, 30_000,
)  # fmt: skip
BINS = len(LATENCY_BOUNDS_MS) + 1
_FLOAT_BOUNDS = tuple(float(bound) for bound in LATENCY_BOUNDS_MS)  # the same, exactly
MAX_SERIES_POINTS = 10_000
# A minute block's codes: 0 to BINS - 1 a success in that latency bin, then these.
FAILED, TIMEOUT, RATE_LIMITED, NO_LATENCY = BINS, BINS + 1, BINS + 2, BINS + 3
CODES = BINS + 4
_OUTCOME_CODES = {"failed": FAILED, "timeout": TIMEOUT, "rate_limited": RATE_LIMITED}


class Bucket(msgspec.Struct, gc=False, array_like=True):
    """The probes that started in one bucket's span of time."""

    probes: int = 0
    failed: int = 0
    timeout: int = 0
    rate_limited: int = 0
    latency_count: int = 0  # successful probes with a latency
    latency_sum: float = 0.0
    histogram: dict[int, int] = {}  # bin -> count; bins without probes are left out

    def merge(self, other: Bucket) -> None:
        self.probes += other.probes
        self.failed += other.failed
        self.timeout += other.timeout
        self.rate_limited += other.rate_limited
        self.latency_count += other.latency_count
        self.latency_sum += other.latency_sum
        histogram = self.histogram
        for slot, count in other.histogram.items():
            histogram[slot] = histogram.get(slot, 0) + count


class MinuteBlock(msgspec.Struct, gc=False, array_like=True):
    """The sixty minute buckets of one hour: `counts[minute * CODES + code]` probes of each
    minute of the hour by code (a success's latency bin, `FAILED`, `TIMEOUT`,
    `RATE_LIMITED` or `NO_LATENCY`: a success without one), and the latency sum of each
    minute's successes."""

    counts: list[int]
    latency_sum: list[float]

    @classmethod
    def empty(cls) -> MinuteBlock:
        return cls([0] * (60 * CODES), [0.0] * 60)

    def total(self, first: int = 0, last: int = 60) -> Bucket:
        """Minutes `first` to `last` (exclusive) of the hour as one bucket."""
        counts = self.counts
        low, high = first * CODES, last * CODES
        by_code = [sum(counts[low + code : high : CODES]) for code in range(CODES)]
        return _bucket(by_code, sum(self.latency_sum[first:last]))

    def minutes(self) -> dict[int, Bucket]:
        """Each minute with probes as a bucket, by minute of the hour."""
        counts = self.counts
        minutes: dict[int, Bucket] = {}
        for minute in range(60):
            by_code = counts[minute * CODES : (minute + 1) * CODES]
            if any(by_code):
                minutes[minute] = _bucket(by_code, self.latency_sum[minute])
        return minutes


def _bucket(by_code: list[int], latency_sum: float) -> Bucket:
    """A bucket from probe counts by minute-block code."""
    histogram = {slot: count for slot, count in enumerate(by_code[:BINS]) if count}
    latency_count = sum(by_code[:BINS])
    return Bucket(
        latency_count + sum(by_code[BINS:]),
        by_code[FAILED],
        by_code[TIMEOUT],
        by_code[RATE_LIMITED],
        latency_count,
        latency_sum,
        histogram,
    )


class Rollup(msgspec.Struct, gc=False):
    """One provider's (or the system's) buckets for one kind of probe, keyed by start."""

    minutes: dict[int, MinuteBlock] = {}  # by the start of their hour
    hours: dict[int, Bucket] = {}
    days: dict[int, Bucket] = {}


class MetricsState(msgspec.Struct, gc=False):
    health: dict[str, Rollup] = {}
    collection: dict[str, Rollup] = {}
    newest_minute: int = 0
    # Probes from before minute_floor live in hour buckets, before hour_floor in days,
    # and before day_floor nowhere. Floors only rise.
    minute_floor: int = 0
    hour_floor: int = 0
    day_floor: int = 0


class WindowStats(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    count: int
    successes: int
    failures: int  # failed, timed out or rate limited
    uptime: float | None  # successes / count; None without probes
    avg_latency_ms: float | None  # of successful probes
    p50: float | None
    p95: float | None
    p99: float | None
    by_outcome: dict[str, int]


class SeriesPoint(msgspec.Struct, frozen=True, gc=False):
    start: float
    probes: int
    failures: int
    avg_latency_ms: float | None
    # Of the successful probes in the step, estimated within a bin as `window`'s are.
    p50: float | None = None
    p95: float | None = None


_decoder = msgspec.msgpack.Decoder(MetricsState)


def _add(
    buckets: dict[int, Bucket], start: int, outcome: ProbeOutcome, latency: float, slot: int
) -> None:
    bucket = buckets.get(start)
    if bucket is None:
        bucket = buckets[start] = Bucket()
    bucket.probes += 1
    if slot >= 0:
        bucket.latency_count += 1
        bucket.latency_sum += latency
        bucket.histogram[slot] = bucket.histogram.get(slot, 0) + 1
    elif outcome == "failed":
        bucket.failed += 1
    elif outcome == "timeout":
        bucket.timeout += 1
    elif outcome == "rate_limited":
        bucket.rate_limited += 1


def _fold_into(target: dict[int, Bucket], start: int, bucket: Bucket) -> None:
    existing = target.get(start)
    if existing is None:
        target[start] = bucket
    else:
        existing.merge(bucket)


def _floor(value: float, width: int) -> int:
    return math.floor(value / width) * width


class MetricsProjection(Projection[MetricsState]):
    name: ClassVar[str] = "metrics"
    # 2: minute blocks count probes by one code per minute; 3: rollups per region
    version: ClassVar[int] = 3
    folds_pages: ClassVar[bool] = True
    # The windows, read as each probe is folded: set by `Projections` (None: no windows).
    windows: MaintenanceProjection | None = None

    def new_state(self) -> MetricsState:
        return MetricsState()

    @classmethod
    def decode_state(cls, data: bytes) -> MetricsState:
        return _decoder.decode(data)

    # ---- the fold ------------------------------------------------------------

    def handlers_by_type(self) -> dict[type[Event], Handler]:
        return {ProbeRecorded: self._probe}

    def _probe(self, position: int, recorded_at: float, probe: ProbeRecorded) -> list[Notice]:
        self._add((probe,))
        return []

    def fold_page(
        self, positions: Sequence[int], times: Sequence[float], events: Sequence[Event]
    ) -> None:
        self._add([event for event in events if type(event) is ProbeRecorded])

    def _add(self, probes: Iterable[ProbeRecorded]) -> None:
        """Count probes into their minute blocks, in order. The hottest code of a replay, run
        over a page at a time: written out inline, not in helpers, in whole minutes, with
        the two blocks of each provider and kind (its own and everyone's) looked up once an
        hour."""
        state = self.state
        # In minutes since the epoch: both are whole minutes (the floor whole hours).
        newest, floor = state.newest_minute // MINUTE, state.minute_floor // MINUTE
        bounds, outcome_codes, bins = _FLOAT_BOUNDS, _OUTCOME_CODES, BINS
        blocks: dict[
            tuple[str, str, str | None], tuple[MinuteBlock, MinuteBlock, MinuteBlock | None]
        ] = {}
        blocks_hour = -1  # the hour (since the epoch) of the blocks in `blocks`
        latency = 0.0
        windows = self.windows
        covering = (
            windows.covering
            if windows is not None
            and not self.settings.maintenance_counts_in_uptime
            and windows.any_open()
            else None
        )
        for probe in probes:
            outcome = probe.outcome
            if covering is not None and covering(probe.provider, probe.started_at) is not None:
                continue  # inside a maintenance window: left out of uptime, as configured
            if outcome == "success":
                # Latency statistics are of successful probes; floats bisect faster among floats.
                measured = probe.latency_ms
                if measured is None:
                    code = NO_LATENCY
                else:
                    latency = measured
                    code = bisect_left(bounds, latency)
            elif outcome == "maintenance":
                continue  # the provider said it is not serving: no uptime, latency or failure
            else:
                code = outcome_codes[outcome]
            minutes = int(probe.started_at // MINUTE)
            if minutes > newest:
                entered_hour = minutes // 60 != newest // 60
                newest = minutes
                state.newest_minute = minutes * MINUTE
                if entered_hour:
                    self._compact()
                    floor = state.minute_floor // MINUTE
            if minutes < floor:
                self._late(probe, minutes * MINUTE)
                continue
            hour = minutes // 60
            if hour != blocks_hour:
                blocks.clear()
                blocks_hour = hour
            found = blocks.get((probe.kind, probe.provider, probe.region))
            if found is None:
                found = blocks[probe.kind, probe.provider, probe.region] = self._blocks(
                    probe, hour * HOUR
                )
            own, everyone, regional = found
            of_hour = minutes % 60
            index = of_hour * CODES + code
            own.counts[index] += 1
            everyone.counts[index] += 1
            if code < bins:
                own.latency_sum[of_hour] += latency
                everyone.latency_sum[of_hour] += latency
            if regional is not None:
                regional.counts[index] += 1
                if code < bins:
                    regional.latency_sum[of_hour] += latency

    def _blocks(
        self, probe: ProbeRecorded, hour: int
    ) -> tuple[MinuteBlock, MinuteBlock, MinuteBlock | None]:
        """The minute blocks of `hour` a probe counts in: its provider's, everyone's, and its
        provider's in its region (None without one)."""
        blocks = []
        for rollup in self._counted_in(probe):
            block = rollup.minutes.get(hour)
            if block is None:
                block = rollup.minutes[hour] = MinuteBlock.empty()
            blocks.append(block)
        return blocks[0], blocks[1], blocks[2] if len(blocks) == 3 else None

    def _counted_in(self, probe: ProbeRecorded) -> list[Rollup]:
        """The rollups a probe counts in: its provider's, everyone's, then its region's."""
        rollups = self.state.health if probe.kind == "health" else self.state.collection
        keys = [probe.provider, ALL]
        if probe.region is not None:
            keys.append(regional(probe.provider, probe.region))
        counted = []
        for key in keys:
            rollup = rollups.get(key)
            if rollup is None:
                rollup = rollups[key] = Rollup()
            counted.append(rollup)
        return counted

    def _late(self, probe: ProbeRecorded, minute: int) -> None:
        """A probe that started before its minutes were folded (a late append) goes straight
        into the coarser bucket that now holds its time, or nowhere once that is gone."""
        state = self.state
        counted = self._counted_in(probe)
        outcome = probe.outcome
        latency = probe.latency_ms
        if latency is None or outcome != "success":
            latency, slot = 0.0, -1  # latency statistics are of successful probes
        else:
            slot = bisect_left(LATENCY_BOUNDS_MS, latency)
        hour = minute - minute % HOUR
        if hour >= state.hour_floor:
            for rollup in counted:
                _add(rollup.hours, hour, outcome, latency, slot)
            return
        day = minute - minute % DAY
        if day >= state.day_floor:
            for rollup in counted:
                _add(rollup.days, day, outcome, latency, slot)

    def _compact(self) -> None:
        state = self.state
        settings = self.settings
        newest = state.newest_minute
        minute_floor = max(
            state.minute_floor, _floor(newest - settings.minute_retention_seconds, HOUR)
        )
        hour_floor = max(state.hour_floor, _floor(newest - settings.hour_retention_seconds, DAY))
        day_floor = max(state.day_floor, _floor(newest - settings.day_retention_seconds, DAY))
        for rollups in (state.health, state.collection):
            for rollup in rollups.values():
                if minute_floor > state.minute_floor:
                    for hour in [hour for hour in rollup.minutes if hour < minute_floor]:
                        _fold_into(rollup.hours, hour, rollup.minutes.pop(hour).total())
                if hour_floor > state.hour_floor:
                    for hour in [hour for hour in rollup.hours if hour < hour_floor]:
                        _fold_into(rollup.days, hour - hour % DAY, rollup.hours.pop(hour))
                if day_floor > state.day_floor:
                    for day in [day for day in rollup.days if day < day_floor]:
                        del rollup.days[day]
        state.minute_floor, state.hour_floor, state.day_floor = minute_floor, hour_floor, day_floor

    # ---- queries -------------------------------------------------------------

    def providers(self) -> list[str]:
        """The providers with any metrics, health or collection."""
        state = self.state
        return [
            name
            for name in {**state.health, **state.collection}
            if name != ALL and REGION_SEPARATOR not in name
        ]

    def regions(self) -> dict[str, list[str]]:
        """By provider, the regions whose probes of it have metrics (health or collection),
        sorted: those `regional(provider, region)` answers for. Empty when no probe carried
        a region."""
        state = self.state
        found: dict[str, set[str]] = {}
        for rollups in (state.health, state.collection):
            for key in rollups:
                provider, separator, region = key.partition(REGION_SEPARATOR)
                if separator:
                    found.setdefault(provider, set()).add(region)
        return {provider: sorted(regions) for provider, regions in found.items()}

    def window(
        self, provider: str | None, since: float, until: float, kind: ProbeKind | None = None
    ) -> WindowStats:
        """Counts and latency statistics of the probes in [since, until); see `bucket`."""
        return _stats(self.bucket(provider, since, until, kind))

    def bucket(
        self, provider: str | None, since: float, until: float, kind: ProbeKind | None = None
    ) -> Bucket:
        """Probes of `provider` (None: all providers) of `kind` (None: both kinds) that started
        in [since, until). A bucket counts when it overlaps the window, so the edges are as
        fine as the buckets kept there: a minute in the last hours, an hour or a day before."""
        parts: list[Bucket] = []
        for rollup in self._rollups(provider, kind):
            for hour, block in rollup.minutes.items():
                if hour < until and hour + HOUR > since:
                    # The minutes of the hour that overlap the window.
                    first = max(0, math.floor((since - hour) / MINUTE))
                    last = min(60, math.ceil((until - hour) / MINUTE))
                    parts.append(block.total(first, last))
            parts.extend(bucket for _start, bucket in self._coarse(rollup, since, until))
        # Summed in one pass into locals and a list histogram: a month's window is hundreds
        # of buckets (an SLA report reads one per provider), and `merge` into a dict is slower.
        probes = failed = timeout = rate_limited = latency_count = 0
        latency_sum = 0.0
        histogram = [0] * BINS
        for part in parts:
            probes += part.probes
            failed += part.failed
            timeout += part.timeout
            rate_limited += part.rate_limited
            latency_count += part.latency_count
            latency_sum += part.latency_sum
            for slot, count in part.histogram.items():
                histogram[slot] += count
        return Bucket(
            probes,
            failed,
            timeout,
            rate_limited,
            latency_count,
            latency_sum,
            {slot: count for slot, count in enumerate(histogram) if count},
        )

    def series(
        self,
        provider: str | None,
        since: float,
        until: float,
        step: float = MINUTE,
        kind: ProbeKind | None = None,
    ) -> list[SeriesPoint]:
        """One point per `step` seconds from `since` (a sparkline): probes, failures and the
        average latency of the buckets starting in that step (a coarse bucket counts in the
        step holding its start)."""
        if step <= 0:
            raise ValueError("step must be positive")
        count = max(math.ceil((until - since) / step), 0)
        if count > MAX_SERIES_POINTS:
            raise ValueError(f"at most {MAX_SERIES_POINTS} points, not {count}")
        if not count:
            return []
        sums = [Bucket() for _ in range(count)]
        for start, bucket in self._buckets(provider, kind, since, until):
            sums[min(int((max(start, since) - since) // step), count - 1)].merge(bucket)
        points = []
        average: float | None
        p50: float | None
        p95: float | None
        for i, b in enumerate(sums):
            if b.latency_count:
                histogram = [b.histogram.get(slot, 0) for slot in range(BINS)]
                average = b.latency_sum / b.latency_count
                p50, p95 = percentile(histogram, 0.50), percentile(histogram, 0.95)
            else:
                average = p50 = p95 = None
            points.append(
                SeriesPoint(since + i * step, b.probes, b.probes - _successes(b), average, p50, p95)
            )
        return points

    def daily(
        self, provider: str | None, first_day: int, days: int, kind: ProbeKind | None = "health"
    ) -> tuple[list[int], list[int]]:
        """Probes, and how many of them failed (failed, timed out or rate limited), of each
        of `days` UTC days from `first_day` (a midnight), in one pass over the provider's
        buckets: the days' own, the hours of the last days and the minute blocks of the
        last hours (hours and minute blocks never straddle a midnight). The 90-day bars of
        every provider, so written for speed: a lookup per day, a look per hour bucket."""
        if first_day % DAY:
            raise ValueError("first_day must be a UTC midnight")
        probes = [0] * days
        failures = [0] * days
        end = first_day + days * DAY
        for rollup in self._rollups(provider, kind):
            get = rollup.days.get
            for index in range(days):
                bucket = get(first_day + index * DAY)
                if bucket is not None:
                    probes[index] += bucket.probes
                    failures[index] += bucket.failed + bucket.timeout + bucket.rate_limited
            for start, bucket in rollup.hours.items():
                if first_day <= start < end:
                    index = (start - first_day) // DAY
                    probes[index] += bucket.probes
                    failures[index] += bucket.failed + bucket.timeout + bucket.rate_limited
            for start, block in rollup.minutes.items():
                if first_day <= start < end:
                    index = (start - first_day) // DAY
                    counts = block.counts
                    probes[index] += sum(counts)
                    failures[index] += (
                        sum(counts[FAILED::CODES])
                        + sum(counts[TIMEOUT::CODES])
                        + sum(counts[RATE_LIMITED::CODES])
                    )
        return probes, failures

    def _rollups(self, provider: str | None, kind: ProbeKind | None) -> list[Rollup]:
        state = self.state
        key = ALL if provider is None else provider
        if kind is None:
            kinds = [state.health, state.collection]
        else:
            kinds = [state.health if kind == "health" else state.collection]
        return [rollups[key] for rollups in kinds if key in rollups]

    def _buckets(
        self, provider: str | None, kind: ProbeKind | None, since: float, until: float
    ) -> Iterator[tuple[int, Bucket]]:
        """(start, bucket) of every bucket overlapping [since, until), finest first."""
        for rollup in self._rollups(provider, kind):
            for hour, block in rollup.minutes.items():
                if hour < until and hour + HOUR > since:
                    for i, bucket in block.minutes().items():
                        start = hour + i * MINUTE
                        if start < until and start + MINUTE > since:
                            yield start, bucket
            yield from self._coarse(rollup, since, until)

    def _coarse(self, rollup: Rollup, since: float, until: float) -> Iterator[tuple[int, Bucket]]:
        """The hour and day buckets overlapping [since, until). Hours all end by the minute
        floor and days by the hour floor, so a recent window skips them without a look."""
        if since < self.state.minute_floor:
            yield from _overlapping(rollup.hours, HOUR, since, until)
        if since < self.state.hour_floor:
            yield from _overlapping(rollup.days, DAY, since, until)


def _overlapping(
    buckets: dict[int, Bucket], width: int, since: float, until: float
) -> Iterator[tuple[int, Bucket]]:
    """The `width`-wide buckets overlapping [since, until): looked up one by one when the
    window spans fewer buckets than there are, found by a scan otherwise."""
    first = _floor(since, width)
    spans = math.ceil((until - first) / width)
    if spans < len(buckets):
        for start in range(first, first + spans * width, width):
            bucket = buckets.get(start)
            if bucket is not None:
                yield start, bucket
        return
    for start, bucket in buckets.items():
        if start < until and start + width > since:
            yield start, bucket


def _successes(bucket: Bucket) -> int:
    return bucket.probes - bucket.failed - bucket.timeout - bucket.rate_limited


def _stats(total: Bucket) -> WindowStats:
    successes = _successes(total)
    count = total.probes
    histogram = [total.histogram.get(slot, 0) for slot in range(BINS)]
    return WindowStats(
        count=count,
        successes=successes,
        failures=count - successes,
        uptime=successes / count if count else None,
        avg_latency_ms=total.latency_sum / total.latency_count if total.latency_count else None,
        p50=percentile(histogram, 0.50),
        p95=percentile(histogram, 0.95),
        p99=percentile(histogram, 0.99),
        by_outcome={
            "success": successes,
            "failed": total.failed,
            "timeout": total.timeout,
            "rate_limited": total.rate_limited,
        },
    )


def percentile(histogram: list[int], q: float) -> float | None:
    """The `q` quantile (0 to 1) of a latency histogram (a count per bin), interpolated
    linearly inside its bin; the overflow bin answers with the last bound (a floor).
    None when the histogram is empty."""
    cumulative = list(accumulate(histogram))
    total = cumulative[-1]
    if not total:
        return None
    # The rank of the probe sought, 1 to total: the bin where the running count reaches it
    # is the first one holding it, so it is never empty.
    rank = max(1.0, min(q, 1.0) * total)
    slot = bisect_left(cumulative, rank)
    if slot == len(LATENCY_BOUNDS_MS):
        return LATENCY_BOUNDS_MS[-1]
    count = histogram[slot]
    low = LATENCY_BOUNDS_MS[slot - 1] if slot else 0.0
    high = LATENCY_BOUNDS_MS[slot]
    return low + (high - low) * (rank - (cumulative[slot] - count)) / count
