"""The bench's catalogue: a steady daily rate plus an aftershock sequence every July."""

from __future__ import annotations

import datetime as dt

from pipelines.fdsn.fake import Catalogue, generate_catalogue

UTC = dt.UTC

# A year at 340 events a day plus one aftershock sequence is ~134,000 events, close to what the
# USGS all-magnitude catalogue holds in a year; the sequence puts July over the search limit.
BASE_PER_DAY = 340.0
QUICK_PER_DAY = 120.0
# Extra events per day after a mainshock on 4 July (the date of Ridgecrest, 2019), as
# (first day, end day, extra per day) at BASE_PER_DAY; scaled with the base rate.
AFTERSHOCKS = ((0, 1, 4000.0), (1, 3, 1500.0), (3, 7, 500.0), (7, 21, 100.0))
SEED = 2023


def bursts(start: dt.datetime, end: dt.datetime, per_day: float) -> list:
    """An aftershock sequence from 4 July of every year the window touches (clipped to it)."""
    scale = per_day / BASE_PER_DAY
    spans = []
    for year in range(start.year, end.year + 1):
        mainshock = dt.datetime(year, 7, 4, tzinfo=UTC)
        for first, last, extra in AFTERSHOCKS:
            day = dt.timedelta(days=1)
            spans.append((mainshock + first * day, mainshock + last * day, extra * scale))
    return spans


def build_catalogue(start: dt.datetime, end: dt.datetime, per_day: float) -> Catalogue:
    return generate_catalogue(
        start, end, per_day=per_day, seed=SEED, bursts=bursts(start, end, per_day)
    )
