"""Time windows: parsing, the partition grid, and halving.

Partitions are calendar months (UTC days when the whole window is shorter than a month), clipped
to the requested window. The grid depends only on the window, never on the data, so a settled
month is the same partition in every run and its cache entry can be reused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pipelines.errors import UsageError

UTC = dt.UTC


@dataclass(frozen=True)
class Window:
    """A half-open time window [start, end), both UTC-aware."""

    start: dt.datetime
    end: dt.datetime

    @property
    def key(self) -> str:
        return f"{_iso(self.start)}/{_iso(self.end)}"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def service_time(moment: dt.datetime) -> str:
    """The FDSN time format: ISO-8601 UTC without an offset, to the millisecond."""
    return _iso(moment)[:-1]


def parse_time(text: str, option: str) -> dt.datetime:
    """A date (2024-05-01) or an ISO-8601 datetime; naive means UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date (2024-05-01) or ISO-8601 datetime "
            "(2024-05-01T12:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_window(start: dt.datetime, end: dt.datetime) -> Window:
    if start >= end:
        raise UsageError(
            f"--start {_iso(start)} must be before --end {_iso(end)} (start is inclusive, "
            "end exclusive)"
        )
    return Window(start, end)


def default_window(now: dt.datetime) -> Window:
    """The seven days before now."""
    return Window(now - dt.timedelta(days=7), now)


def _next_month(moment: dt.datetime) -> dt.datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_day(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)


def _shorter_than_a_month(window: Window) -> bool:
    start = window.start
    day = min(start.day, 28)
    return window.end < _next_month(start).replace(day=day, hour=start.hour, minute=start.minute)


def partition_grid(window: Window) -> list[Window]:
    step = _next_day if _shorter_than_a_month(window) else _next_month
    parts, cursor = [], window.start
    while cursor < window.end:
        boundary = min(step(cursor), window.end)
        parts.append(Window(cursor, boundary))
        cursor = boundary
    return parts
