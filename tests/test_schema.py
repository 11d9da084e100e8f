"""The schema module: the events DDL, column names, null rules and wire names agree."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from schemas.events import (
    COLUMNS,
    DERIVED,
    EVENT_COLUMNS,
    EVENTS_SCHEMA,
    RECORD,
    RECORD_SCHEMA,
    REQUIRED,
)
from schemas.tables import EVENTS, TABLES, duckdb_ddl

# The 26 properties of a USGS GeoJSON feature, in the order the service sends them.
USGS_PROPERTIES = (
    "mag", "place", "time", "updated", "tz", "url", "detail", "felt", "cdi", "mmi", "alert",
    "status", "tsunami", "sig", "net", "code", "ids", "sources", "types", "nst", "dmin", "rms",
    "gap", "magType", "type", "title",
)  # fmt: skip
RENAMED = {"magType": "mag_type", "type": "event_type"}
GEOMETRY = ("longitude", "latitude", "depth_km")
DERIVED_NAMES = (
    "date", "year", "hour", "mag_class", "depth_class", "region", "is_earthquake", "is_reviewed",
)  # fmt: skip
EXPECTED_EVENT_COLUMNS = (
    "id",
    *(RENAMED.get(p, p) for p in USGS_PROPERTIES),
    *GEOMETRY,
    *DERIVED_NAMES,
)
NOT_NULL = {"id", "time", "updated", "longitude", "latitude", "date", "year", "hour"}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect(":memory:") as connection:
        connection.execute(duckdb_ddl(EVENTS))
        yield connection


def test_expected_column_list_is_what_it_claims() -> None:
    assert len(USGS_PROPERTIES) == len(set(USGS_PROPERTIES)) == 26
    assert len(EXPECTED_EVENT_COLUMNS) == 1 + 26 + 3 + 8 == 38
    assert snake("magType") == "mag_type"


def test_events_ddl_column_names_in_order(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'events' ORDER BY ordinal_position"
    ).fetchall()
    assert tuple(name for (name,) in rows) == EXPECTED_EVENT_COLUMNS


def test_events_ddl_not_null_exactly_on_required_columns(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        "SELECT column_name, is_nullable FROM information_schema.columns"
        " WHERE table_name = 'events' ORDER BY ordinal_position"
    ).fetchall()
    assert {name for name, nullable in rows if nullable == "NO"} == NOT_NULL
    assert {name for name, nullable in rows if nullable == "YES"} == (
        set(EXPECTED_EVENT_COLUMNS) - NOT_NULL
    )


def test_events_ddl_types(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'events' ORDER BY ordinal_position"
    ).fetchall()
    assert rows == [
        ("id", "VARCHAR"),
        ("mag", "DOUBLE"),
        ("place", "VARCHAR"),
        ("time", "TIMESTAMP WITH TIME ZONE"),
        ("updated", "TIMESTAMP WITH TIME ZONE"),
        ("tz", "SMALLINT"),
        ("url", "VARCHAR"),
        ("detail", "VARCHAR"),
        ("felt", "INTEGER"),
        ("cdi", "DOUBLE"),
        ("mmi", "DOUBLE"),
        ("alert", "VARCHAR"),
        ("status", "VARCHAR"),
        ("tsunami", "TINYINT"),
        ("sig", "INTEGER"),
        ("net", "VARCHAR"),
        ("code", "VARCHAR"),
        ("ids", "VARCHAR[]"),
        ("sources", "VARCHAR[]"),
        ("types", "VARCHAR[]"),
        ("nst", "INTEGER"),
        ("dmin", "DOUBLE"),
        ("rms", "DOUBLE"),
        ("gap", "DOUBLE"),
        ("mag_type", "VARCHAR"),
        ("event_type", "VARCHAR"),
        ("title", "VARCHAR"),
        ("longitude", "DOUBLE"),
        ("latitude", "DOUBLE"),
        ("depth_km", "DOUBLE"),
        ("date", "DATE"),
        ("year", "SMALLINT"),
        ("hour", "TINYINT"),
        ("mag_class", "VARCHAR"),
        ("depth_class", "VARCHAR"),
        ("region", "VARCHAR"),
        ("is_earthquake", "BOOLEAN"),
        ("is_reviewed", "BOOLEAN"),
    ]


def test_events_declare_not_null_only(con: duckdb.DuckDBPyConnection) -> None:
    # The key is kept and checked by the load: a declared one doubled the file (see duckdb_ddl).
    rows = con.execute(
        "SELECT DISTINCT constraint_type FROM duckdb_constraints() WHERE table_name = 'events'"
    ).fetchall()
    assert rows == [("NOT NULL",)]


def test_events_ddl_rejects_null_in_required_column(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        con.execute("INSERT INTO events (id) VALUES ('a')")
    assert con.execute("SELECT count(*) FROM events").fetchall() == [(0,)]


def test_every_table_ddl_creates() -> None:
    with duckdb.connect(":memory:") as con:
        for table in TABLES:
            con.execute(duckdb_ddl(table))
        names = con.execute(
            "SELECT table_name FROM information_schema.tables ORDER BY table_name"
        ).fetchall()
    assert [name for (name,) in names] == sorted(t.name for t in TABLES)
    assert "events" in {t.name for t in TABLES}


def test_an_events_schema_row_round_trips_through_the_ddl(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """A row typed by EVENTS_SCHEMA inserts positionally and reads back unchanged."""
    row = {
        **{f.name: None for f in EVENTS_SCHEMA},
        "id": "ak1",
        "time": dt.datetime(2019, 12, 14, 6, 51, 7, 580000, tzinfo=dt.UTC),
        "updated": dt.datetime(2019, 12, 14, 6, 56, 3, 68000, tzinfo=dt.UTC),
        "ids": ["ak1", "us2"],
        "mag": -1.6,
        "tz": -480,
        "longitude": -155.2805,
        "latitude": 19.4,
        "date": dt.date(2019, 12, 14),
        "year": 2019,
        "hour": 6,
        "is_reviewed": False,
    }
    con.register("one_event", pa.Table.from_pylist([row], schema=EVENTS_SCHEMA))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("INSERT INTO events SELECT * FROM one_event")
    (back,) = con.execute("SELECT * FROM events").fetchall()
    assert dict(zip(EVENTS_SCHEMA.names, back, strict=True)) == row


def test_wire_names_are_unique_and_are_the_26_usgs_properties() -> None:
    wires = [c.wire for c in RECORD if c.wire is not None]
    assert len(wires) == len(set(wires))
    assert tuple(wires) == USGS_PROPERTIES
    assert all(c.wire is None for c in DERIVED)
    assert [c.name for c in RECORD if c.wire is None] == ["id", *GEOMETRY]


def test_column_name_is_snake_case_wire_name() -> None:
    for c in RECORD:
        if c.wire is not None:
            assert c.name == RENAMED.get(c.wire, snake(c.wire)), c


def test_record_schema_names_equal_column_names() -> None:
    assert RECORD_SCHEMA.names == [c.name for c in RECORD]
    assert EVENTS_SCHEMA.names == [c.name for c in EVENT_COLUMNS]
    assert EVENTS_SCHEMA.names == list(EXPECTED_EVENT_COLUMNS)
    assert list(COLUMNS) == [c.name for c in RECORD]


def test_schema_nullability_matches_columns() -> None:
    for c, field in zip(EVENT_COLUMNS, EVENTS_SCHEMA, strict=True):
        assert (field.name, field.type, field.nullable) == (c.name, c.arrow, c.nullable)
    assert set(REQUIRED) == {"id", "time", "updated", "longitude", "latitude"}
    assert {c.name for c in DERIVED if not c.nullable} == {"date", "year", "hour"}


def test_column_names_are_unique() -> None:
    names = [c.name for c in EVENT_COLUMNS]
    assert len(names) == len(set(names))
