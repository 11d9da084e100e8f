"""The analytics tables, over tiny hand-made `events` tables with every row spelled out."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import statistics
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipelines.analytics import (
    ANALYTICS_TABLES,
    GR_MIN_REGION_EVENTS,
    LARGEST_EVENTS_LIMIT,
    materialise,
)
from pipelines.transform import MAG_CLASSES, derive
from schemas.events import RECORD_SCHEMA
from schemas.tables import EVENTS, duckdb_ddl

UTC = dt.UTC


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, minute, second, tzinfo=UTC)


def after(seconds: int) -> dt.datetime:
    return at(1) + dt.timedelta(seconds=seconds)


def event(
    id_: str,
    time: dt.datetime,
    *,
    mag: float | None = None,
    place: str | None = None,
    event_type: str | None = "earthquake",
    depth_km: float | None = 10.0,
    **extra: Any,
) -> dict[str, Any]:
    """One record with every required field filled; derived columns come from the transform."""
    assert set(extra) <= set(RECORD_SCHEMA.names), extra
    row = dict.fromkeys(RECORD_SCHEMA.names)
    row.update(
        id=id_,
        time=time,
        updated=time,
        longitude=0.0,
        latitude=0.0,
        mag=mag,
        place=place,
        event_type=event_type,
        depth_km=depth_km,
        **extra,
    )
    return row


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect(":memory:") as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute(duckdb_ddl(EVENTS))
        yield connection


def load(con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]]) -> None:
    incoming = derive(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))
    con.register("incoming", incoming)
    con.execute(f"INSERT INTO {EVENTS.name} SELECT * FROM incoming")
    con.unregister("incoming")


def rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[Any, ...]]:
    return con.execute(f'SELECT * FROM "{table}"').fetchall()


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    described = con.execute(f'DESCRIBE "{table}"').fetchall()
    return [(name, type_) for name, type_, *_ in described]


ALPHA = "5 km N of Town, Alpha"

# Fifteen events over three days (none on 3 May): ties on mag, on mag and time, NULL mag,
# NULL place (region), NULL event_type, a region where no event has a mag, class boundaries.
SMALL = [
    event("a3", at(1, 0, 30), mag=None, place=ALPHA, depth_km=50.0),
    event("a1", at(1, 1), mag=4.5, place=ALPHA, depth_km=10.0, mag_type="mb", alert="green"),
    event("a2", at(1, 2), mag=4.5, place=ALPHA, depth_km=12.0),
    event("n1", at(1, 3), mag=1.2, place=None, event_type=None, depth_km=3.0),
    event("n2", at(1, 4), mag=None, place=None, event_type=None, depth_km=None),
    event("b1", at(2, 5), mag=2.3, place="Beta", event_type="quarry blast", depth_km=0.5),
    event("b3", at(2, 6), mag=6.1, place="Beta", depth_km=30.0),
    event("b2", at(2, 6), mag=6.1, place="Beta", depth_km=40.0, tsunami=1),
    event("g1", at(2, 7), mag=None, place="Gamma"),
    event("g2", at(2, 8), mag=None, place="Gamma"),
    event("d1", at(4, 12), mag=8.0, place="Delta", depth_km=600.0, mag_type="mww", alert="red"),
    event("d2", at(4, 13), mag=7.0, place="Delta"),
    event("d3", at(4, 14), mag=5.0, place="Delta"),
    event("d4", at(4, 15), mag=1.99, place="Delta"),
    event("d5", at(4, 16), mag=2.0, place="Delta"),
]
SMALL_MAGS = [r["mag"] for r in SMALL if r["mag"] is not None]


@pytest.fixture
def small(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    load(con, SMALL)
    materialise(con)
    return con


def test_tables_are_created_in_order_with_their_columns(small: duckdb.DuckDBPyConnection) -> None:
    assert ANALYTICS_TABLES == (
        "daily_summary",
        "region_summary",
        "magnitude_frequency",
        "gutenberg_richter",
        "largest_events",
    )
    assert MAG_CLASSES == ("micro", "minor", "light", "moderate", "strong", "major", "great")
    assert columns(small, "daily_summary") == [
        ("date", "DATE"),
        ("event_type", "VARCHAR"),
        ("events", "BIGINT"),
        ("min_mag", "DOUBLE"),
        ("avg_mag", "DOUBLE"),
        ("max_mag", "DOUBLE"),
        ("max_depth_km", "DOUBLE"),
        *[(name, "BIGINT") for name in MAG_CLASSES],
    ]
    assert columns(small, "region_summary") == [
        ("region", "VARCHAR"),
        ("events", "BIGINT"),
        ("largest_id", "VARCHAR"),
        ("largest_mag", "DOUBLE"),
        ("largest_time", "TIMESTAMP WITH TIME ZONE"),
        ("first_time", "TIMESTAMP WITH TIME ZONE"),
        ("last_time", "TIMESTAMP WITH TIME ZONE"),
    ]
    assert columns(small, "magnitude_frequency") == [
        ("mag_bin", "DOUBLE"),
        ("events", "BIGINT"),
        ("cumulative", "BIGINT"),
    ]
    assert columns(small, "gutenberg_richter") == [
        ("scope", "VARCHAR"),
        ("region", "VARCHAR"),
        ("events", "BIGINT"),
        ("mc", "DOUBLE"),
        ("b_value", "DOUBLE"),
        ("b_stderr", "DOUBLE"),
        ("a_value", "DOUBLE"),
    ]
    assert columns(small, "largest_events") == [
        ("rank", "BIGINT"),
        ("id", "VARCHAR"),
        ("mag", "DOUBLE"),
        ("mag_type", "VARCHAR"),
        ("place", "VARCHAR"),
        ("time", "TIMESTAMP WITH TIME ZONE"),
        ("depth_km", "DOUBLE"),
        ("alert", "VARCHAR"),
        ("tsunami", "TINYINT"),
    ]


def test_daily_summary(small: duckdb.DuckDBPyConnection) -> None:
    got = rows(small, "daily_summary")
    d = dt.date
    #             micro minor light moderate strong major great
    assert [r[:4] + r[5:] for r in got] == [
        (d(2024, 5, 1), "earthquake", 3, 4.5, 4.5, 50.0, 0, 0, 2, 0, 0, 0, 0),
        (d(2024, 5, 1), None, 2, 1.2, 1.2, 3.0, 1, 0, 0, 0, 0, 0, 0),
        (d(2024, 5, 2), "earthquake", 4, 6.1, 6.1, 40.0, 0, 0, 0, 0, 2, 0, 0),
        (d(2024, 5, 2), "quarry blast", 1, 2.3, 2.3, 0.5, 0, 1, 0, 0, 0, 0, 0),
        (d(2024, 5, 4), "earthquake", 5, 1.99, 8.0, 600.0, 1, 1, 0, 1, 0, 1, 1),
    ]
    assert [r[4] for r in got] == pytest.approx([4.5, 1.2, 6.1, 2.3, (8 + 7 + 5 + 1.99 + 2) / 5])
    # Invariants: every event is counted once; the classes count exactly the events with a mag.
    assert small.execute(
        "SELECT (SELECT sum(events) FROM daily_summary), (SELECT count(*) FROM events)"
    ).fetchall() == [(15, 15)]
    class_sum = " + ".join(f'"{name}"' for name in MAG_CLASSES)
    assert small.execute(f"SELECT sum({class_sum}) FROM daily_summary").fetchall() == [
        (len(SMALL_MAGS),)
    ]


def test_region_summary(small: duckdb.DuckDBPyConnection) -> None:
    assert rows(small, "region_summary") == [
        # A tie on mag goes to the earlier event; a NULL mag is never the largest ...
        ("Alpha", 3, "a1", 4.5, at(1, 1), at(1, 0, 30), at(1, 2)),
        # ... a tie on mag and time goes to the smaller id ...
        ("Beta", 3, "b2", 6.1, at(2, 6), at(2, 5), at(2, 6)),
        ("Delta", 5, "d1", 8.0, at(4, 12), at(4, 12), at(4, 16)),
        # ... unless no event of the region has one: then the earliest, with a NULL mag.
        ("Gamma", 2, "g1", None, at(2, 7), at(2, 7), at(2, 8)),
        # Events without a place are a region of their own, last.
        (None, 2, "n1", 1.2, at(1, 3), at(1, 3), at(1, 4)),
    ]


def test_largest_events(small: duckdb.DuckDBPyConnection) -> None:
    got = rows(small, "largest_events")
    assert [(r[0], r[1], r[2]) for r in got] == [
        (1, "d1", 8.0),
        (2, "d2", 7.0),
        (3, "b2", 6.1),  # same mag and time as b3: the smaller id first
        (4, "b3", 6.1),
        (5, "d3", 5.0),
        (6, "a1", 4.5),  # same mag as a2: the earlier first
        (7, "a2", 4.5),
        (8, "b1", 2.3),
        (9, "d5", 2.0),
        (10, "d4", 1.99),
        (11, "n1", 1.2),
    ]
    assert got[0] == (1, "d1", 8.0, "mww", "Delta", at(4, 12), 600.0, "red", None)
    assert got[2] == (3, "b2", 6.1, None, "Beta", at(2, 6), 40.0, None, 1)
    assert got[5] == (6, "a1", 4.5, "mb", ALPHA, at(1, 1), 10.0, "green", None)


def test_largest_events_keeps_the_top_hundred(con: duckdb.DuckDBPyConnection) -> None:
    many = [event(f"e{i:03d}", after(i), mag=i / 100) for i in range(150)]
    load(con, [*many, event("x", at(1, 1), mag=None)])
    materialise(con)
    got = rows(con, "largest_events")
    assert len(got) == LARGEST_EVENTS_LIMIT == 100
    assert [r[0] for r in got] == list(range(1, 101))
    assert [r[1] for r in got] == [f"e{i:03d}" for i in range(149, 49, -1)]


def test_magnitude_frequency_fills_empty_bins(con: duckdb.DuckDBPyConnection) -> None:
    mags = [-0.2, 0.0, 0.3, 0.3, 0.69, 0.7, None]
    load(con, [event(f"e{i}", at(1, i), mag=m) for i, m in enumerate(mags)])
    materialise(con)
    assert rows(con, "magnitude_frequency") == [
        (-0.2, 1, 6),
        (-0.1, 0, 5),
        (0.0, 1, 5),
        (0.1, 0, 4),
        (0.2, 0, 4),
        (0.3, 2, 4),
        (0.4, 0, 2),
        (0.5, 0, 2),
        (0.6, 1, 2),  # 0.69 falls in the bin below 0.7, whatever 0.69 * 10 rounds to
        (0.7, 1, 1),
    ]


@pytest.mark.parametrize(
    ("mag", "mag_bin"),
    [
        # Float noise just below a bin edge belongs to the bin above: floor() alone would not.
        (0.7 - 0.4, 0.3),  # 0.29999999999999993
        (4.6 - 1e-12, 4.6),
        # Noise above an edge, exact edges, and values well inside a bin are left alone.
        (3 * 0.1, 0.3),  # 0.30000000000000004
        (2.3, 2.3),
        (-1.3, -1.3),
        (0.29, 0.2),
        (-0.01, -0.1),
        (9.99, 9.9),
    ],
)
def test_magnitude_bins_are_robust_to_float_error(
    con: duckdb.DuckDBPyConnection, mag: float, mag_bin: float
) -> None:
    load(con, [event("e", at(1), mag=mag)])
    materialise(con)
    assert rows(con, "magnitude_frequency") == [(mag_bin, 1, 1)]


def test_magnitude_frequency_invariants(small: duckdb.DuckDBPyConnection) -> None:
    got = rows(small, "magnitude_frequency")
    assert got[0] == (1.2, 1, len(SMALL_MAGS))
    assert got[-1] == (8.0, 1, 1)
    assert len(got) == 80 - 12 + 1
    assert sum(r[1] for r in got) == len(SMALL_MAGS)
    assert [round(r[0] * 10) for r in got] == list(range(12, 81))
    assert all(a[2] == a[1] + b[2] for a, b in itertools.pairwise(got))
    assert {r[0]: r[1] for r in got if r[1]} == {
        1.2: 1, 1.9: 1, 2.0: 1, 2.3: 1, 4.5: 2, 5.0: 1, 6.1: 2, 7.0: 1, 8.0: 1
    }  # fmt: skip


def aki_utsu(mags: list[float], mc: float) -> tuple[int, float, float, float]:
    """The expected (n, b, b_stderr, a) straight from the definitions, in Python."""
    used = [m for m in mags if m >= mc - 1e-9]
    n, mean = len(used), statistics.fmean(used)
    b = math.log10(math.e) / (mean - (mc - 0.05))
    stderr = 2.3 * b**2 * math.sqrt(sum((m - mean) ** 2 for m in used) / (n * (n - 1)))
    return n, b, stderr, math.log10(n) + b * mc


def test_gutenberg_richter_small(small: duckdb.DuckDBPyConnection) -> None:
    # Bins 4.5 and 6.1 both hold two events, the most: the lower bin is Mc. No region has 50.
    n, b, stderr, a = aki_utsu(SMALL_MAGS, 4.5)
    assert n == 7
    [row] = rows(small, "gutenberg_richter")
    assert row[:4] == ("all", None, 7, 4.5)
    assert row[4:] == pytest.approx((b, stderr, a), rel=1e-12)


def test_gutenberg_richter_needs_fifty_magnitudes_per_region(
    con: duckdb.DuckDBPyConnection,
) -> None:
    def region(name: str, with_mag: int, without_mag: int) -> list[dict[str, Any]]:
        mags = [1.0 + (i % 7) / 10 for i in range(with_mag)] + [None] * without_mag
        return [
            event(f"{name}{i:03d}", after(i), mag=m, place=f"near, {name}")
            for i, m in enumerate(mags)
        ]

    nowhere = [
        event(f"n{i:03d}", after(i), mag=1.0 + i / 10, place=None)
        for i in range(GR_MIN_REGION_EVENTS)
    ]
    big = region("Big", GR_MIN_REGION_EVENTS, 0)
    small = region("Small", GR_MIN_REGION_EVENTS - 1, 10)
    load(con, [*big, *small, *nowhere])
    materialise(con)
    got = rows(con, "gutenberg_richter")
    # A NULL region is not a region, however many events it has.
    assert [(r[0], r[1]) for r in got] == [("all", None), ("region", "Big")]
    n, b, stderr, a = aki_utsu([r["mag"] for r in big], 1.0)
    assert got[1][2:] == pytest.approx((n, 1.0, b, stderr, a), rel=1e-12)


def test_tables_are_empty_without_events(con: duckdb.DuckDBPyConnection) -> None:
    materialise(con)
    for table in ANALYTICS_TABLES:
        assert rows(con, table) == [], table


def test_no_gutenberg_richter_row_without_two_magnitudes(con: duckdb.DuckDBPyConnection) -> None:
    load(con, [event("a", at(1), mag=3.0), event("b", at(1, 1), mag=None)])
    materialise(con)
    assert rows(con, "gutenberg_richter") == []
    assert rows(con, "magnitude_frequency") == [(3.0, 1, 1)]
    assert rows(con, "region_summary") == [(None, 2, "a", 3.0, at(1), at(1), at(1, 1))]


def test_materialise_replaces_the_tables(small: duckdb.DuckDBPyConnection) -> None:
    before = {table: rows(small, table) for table in ANALYTICS_TABLES}
    materialise(small)
    assert {table: rows(small, table) for table in ANALYTICS_TABLES} == before
    small.execute("DELETE FROM events WHERE region IS NOT NULL")
    materialise(small)
    assert rows(small, "region_summary") == [(None, 2, "n1", 1.2, at(1, 3), at(1, 3), at(1, 4))]
    assert [r[1] for r in rows(small, "largest_events")] == ["n1"]


def synthetic_catalogue(b: float, seed: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Complete above Mc = 1.0 with the given b, plus a thinner incomplete tail below it.

    Continuous magnitudes M = Mc - 0.05 + Exponential(b ln 10) are rounded to 0.1 bins, as a
    catalogue reporting to 0.1 would; bin Mc then holds everything in [Mc - 0.05, Mc + 0.05).
    """
    rng = random.Random(seed)
    beta = b * math.log(10)
    complete = [round(1.0 - 0.05 + rng.expovariate(beta), 1) for _ in range(10_000)]
    incomplete = rng.choices([0.5, 0.6, 0.7, 0.8, 0.9], weights=[1, 2, 3, 4, 5], k=400)
    mags = complete + incomplete
    rng.shuffle(mags)
    places = ["near, Alpha", "near, Beta"]
    rows_ = [event(f"e{i:05d}", after(i), mag=m, place=places[i % 2]) for i, m in enumerate(mags)]
    return rows_, mags


@pytest.mark.parametrize("b", [0.8, 1.0, 1.2])
def test_b_value_recovers_a_known_b(con: duckdb.DuckDBPyConnection, b: float) -> None:
    catalogue, mags = synthetic_catalogue(b, seed=round(b * 1000))
    load(con, catalogue)
    materialise(con)
    got = rows(con, "gutenberg_richter")
    assert [(r[0], r[1]) for r in got] == [("all", None), ("region", "Alpha"), ("region", "Beta")]
    for scope, region, events, mc, b_hat, b_stderr, a_value in got:
        # Maximum curvature sees through the incomplete tail below Mc.
        assert mc == 1.0, (scope, region)
        assert abs(b_hat - b) <= 3 * b_stderr, (scope, region, b_hat, b_stderr)
        assert 0 < b_stderr < 0.05
        assert a_value == pytest.approx(math.log10(events) + b_hat * mc, rel=1e-12)
    # The whole-window row, checked against the definitions computed in Python.
    n, b_py, stderr_py, a_py = aki_utsu(mags, 1.0)
    assert n == 10_000
    assert got[0][2] == n
    assert got[0][4:] == pytest.approx((b_py, stderr_py, a_py), rel=1e-9)
