"""The SQLite edition holds the same tables and rows as the DuckDB one, in SQLite's types."""

from __future__ import annotations

import contextlib
import sqlite3

import duckdb
import pytest

from pipelines.fdsn.fake import FakeFDSN
from pipelines.sqlite import _export_expression
from tests.conftest import utc

pytestmark = pytest.mark.slow

# Differ between any two runs by nature.
RUN_SPECIFIC = {
    "etl_runs": {"run_id", "started_at", "finished_at"},
    "rejected_events": {"run_id"},
    "loaded_extracts": {"uri", "fetched_at", "run_id"},
}


def _duckdb_rows_as_sqlite_values(path, table: str, skip: set[str]) -> tuple[list[str], list]:
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        kept = [(name, kind) for name, kind in columns if name not in skip]
        select = ", ".join(_export_expression(name, kind)[0] for name, kind in kept)
        rows = con.execute(f'SELECT {select} FROM "{table}" ORDER BY ALL').fetchall()
    return [name for name, _ in kept], rows


def test_sqlite_and_duckdb_hold_the_same_rows_in_every_table(service: FakeFDSN, quakecat, tmp_path):
    window = ("--start", "2024-05-01", "--end", "2024-05-04", "--base-url", service.base_url)
    duck, lite = tmp_path / "q.duckdb", tmp_path / "q.sqlite"
    assert quakecat(*window, "--out", str(duck))[0] == 0
    assert quakecat(*window, "--format", "sqlite", "--out", str(lite))[0] == 0

    with duckdb.connect(str(duck), read_only=True) as con:
        tables = sorted(
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        )
    with sqlite3.connect(lite) as con:
        assert (
            sorted(
                name
                for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            )
            == tables
        )
        assert len(tables) == 10
        for table in tables:
            names, expected = _duckdb_rows_as_sqlite_values(
                duck, table, RUN_SPECIFIC.get(table, set())
            )
            quoted = ", ".join(f'"{n}"' for n in names)
            got = con.execute(f'SELECT {quoted} FROM "{table}" ORDER BY {quoted}').fetchall()
            assert got == sorted(expected, key=_sqlite_order), table
            if table != "rejected_events":
                assert got, f"{table} is empty"
        (time, ids, date, flag) = con.execute(
            "SELECT time, ids, date, is_earthquake FROM events ORDER BY time LIMIT 1"
        ).fetchone()
    assert time.startswith("2024-05-01T") and time.endswith("Z") and len(time) == 24
    assert ids.startswith('["') and date == "2024-05-01" and flag in (0, 1)


def _sqlite_order(row: tuple) -> tuple:
    # SQLite sorts NULL first, then numbers, then text: mirror that to compare orderings.
    return tuple(
        (0, 0) if v is None else (1, v) if isinstance(v, int | float) else (2, v) for v in row
    )


def test_a_second_sqlite_run_adds_to_the_archive(service: FakeFDSN, quakecat, tmp_path):
    lite = tmp_path / "q.sqlite"
    base = ("--base-url", service.base_url, "--format", "sqlite", "--out", str(lite))
    assert quakecat("--start", "2024-05-01", "--end", "2024-05-03", *base)[0] == 0
    assert quakecat("--start", "2024-05-02", "--end", "2024-05-05", *base)[0] == 0
    expected = service.catalogue.count(utc(2024, 5, 1), utc(2024, 5, 5))
    with sqlite3.connect(lite) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (
            expected,
            expected,
        )
        assert con.execute("SELECT count(*) FROM etl_runs").fetchone() == (2,)


def test_an_out_file_of_the_other_format_is_refused(service: FakeFDSN, quakecat, tmp_path):
    duck = tmp_path / "q.db"  # a suffix that names neither format
    window = ("--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url)
    assert quakecat(*window, "--out", str(duck))[0] == 0
    code, _, stderr = quakecat(*window, "--format", "sqlite", "--out", str(duck))
    assert code == 2
    assert stderr.startswith(f"quakecat: error: --out {duck} is not a quakecat SQLite database (")


@pytest.mark.parametrize("suffix", [".sqlite", ".SQLite3"])
def test_an_out_named_as_sqlite_is_written_as_sqlite(service: FakeFDSN, quakecat, tmp_path, suffix):
    lite = tmp_path / f"q{suffix}"
    window = ("--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url)
    assert quakecat(*window, "--out", str(lite))[:3:2] == (0, "")
    with contextlib.closing(sqlite3.connect(lite)) as con:
        ((events,),) = con.execute("SELECT count(*) FROM events").fetchall()
    assert events == service.catalogue.count(utc(2024, 5, 1), utc(2024, 5, 2))


@pytest.mark.parametrize(("name", "fmt", "named"), [("q.duckdb", "sqlite", "duckdb"),
                                                    ("q.sqlite", "duckdb", "sqlite")])  # fmt: skip
def test_a_format_that_contradicts_the_out_suffix_exits_2_before_any_request(
    service: FakeFDSN, quakecat, tmp_path, name, fmt, named
):
    out = tmp_path / name
    code, _, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url,
        "--format", fmt, "--out", str(out),
    )  # fmt: skip
    assert code == 2
    assert stderr == (
        f"quakecat: error: --out {out} is named as a {named} file but --format is {fmt}; "
        "change the suffix or leave --format out\n"
    )
    assert service.log == []
    assert list(tmp_path.iterdir()) == []


def test_either_format_tells_the_next_run_which_extracts_it_holds(
    service: FakeFDSN, quakecat, tmp_path
):
    from pipelines.load import check_database

    window = ("--start", "2024-05-01", "--end", "2024-05-03", "--base-url", service.base_url)
    duck, lite = tmp_path / "q.duckdb", tmp_path / "q.sqlite"
    assert quakecat(*window, "--out", str(duck))[0] == 0
    assert quakecat(*window, "--format", "sqlite", "--out", str(lite))[0] == 0
    with duckdb.connect(str(duck), read_only=True) as con:
        rows = con.execute(
            "SELECT uri, fetched_at, partition FROM loaded_extracts ORDER BY partition"
        ).fetchall()
    held = check_database(duck).held
    assert sorted((e.uri, e.fetched_at, e.partition) for e in held) == sorted(rows)
    assert [e.partition for e in sorted(held, key=lambda e: e.partition)] == [
        "2024-05-01T00:00:00.000Z/2024-05-02T00:00:00.000Z",
        "2024-05-02T00:00:00.000Z/2024-05-03T00:00:00.000Z",
    ]
    # SQLite keeps timestamps as millisecond text: the fetch times come back exactly.
    held_lite = check_database(lite, "sqlite").held
    assert len(held_lite) == 2
    with sqlite3.connect(lite) as con:
        stored = con.execute("SELECT uri, fetched_at, partition FROM loaded_extracts").fetchall()
    assert sorted(stored) == sorted(
        (e.uri, e.fetched_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", e.partition)
        for e in held_lite
    )
    assert all(
        e.fetched_at.tzinfo is not None and e.fetched_at.microsecond % 1000 == 0 for e in held_lite
    )
