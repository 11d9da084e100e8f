"""Derived columns, on tiny hand-made frames: every band edge and every NULL rule."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa
from polars.testing import assert_frame_equal

from pipelines.transform import derive
from schemas.events import EVENTS_SCHEMA, RECORD_SCHEMA

T0 = dt.datetime(2024, 5, 1, 23, 59, 59, 999000, tzinfo=dt.UTC)


def _events(**columns: list) -> pa.Table:
    n = len(next(iter(columns.values())))
    base = {
        "id": [f"ev{i}" for i in range(n)],
        "time": [T0] * n,
        "updated": [T0] * n,
        "longitude": [0.0] * n,
        "latitude": [0.0] * n,
    }
    rows = {**base, **columns}
    return pa.table(
        {f.name: pa.array(rows.get(f.name, [None] * n), f.type) for f in RECORD_SCHEMA},
        schema=RECORD_SCHEMA,
    )


def _derived(table: pa.Table, *names: str) -> pl.DataFrame:
    out = derive(table)
    assert out.schema == EVENTS_SCHEMA
    return pl.from_arrow(out).select(names)


def test_magnitude_bands_are_closed_below_and_null_stays_null():
    mags = [-1.6, 1.99, 2.0, 3.99, 4.0, 5.0, 6.0, 6.99, 7.0, 7.99, 8.0, 9.1, None]
    got = _derived(_events(mag=mags), "mag", "mag_class")
    classes = ["micro", "micro", "minor", "minor", "light", "moderate", "strong", "strong"]
    classes += ["major", "major", "great", "great", None]
    assert_frame_equal(got, pl.DataFrame({"mag": mags, "mag_class": classes}))


def test_depth_bands_hold_70_and_300_in_intermediate():
    depths = [-2.0, 69.99, 70.0, 300.0, 300.01, 700.0, None]
    got = _derived(_events(depth_km=depths), "depth_km", "depth_class")
    classes = ["shallow", "shallow", "intermediate", "intermediate", "deep", "deep", None]
    assert_frame_equal(got, pl.DataFrame({"depth_km": depths, "depth_class": classes}))


def test_region_is_the_part_after_the_last_comma():
    places = ["10 km SSW of Petersville, Alaska", "Gulf of Alaska", "5 km N of A, B, Chile", None]
    got = _derived(_events(place=places), "region")
    regions = ["Alaska", "Gulf of Alaska", "Chile", None]
    assert_frame_equal(got, pl.DataFrame({"region": regions}))


def test_date_year_and_hour_are_utc():
    got = _derived(_events(mag=[1.0]), "date", "year", "hour")
    expected = pl.DataFrame({"date": [dt.date(2024, 5, 1)], "year": [2024], "hour": [23]})
    assert_frame_equal(got, expected, check_dtypes=False)
    assert got.dtypes == [pl.Date, pl.Int16, pl.Int8]


def test_flags_follow_type_and_status_and_keep_nulls():
    got = _derived(
        _events(
            event_type=["earthquake", "quarry blast", None],
            status=["reviewed", "automatic", None],
        ),
        "is_earthquake",
        "is_reviewed",
    )
    expected = pl.DataFrame(
        {"is_earthquake": [True, False, None], "is_reviewed": [True, False, None]}
    )
    assert_frame_equal(got, expected)


def test_no_events_derive_no_rows_of_the_same_schema_as_some_do():
    empty = derive(_events(mag=[1.0]).slice(0, 0))
    assert empty.schema == derive(_events(mag=[1.0])).schema == EVENTS_SCHEMA
    assert empty.num_rows == 0
