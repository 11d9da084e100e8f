"""Load: the single writer. Builds the database file and returns it as a ``flyte.io.File``."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
from flyte.io import File

from pipelines.clean import REJECTS_SCHEMA
from pipelines.envs import worker
from pipelines.fdsn.client import FetchStats
from pipelines.plan import Window
from schemas.events import EVENTS_SCHEMA, SCHEMA_VERSION
from schemas.tables import ETL_RUNS, EVENTS, REJECTED_EVENTS, TABLES, duckdb_ddl


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


@dataclass
class LoadCounts:
    received: int
    loaded: int
    rejected: int


def write_duckdb(
    path: Path, events: list[pa.Table], rejects: list[pa.Table], run: RunRecord
) -> LoadCounts:
    """Write a complete database at ``path`` (which must not exist yet)."""
    incoming = pa.concat_tables(events) if events else EVENTS_SCHEMA.empty_table()
    refused = pa.concat_tables(rejects) if rejects else REJECTS_SCHEMA.empty_table()
    with duckdb.connect(str(path)) as con:
        con.execute("SET TimeZone = 'UTC'")
        for table in TABLES:
            con.execute(duckdb_ddl(table))
        con.register("incoming", incoming)
        con.register("refused", refused)
        # An event seen in two partitions (or twice in one) is kept once: the newest revision.
        con.execute(
            f"""INSERT INTO {EVENTS.name} SELECT * FROM incoming
            QUALIFY row_number() OVER (PARTITION BY id ORDER BY updated DESC) = 1
            ORDER BY time, id"""
        )
        con.execute(f"INSERT INTO {REJECTED_EVENTS.name} SELECT ?, * FROM refused", [run.run_id])
        received, loaded = con.execute(
            """SELECT
                 (SELECT count(DISTINCT id) FROM (SELECT id FROM incoming UNION ALL
                    SELECT id FROM refused WHERE id IS NOT NULL))
                 + (SELECT count(*) FROM refused WHERE id IS NULL),
                 (SELECT count(*) FROM events)"""
        ).fetchall()[0]
        counts = LoadCounts(received=received, loaded=loaded, rejected=received - loaded)
        stats = run.stats
        run_row = pa.Table.from_pylist(
            [
                {
                    "run_id": run.run_id,
                    "started_at": run.started_at,
                    "finished_at": dt.datetime.now(dt.UTC),
                    "window_start": run.window.start,
                    "window_end": run.window.end,
                    "base_url": run.base_url,
                    "min_magnitude": run.min_magnitude,
                    "partitions": run.partitions,
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
            ],
            schema=ETL_RUNS.schema,
        )
        con.register("run_row", run_row)
        con.execute(f"INSERT INTO {ETL_RUNS.name} SELECT * FROM run_row")
    return counts


@worker.task
def load(
    events: list[pa.Table], rejects: list[pa.Table], run: RunRecord
) -> tuple[File, LoadCounts]:
    with tempfile.TemporaryDirectory(prefix="quakecat-load-") as scratch:
        path = Path(scratch) / "quakes.duckdb"
        counts = write_duckdb(path, events, rejects, run)
        # Copied into the run's raw data (local folder or blob store) before scratch goes.
        output = File.from_local_sync(
            path, remote_destination=File.new_remote("quakes.duckdb").path
        )
    return output, counts
