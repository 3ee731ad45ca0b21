"""`/api/quotes`: each pair's median price and how far each source is off it."""

from __future__ import annotations

from aiohttp import web

from cryptomon.http.errors import NotFound
from cryptomon.http.keys import ARGUMENTS
from cryptomon.http.schemas import PairList, PairView, QuoteSourceView
from cryptomon.http.views import models_of, respond, rounded
from cryptomon.isotime import iso_time
from cryptomon.projections.quotes import MIN_SOURCES, QUOTE_WINDOW_SECONDS, Pair, Source


def _source(source: Source) -> QuoteSourceView:
    age = (
        source.at - source.data_time
        if source.at is not None and source.data_time is not None
        else None
    )
    return QuoteSourceView(
        provider=source.provider,
        price=source.price,
        at=iso_time(source.at),
        succeeded=source.succeeded,
        deviation_percent=rounded(source.deviation, 4),
        data_time=iso_time(source.data_time),
        data_age_seconds=rounded(age, 3),
        states=list(source.states),
    )


def _median_note(pair: Pair) -> str | None:
    """Why there is no median, in the projection's terms (see projections/quotes.py)."""
    if pair.median is not None:
        return None
    if pair.median_at is None:
        return f"no source has quoted {pair.name} yet; a median needs {MIN_SOURCES} sources"
    return (
        f"{pair.counted} of {len(pair.sources)} sources quoted {pair.name} within"
        f" {QUOTE_WINDOW_SECONDS:g} s of the last quote; a median needs {MIN_SOURCES},"
        " so no deviation is judged"
    )


def _view(pair: Pair) -> PairView:
    return PairView(
        name=pair.name,
        median=pair.median,
        median_at=iso_time(pair.median_at),
        median_note=_median_note(pair),
        source_count=len(pair.sources),
        sources=[
            _source(source)
            for source in sorted(pair.sources.values(), key=lambda source: source.provider)
        ],
    )


async def quotes(request: web.Request) -> web.Response:
    found = [_view(pair) for pair in models_of(request).projections.quotes.all()]
    return respond(PairList(count=len(found), pairs=found))


async def quote(request: web.Request) -> web.Response:
    name = request[ARGUMENTS].path("pair")
    found = models_of(request).projections.quotes.get(name)
    if found is None:
        raise NotFound("pair", f"no pair named {name[:100]!r}; see /api/quotes")
    return respond(_view(found))
