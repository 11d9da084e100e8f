"""Staging: a run added to the file in batches, while it still fetches, gives the file that
one load of the whole run gives, revisions, ties and changed ids included."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipelines.analytics import ANALYTICS_TABLES
from pipelines.clean import REJECTS_SCHEMA
from pipelines.load import (
    IncompatibleDatabase,
    LoadCounts,
    RunRecord,
    check_database,
    stage_duckdb,
    write_duckdb,
)
from pipelines.plan import Window
from pipelines.transform import derive
from schemas.events import EVENT_COLUMNS, RECORD_SCHEMA
from schemas.tables import ETL_RUNS, TABLES
from tests.conftest import parquet_files, run_record, utc


def at(hour: int) -> dt.datetime:
    return utc(2024, 5, 1, hour)


def event(id_: str, hour: int, updated: int, place: str, ids: list[str] | None = None):
    row = dict.fromkeys(RECORD_SCHEMA.names)
    row.update(id=id_, time=at(hour), updated=at(updated), place=place, ids=ids or [id_])
    row.update(mag=1.0 + hour / 10, longitude=-116.8, latitude=33.5, depth_km=5.0)
    return row


def reject(id_: str | None) -> pa.Table:
    row = dict.fromkeys(REJECTS_SCHEMA.names)
    row.update(partition="p", id=id_, reason="bad", raw_json="{}")
    return pa.Table.from_pylist([row], schema=REJECTS_SCHEMA)


# Three partitions of one run, in the order they arrived.
BATCHES = [
    [
        event("ev1", 1, 1, "first"),
        event("ev2", 2, 2, "as first sent"),
        event("ak1", 3, 3, "under its old id"),
    ],
    [
        event("ev1", 1, 5, "revised"),  # newer: replaces the first batch's row
        event("ev2", 2, 2, "resent, same updated"),  # a tie: the later arrival wins
        event("us1", 3, 6, "under its new id", ["ak1", "us1"]),  # the preferred id changed
    ],
    [
        event("ev1", 1, 0, "an older copy"),  # older than what is stored: ignored
        event("ev3", 4, 4, "only here"),
    ],
]
# What the run leaves of them in `events` (id, place), whatever was stored before.
RUN_EVENTS = [
    ("ev1", "revised"),
    ("ev2", "resent, same updated"),
    ("ev3", "only here"),
    ("us1", "under its new id"),
]
REJECTS = [[reject("bad1")], [reject("bad1"), reject(None)], []]


def this_run(run_id: str) -> RunRecord:
    return run_record(run_id, Window(at(0), at(12)), partitions=3)


def partition_files(directory: Path, batches: list[list[dict[str, Any]]]) -> list[Path]:
    tables = [derive(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)) for rows in batches]
    return parquet_files(tables, directory)


def in_batches(path: Path, files: list[Path], run: RunRecord) -> LoadCounts:
    """As the pipeline does when every partition arrives while another is still fetching."""
    for n in range(len(files) - 1):
        stage_duckdb(path, files[n : n + 1], REJECTS[n], run.run_id)
    return write_duckdb(path, files[-1:], REJECTS[-1], run)


def at_once(path: Path, files: list[Path], run: RunRecord) -> LoadCounts:
    return write_duckdb(path, files, [r for batch in REJECTS for r in batch], run)


def contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table, rows sorted; the run's own row without its finishing time."""
    tables = [t.name for t in TABLES] + list(ANALYTICS_TABLES)
    with duckdb.connect(str(path), read_only=True) as con:
        names = {n for (n,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert names == set(tables)  # nothing of the staging is left behind
        return {
            name: con.execute(
                f"SELECT * EXCLUDE (finished_at) FROM {name} ORDER BY ALL"
                if name == ETL_RUNS.name
                else f"SELECT * FROM {name} ORDER BY ALL"
            ).fetchall()
            for name in tables
        }


def test_a_run_staged_in_batches_writes_the_file_one_load_writes(tmp_path: Path) -> None:
    files = partition_files(tmp_path / "parts", BATCHES)
    staged, whole = tmp_path / "staged.duckdb", tmp_path / "whole.duckdb"
    staged_counts = in_batches(staged, files, this_run("run-1"))
    whole_counts = at_once(whole, files, this_run("run-1"))

    # Received: ev1, ev2, ak1, us1, ev3 and the refused bad1 (once) and one without an id.
    assert staged_counts == whole_counts == LoadCounts(received=7, loaded=5, rejected=2, total=4)
    assert contents(staged) == contents(whole)
    with duckdb.connect(str(staged), read_only=True) as con:
        assert con.execute("SELECT id, place FROM events ORDER BY id").fetchall() == RUN_EVENTS
        assert con.execute("SELECT alias, id FROM event_ids ORDER BY alias").fetchall() == [
            ("ak1", "us1"),
            ("ev1", "ev1"),
            ("ev2", "ev2"),
            ("ev3", "ev3"),
            ("us1", "us1"),
        ]
    assert check_database(staged).max_allowed is None


@pytest.mark.parametrize("declared_keys", [False, True], ids=["keys-kept", "keys-declared"])
def test_a_run_staged_into_an_archive_adds_what_one_load_adds(
    tmp_path: Path, declared_keys: bool
) -> None:
    first = partition_files(
        tmp_path / "first", [[event("ak1", 3, 3, "old"), event("x", 5, 1, "x")]]
    )
    archive = tmp_path / "archive.duckdb"
    write_duckdb(archive, first, [], run_record("run-0", Window(at(0), at(12))))
    if declared_keys:  # as in files written before keys went undeclared
        with duckdb.connect(str(archive)) as con:
            for table in TABLES:
                if table.key:
                    con.execute(
                        f"ALTER TABLE {table.name} ADD PRIMARY KEY ({', '.join(table.key)})"
                    )
    staged, whole = tmp_path / "staged.duckdb", tmp_path / "whole.duckdb"
    shutil.copyfile(archive, staged)
    shutil.copyfile(archive, whole)
    files = partition_files(tmp_path / "parts", BATCHES)

    staged_counts = in_batches(staged, files, this_run("run-1"))
    assert staged_counts == at_once(whole, files, this_run("run-1"))
    assert staged_counts == LoadCounts(received=7, loaded=5, rejected=2, total=5)
    assert contents(staged) == contents(whole)
    with duckdb.connect(str(staged), read_only=True) as con:
        # The stored ak1 became us1 (newer, and it names ak1 among its ids); x is untouched.
        assert con.execute("SELECT id, place FROM events ORDER BY id").fetchall() == [
            *RUN_EVENTS,
            ("x", "x"),
        ]
        assert con.execute("SELECT id FROM event_ids WHERE alias = 'ak1'").fetchall() == [("us1",)]
        assert con.execute(
            "SELECT run_id, events_received FROM etl_runs ORDER BY ALL"
        ).fetchall() == [
            ("run-0", 2),
            ("run-1", 7),
        ]


def test_a_batch_refuses_a_file_that_is_no_archive_of_this_version(tmp_path: Path) -> None:
    # The CLI checks its --out before a run; on a cluster, the previous database a run is
    # handed is checked here, where the first batch opens it.
    files = partition_files(tmp_path / "parts", BATCHES[:1])
    not_duckdb = tmp_path / "notes.duckdb"
    not_duckdb.write_text("not a database")
    with pytest.raises(IncompatibleDatabase, match=r"notes\.duckdb is not a quakecat DuckDB"):
        stage_duckdb(not_duckdb, files, [], "run-1")

    older = tmp_path / "older.duckdb"
    write_duckdb(older, files, [], this_run("run-0"))
    with duckdb.connect(str(older)) as con:
        con.execute("UPDATE etl_runs SET schema_version = 1")
    for add in (
        lambda: stage_duckdb(older, files, [], "run-1"),
        lambda: write_duckdb(older, files, [], this_run("run-1")),
    ):
        with pytest.raises(IncompatibleDatabase) as refused:
            add()
        assert str(refused.value) == (
            f"{older} holds schema version 1, this quakecat writes 2;"
            " choose another --out or remove it to rebuild"
        )
    with duckdb.connect(str(older), read_only=True) as con:
        assert con.execute("SELECT run_id FROM etl_runs").fetchall() == [("run-0",)]


@pytest.mark.parametrize(
    ("repeat", "key"),
    [
        ("INSERT INTO events SELECT * FROM events WHERE id = 'ev3'", "events.id"),
        ("INSERT INTO event_ids VALUES ('ev3', 'ev1')", "event_ids.alias"),
    ],
)
def test_a_load_refuses_an_archive_that_repeats_a_key(tmp_path: Path, repeat: str, key: str):
    # DuckDB is not asked to keep the keys (see duckdb_ddl): the load checks what it would hand on.
    files = partition_files(tmp_path / "parts", BATCHES)
    edited = tmp_path / "edited.duckdb"
    write_duckdb(edited, files, [], this_run("run-0"))
    with duckdb.connect(str(edited)) as con:
        con.execute(repeat)
    with pytest.raises(IncompatibleDatabase) as refused:
        write_duckdb(edited, files[2:], [], this_run("run-1"))
    assert str(refused.value) == (
        f"{edited} holds rows that repeat a key ({key}), which quakecat never writes: the file"
        " was changed by other means; choose another --out or remove it to rebuild"
    )
    with duckdb.connect(str(edited), read_only=True) as con:
        assert con.execute("SELECT run_id FROM etl_runs").fetchall() == [("run-0",)]


def test_every_key_is_unique_after_runs_in_batches_and_at_once(tmp_path: Path) -> None:
    files = partition_files(tmp_path / "parts", BATCHES)
    path = tmp_path / "archive.duckdb"
    in_batches(path, files, this_run("run-1"))
    at_once(path, files, this_run("run-2"))
    with duckdb.connect(str(path), read_only=True) as con:
        for table in TABLES:
            if table.key:
                keys = ", ".join(table.key)
                repeated = con.execute(
                    f"SELECT {keys} FROM {table.name} GROUP BY ALL HAVING count(*) > 1"
                ).fetchall()
                assert repeated == [], table.name
        assert con.execute("SELECT count(*) FROM events").fetchall() == [(len(RUN_EVENTS),)]


def test_the_file_documents_its_tables_and_the_event_columns(tmp_path: Path) -> None:
    path = tmp_path / "archive.duckdb"
    in_batches(path, partition_files(tmp_path / "parts", BATCHES), this_run("run-1"))
    with duckdb.connect(str(path), read_only=True) as con:
        tables = dict(
            con.execute(
                "SELECT table_name, comment FROM duckdb_tables() WHERE NOT internal"
            ).fetchall()
        )
        columns = dict(
            con.execute(
                "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = 'events'"
            ).fetchall()
        )
    assert sorted(tables) == sorted([t.name for t in TABLES] + list(ANALYTICS_TABLES))
    assert tables["events"] == "Grain: one row per event. Key: id."
    assert tables["loaded_extracts"].endswith(". Key: uri, fetched_at.")
    assert tables["rejected_events"].endswith(". Key: none.")
    assert tables["largest_events"] == (
        "Grain: one row per event among the 100 largest by mag. Key: rank. Invariants: rank is"
        " 1..n without gaps; mag is non-increasing with rank."
    )
    assert sorted(columns) == sorted(c.name for c in EVENT_COLUMNS)
    assert columns["depth_class"] == (
        "shallow < 70 km <= intermediate <= 300 km < deep; NULL when depth_km is NULL."
    )
    assert columns["status"] == (
        "Review status: automatic, reviewed, deleted. Normalised: lower-cased (old answers send"
        " REVIEWED)."
    )
