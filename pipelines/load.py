"""Load: the single writer. Builds the database file and returns it as a ``flyte.io.File``."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import flyte
import flyte.report
import pyarrow as pa
from flyte.io import DataFrame, File

from pipelines.analytics import materialise
from pipelines.clean import REJECTS_SCHEMA
from pipelines.envs import worker
from pipelines.errors import QuakecatError, first_line
from pipelines.fdsn.client import FetchStats
from pipelines.files import scratch_folder
from pipelines.frames import parquet_files, read_table
from pipelines.plan import Window
from pipelines.report import write_report
from pipelines.sqlite import export_sqlite, import_sqlite
from pipelines.task_fields import default
from schemas.events import EVENTS_SCHEMA, SCHEMA_VERSION, STRING_LIST
from schemas.tables import (
    ETL_RUNS,
    EVENT_IDS,
    EVENTS,
    LOADED_EXTRACTS,
    REJECTED_EVENTS,
    TABLES,
    Table,
    duckdb_create,
    duckdb_ddl,
)


@dataclass(frozen=True)
class ExtractRef:
    """One partition's stored extract, as a cache hands it back: where it is, and when it was
    fetched (a refetch of an unsettled window may write the same place again)."""

    uri: str
    fetched_at: dt.datetime
    partition: str = default("")

    @property
    def key(self) -> tuple[str, dt.datetime]:
        return self.uri, self.fetched_at


@dataclass
class RunRecord:
    """What the driver knows about a run when it hands the partitions to the load."""

    run_id: str
    started_at: dt.datetime
    window: Window
    base_url: str
    min_magnitude: float | None
    partitions: int
    stats: FetchStats
    code_version: str
    partitions_cached: int = default(0)
    revised_events: int = default(0)
    max_allowed: int = default(20_000)
    # The extracts whose rows this run loads (the revisions query is never reused, so absent).
    extracts: list[ExtractRef] = field(default_factory=list)


@dataclass
class LoadCounts:
    received: int
    loaded: int
    rejected: int
    total: int


class IncompatibleDatabase(QuakecatError):
    pass


FORMATS = ("duckdb", "sqlite")
# What a file's name says it is: a file named for one format and holding the other fails
# whoever opens it by its name.
SUFFIX_FORMATS = {".duckdb": "duckdb", ".sqlite": "sqlite", ".sqlite3": "sqlite"}


@dataclass(frozen=True)
class Archive:
    """What an existing database tells the next run about itself."""

    max_allowed: int | None = None
    held: tuple[ExtractRef, ...] = ()


def check_database(
    path: Path,
    fmt: str = "duckdb",
    base_url: str | None = None,
    *,
    name: str | None = None,
    option: str = "--out",
) -> Archive:
    """Raise unless ``path`` is a database of ``fmt`` that this version of quakecat can add to;
    return what it knows (the search limit of ``base_url``, learned by an earlier run, and the
    extracts it holds). Messages call the file ``name`` (``path`` unless it is a copy) and
    advise another ``option``."""
    name = name or str(path)
    with _database_errors_as_incompatible(name, fmt, option):
        if fmt == "sqlite":
            # SQLite declares the keys, so it keeps them itself.
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
                version, archive = _read_archive(con, base_url, dt.datetime.fromisoformat)
            _check_version(name, version, option)
        else:
            with duckdb.connect(str(path), read_only=True) as con:
                version, archive = _read_archive(con, base_url, lambda at: at)
                _check_version(name, version, option)
                _check_keys(con, name, option)
    return archive


# DuckDB names the process that holds a file's write lock; SQLite only says it is locked.
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")


@contextlib.contextmanager
def _database_errors_as_incompatible(
    path: Path | str, fmt: str, option: str = "--out"
) -> Iterator[None]:
    """Turn a database error while reading ``path`` into IncompatibleDatabase."""
    try:
        yield
    except (duckdb.Error, sqlite3.Error) as exc:
        reason = first_line(exc)
        if "Could not set lock on file" in reason or reason == "database is locked":
            # The file is fine, and in use: "remove it" would be the worst advice here.
            holder = _LOCK_HOLDER.search(reason)
            by = f" ({Path(holder[1]).name}, PID {holder[2]})" if holder else ""
            raise IncompatibleDatabase(
                f"{path} is open for writing in another program{by}; close it there and run"
                " again (read-only connections do not get in the way)"
            ) from None
        raise IncompatibleDatabase(
            f"{path} is not a quakecat {'SQLite' if fmt == 'sqlite' else 'DuckDB'} database "
            f"({reason}); choose another {option} (a file quakecat did not write is never"
            " replaced)"
        ) from None


def _check_version(path: Path | str, version: int | None, option: str = "--out") -> None:
    if version != SCHEMA_VERSION:
        raise IncompatibleDatabase(
            f"{path} holds schema version {version}, this quakecat writes {SCHEMA_VERSION};"
            f" choose another {option} or remove it to rebuild"
        )


def _schema_version(con: duckdb.DuckDBPyConnection | sqlite3.Connection) -> int | None:
    ((version,),) = con.execute(f"SELECT max(schema_version) FROM {ETL_RUNS.name}").fetchall()
    return version


def _read_archive(
    con: duckdb.DuckDBPyConnection | sqlite3.Connection,
    base_url: str | None,
    timestamp: Callable[[Any], dt.datetime],
) -> tuple[int | None, Archive]:
    """The file's schema version, and (for the version this quakecat writes) its ``Archive``;
    ``timestamp`` reads a stored timestamp (SQLite keeps them as ISO-8601 text)."""
    version = _schema_version(con)
    if version != SCHEMA_VERSION:
        return version, Archive()
    runs = con.execute(
        f"SELECT max_allowed FROM {ETL_RUNS.name} WHERE base_url = ?"
        " ORDER BY finished_at DESC LIMIT 1",
        [base_url],
    ).fetchall()
    held = con.execute(f"SELECT uri, fetched_at, partition FROM {LOADED_EXTRACTS.name}").fetchall()
    return version, Archive(
        runs[0][0] if runs else None,
        tuple(ExtractRef(uri, timestamp(at).astimezone(dt.UTC), part) for uri, at, part in held),
    )


# Newest revision wins, across partitions, runs, and changes of preferred id: an incoming event
# replaces every stored event that shares any of its ids, unless a stored one is newer. USGS
# sometimes revises text (place, title) without touching `updated`: on such a tie the later
# arrival wins, in the run (`arrival`) as across runs.
#
# The decisions are made on narrow key columns; full rows are read from the run's Parquet files
# once, by the final insert, so a run costs one pass over its data and no staged copy of it.
_WINNERS = """
CREATE TEMP TABLE run_winners AS
    SELECT id, updated, arrival, list_distinct(list_append(coalesce(ids, []), id)) AS aliases
    FROM incoming
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated DESC, arrival DESC) = 1
"""
# One event can come twice in a run under two preferred ids (its id changed between two
# fetches): the newer copy, which names the old id among its ids, is the event.
_RENAMED_IN_RUN = """
DELETE FROM run_winners WHERE id IN (
    SELECT id FROM (
        SELECT id, unnest(aliases) AS alias, updated, arrival FROM run_winners)
    QUALIFY row_number() OVER (PARTITION BY alias ORDER BY updated DESC, arrival DESC) > 1)
"""
_STORED_OVERLAP = f"SELECT count(*) FROM run_winners WHERE id IN (SELECT id FROM {EVENTS.name})"
# Rows already stored exactly as they are (a re-run over the same window) are left alone:
# deleting from a keyed table is the dear part. Only ids the file already holds are compared.
_UNCHANGED = f"""
DELETE FROM run_winners WHERE id IN (
    SELECT id FROM (
        SELECT {{columns}} FROM incoming WHERE arrival IN (
            SELECT arrival FROM run_winners WHERE id IN (SELECT id FROM {EVENTS.name}))
        INTERSECT
        SELECT {{columns}} FROM {EVENTS.name} WHERE id IN (SELECT id FROM run_winners)))
"""
_UPSERT = f"""
CREATE TEMP TABLE run_aliases AS SELECT id, unnest(aliases) AS alias FROM run_winners;
CREATE TEMP TABLE stored_matches AS
    SELECT DISTINCT a.id AS new_id, e.id AS old_id, e.updated > w.updated AS stored_is_newer
    FROM run_aliases a
    JOIN {EVENT_IDS.name} m ON m.alias = a.alias
    JOIN {EVENTS.name} e ON e.id = m.id
    JOIN run_winners w ON w.id = a.id;
DELETE FROM run_winners WHERE id IN (SELECT new_id FROM stored_matches WHERE stored_is_newer);
DELETE FROM {EVENTS.name}
    WHERE id IN (SELECT old_id FROM stored_matches WHERE new_id IN (SELECT id FROM run_winners));
DELETE FROM {EVENT_IDS.name}
    WHERE id IN (SELECT old_id FROM stored_matches WHERE new_id IN (SELECT id FROM run_winners))
       OR alias IN (SELECT alias FROM run_aliases WHERE id IN (SELECT id FROM run_winners));
INSERT INTO {EVENTS.name}
    SELECT {{columns}} FROM incoming WHERE arrival IN (SELECT arrival FROM run_winners)
    ORDER BY time, id;
INSERT INTO {EVENT_IDS.name}
    SELECT alias, id FROM run_aliases WHERE id IN (SELECT id FROM run_winners) ORDER BY alias;
"""
_COLUMNS = ", ".join(f'"{name}"' for name in EVENTS_SCHEMA.names)


# A working copy's record of the batches of this run it holds, kept between the run's load
# tasks (it never reaches a published file: the last load drops it): the ids each batch
# brought, and how many of them it wrote (the rest were stored already, as they are or newer).
_STAGED = Table(
    "_staged_batches",
    pa.schema([pa.field("ids", STRING_LIST, nullable=False), pa.field("changed", pa.int64())]),
    "one row per batch of this run",
    (),
)
_STAGED_IDS = f"(SELECT unnest(ids) AS id FROM {_STAGED.name})"


def stage_duckdb(path: Path, events: Sequence[Path], rejects: Iterable[pa.Table], run_id: str):
    """Add one batch of a run's partitions to the working copy at ``path`` (created when
    absent), while the rest of the run is still fetching; ``write_duckdb`` adds the last one.

    ``events`` are Parquet files of ``EVENTS_SCHEMA`` rows, in the order they arrived.
    DuckDB streams them, so memory holds the batch's keys, never its rows.
    """
    with _open(path) as con:
        _upsert(con, events, rejects, run_id)


def write_duckdb(
    path: Path, events: Sequence[Path], rejects: Iterable[pa.Table], run: RunRecord
) -> LoadCounts:
    """Add the run's last batch to ``path`` (a new database, an archive, or a working copy
    that earlier batches were staged into) and finish it: counts, analytics, the run's row."""
    with _open(path) as con:
        _upsert(con, events, rejects, run.run_id)
        _check_keys(con, path)
        # The analytics derive from `events` alone: a run that changed no event (a re-run
        # over settled, cached months) keeps them as they are.
        ((changed,),) = con.execute(f"SELECT sum(changed) FROM {_STAGED.name}").fetchall()
        if changed:
            materialise(con)
        counts = _count(con, run.run_id)
        _record_run(con, run, counts)
        con.execute(f"DROP TABLE {_STAGED.name}")
    return counts


@contextlib.contextmanager
def _open(path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """``path`` opened for writing: a new database (created with its tables), a working copy
    that earlier batches were staged into, or an archive this quakecat can add to (checked)."""
    fresh = not path.exists()
    with _database_errors_as_incompatible(path, "duckdb"):
        con = duckdb.connect(str(path))
    with con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET memory_limit = '256MB'")
        working = False
        if fresh:
            con.execute("BEGIN TRANSACTION")  # one commit for the lot: 0.015 s, not 0.03 s
            for statement in (s for table in TABLES for s in duckdb_create(table)):
                con.execute(statement)
            con.execute("COMMIT")
            materialise(con)
        else:
            with _database_errors_as_incompatible(path, "duckdb"):
                ((found,),) = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [_STAGED.name]
                ).fetchall()
                working = found == 1
                if not working:
                    _check_version(path, _schema_version(con))
        if not working:
            con.execute(duckdb_ddl(_STAGED))
        yield con


def _upsert(
    con: duckdb.DuckDBPyConnection,
    events: Sequence[Path],
    rejects: Iterable[pa.Table],
    run_id: str,
) -> None:
    _open_incoming(con, events)
    con.register("refused", pa.concat_tables([REJECTS_SCHEMA.empty_table(), *rejects]))
    # No transaction: the file is a scratch copy until the run succeeds, which is what makes the
    # whole load atomic.
    con.execute(_WINNERS)
    con.execute(
        "CREATE TEMP TABLE run_ids AS SELECT coalesce(list(id), []) AS ids FROM run_winners"
    )
    con.execute(_RENAMED_IN_RUN)
    ((overlap,),) = con.execute(_STORED_OVERLAP).fetchall()
    if overlap:
        con.execute(_UNCHANGED.format(columns=_COLUMNS))
    for statement in filter(str.strip, _UPSERT.format(columns=_COLUMNS).split(";")):
        con.execute(statement)
    con.execute(
        f"INSERT INTO {_STAGED.name} SELECT ids, (SELECT count(*) FROM run_winners) FROM run_ids"
    )
    con.execute(f"INSERT INTO {REJECTED_EVENTS.name} SELECT ?, * FROM refused", [run_id])
    con.unregister("refused")


def _open_incoming(con: duckdb.DuckDBPyConnection, files: Sequence[Path]) -> None:
    """The view ``incoming``: every row of ``files`` with its ``arrival`` (file, then row)."""
    if not files:
        con.register("incoming", _INCOMING.schema.empty_table())
        return
    paths = [str(f) for f in files]
    con.register("incoming_rows", con.read_parquet(paths, filename=True, file_row_number=True))
    con.register("run_files", pa.table({"filename": paths, "file_order": range(len(paths))}))
    con.execute(
        f"""CREATE TEMP VIEW incoming AS
            SELECT r.* EXCLUDE (filename, file_row_number),
                   f.file_order * {_ROWS_PER_FILE} + r.file_row_number AS arrival
            FROM incoming_rows r JOIN run_files f USING (filename)"""
    )


# The columns of ``incoming``; `arrival` orders revisions that tie on `updated`.
_INCOMING = Table(
    "incoming",
    EVENTS_SCHEMA.append(pa.field("arrival", pa.int64(), nullable=False)),
    "one row per event row received in this run",
    (),
)
_ROWS_PER_FILE = 1 << 32


def _check_keys(con: duckdb.DuckDBPyConnection, path: Path | str, option: str = "--out") -> None:
    """Raise unless every table's key is unique: the load keeps them so by construction, and
    this stands in for the constraints DuckDB is not asked to keep (see ``duckdb_ddl``)."""
    repeated = []
    for table in TABLES:
        if table.key:
            key = ", ".join(f'"{k}"' for k in table.key)
            ((extra,),) = con.execute(
                f'SELECT count(*) - count(DISTINCT ({key})) FROM "{table.name}"'
            ).fetchall()
            if extra:
                repeated.append(f"{table.name}.{'/'.join(table.key)}")
    if repeated:
        raise IncompatibleDatabase(
            f"{path} holds rows that repeat a key ({', '.join(repeated)}), which quakecat never"
            f" writes: the file was changed by other means; choose another {option} or remove"
            " it to rebuild"
        )


def _count(con: duckdb.DuckDBPyConnection, run_id: str) -> LoadCounts:
    received, accepted, total = con.execute(
        f"""WITH refused AS (SELECT id FROM {REJECTED_EVENTS.name} WHERE run_id = ?)
            SELECT
             (SELECT count(DISTINCT id) FROM (SELECT id FROM {_STAGED_IDS} UNION ALL
                SELECT id FROM refused WHERE id IS NOT NULL))
             + (SELECT count(*) FROM refused WHERE id IS NULL),
             (SELECT count(DISTINCT id) FROM {_STAGED_IDS}),
             (SELECT count(*) FROM {EVENTS.name})""",
        [run_id],
    ).fetchall()[0]
    return LoadCounts(received, accepted, received - accepted, total)


def _record_run(con: duckdb.DuckDBPyConnection, run: RunRecord, counts: LoadCounts) -> None:
    stats = run.stats
    row = {
        "run_id": run.run_id,
        "started_at": run.started_at,
        "finished_at": dt.datetime.now(dt.UTC),
        "window_start": run.window.start,
        "window_end": run.window.end,
        "base_url": run.base_url,
        "min_magnitude": run.min_magnitude,
        "partitions": run.partitions,
        "partitions_cached": run.partitions_cached,
        "revised_events": run.revised_events,
        "max_allowed": run.max_allowed,
        "requests": stats.requests,
        "retries": stats.retries,
        "splits": stats.splits,
        "bytes_received": stats.bytes_received,
        "events_received": counts.received,
        "events_loaded": counts.loaded,
        "events_rejected": counts.rejected,
        "code_version": run.code_version,
        "schema_version": SCHEMA_VERSION,
    }
    con.register("run_row", pa.Table.from_pylist([row], schema=ETL_RUNS.schema))
    con.execute(f"INSERT INTO {ETL_RUNS.name} SELECT * FROM run_row")
    extracts = pa.Table.from_pylist(
        [
            {
                "uri": e.uri,
                "fetched_at": e.fetched_at,
                "partition": e.partition,
                "run_id": run.run_id,
            }
            for e in run.extracts
        ],
        schema=LOADED_EXTRACTS.schema,
    )
    con.register("run_extracts", extracts)
    con.execute(f"INSERT INTO {LOADED_EXTRACTS.name} SELECT * FROM run_extracts")


@worker.task
def stage(
    events: list[DataFrame],
    rejects: list[DataFrame],
    run_id: str,
    previous: File | None = None,
    previous_fmt: str = "duckdb",
) -> File:
    """Add a batch of partitions to a working copy of ``previous`` (or a new database) while
    the run is still fetching, so that the load at the end has only the last batch to add.
    The copy is DuckDB whatever the archive's format, and is never published as it is."""
    with scratch_folder("stage") as scratch:
        work = _working_copy(previous, previous_fmt, Path(scratch))
        stage_duckdb(work, _local_events(events, scratch), _tables(rejects), run_id)
        return File.from_local_sync(work, remote_destination=File.new_remote("staged.duckdb").path)


@worker.task(report=True)
def load(
    events: list[DataFrame],
    rejects: list[DataFrame],
    run: RunRecord,
    previous: File | None = None,
    fmt: str = "duckdb",
    previous_fmt: str | None = None,
) -> tuple[File, File, LoadCounts]:
    """Add the run's last batch to a copy of ``previous`` (the archive, a working copy that
    ``stage`` made, or nothing: a new database; ``previous_fmt`` when not ``fmt``), finish it,
    and hand it on with its HTML report (also shown as this task's Flyte report)."""
    with scratch_folder("load") as scratch:
        work = _working_copy(previous, previous_fmt or fmt, Path(scratch))
        counts = write_duckdb(work, _local_events(events, scratch), _tables(rejects), run)
        result = work
        if fmt == "sqlite":
            result = work.with_suffix(".sqlite")
            export_sqlite(work, result)
        page = Path(scratch) / "report.html"
        with duckdb.connect(str(work), read_only=True) as con:
            write_report(con, page)
        # The page is a whole document with its own scripts: framed, it cannot clash with the
        # Flyte report page around it.
        framed = html.escape(page.read_text(encoding="utf-8"))
        flyte.report.replace(
            f'<iframe srcdoc="{framed}" style="width:100%;height:2600px;border:0"></iframe>',
            do_flush=True,
        )
        # Copied into the run's raw data (local folder or blob store) before scratch goes.
        database = File.from_local_sync(
            result, remote_destination=File.new_remote(f"quakes.{fmt}").path
        )
        report = File.from_local_sync(page, remote_destination=File.new_remote("report.html").path)
    return database, report, counts


def _working_copy(previous: File | None, fmt: str, scratch: Path) -> Path:
    """A DuckDB file in ``scratch`` to write to: a copy of ``previous``, or not there yet."""
    work = scratch / "quakes.duckdb"
    if previous is not None:
        if fmt == "sqlite":
            previous.download_sync(str(work.with_suffix(".previous")))
            import_sqlite(work.with_suffix(".previous"), work)
        else:
            previous.download_sync(str(work))
    return work


def _local_events(events: list[DataFrame], scratch: str) -> list[Path]:
    return [f for n, frame in enumerate(events) for f in parquet_files(frame, scratch, n)]


def _tables(frames: list[DataFrame]) -> Iterator[pa.Table]:
    return (read_table(frame) for frame in frames)
