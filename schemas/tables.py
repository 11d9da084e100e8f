"""Every table of the output database: grain, key and columns, next to their definitions.

SQL is derived from the Arrow schemas here; no other module spells a column list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from schemas.events import EVENT_COLUMNS, EVENTS_SCHEMA, UTC_MS


@dataclass(frozen=True)
class Table:
    name: str
    schema: pa.Schema
    grain: str
    key: tuple[str, ...]
    # What a column holds, where it needs saying; written into the DuckDB file with the grain.
    docs: Mapping[str, str] = field(default_factory=dict)


EVENTS = Table(
    "events",
    EVENTS_SCHEMA,
    "one row per event",
    ("id",),
    {
        c.name: f"{c.doc} Normalised: {c.normalise}." if c.normalise else c.doc
        for c in EVENT_COLUMNS
    },
)

EVENT_IDS = Table(
    "event_ids",
    pa.schema(
        [
            pa.field("alias", pa.string(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
        ]
    ),
    "one row per id an event has had (its preferred id included), pointing at events.id;"
    " an event whose preferred id changes is found again through its old one",
    ("alias",),
)

REJECTED_EVENTS = Table(
    "rejected_events",
    pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("partition", pa.string(), nullable=False),
            pa.field("id", pa.string()),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("raw_json", pa.string(), nullable=False),
        ]
    ),
    "one row per feature the service sent that broke the null contract or a range",
    (),
)

ETL_RUNS = Table(
    "etl_runs",
    pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("started_at", UTC_MS, nullable=False),
            pa.field("finished_at", UTC_MS, nullable=False),
            pa.field("window_start", UTC_MS, nullable=False),
            pa.field("window_end", UTC_MS, nullable=False),
            pa.field("base_url", pa.string(), nullable=False),
            pa.field("min_magnitude", pa.float64()),
            pa.field("partitions", pa.int32(), nullable=False),
            pa.field("partitions_cached", pa.int32(), nullable=False),
            pa.field("revised_events", pa.int64(), nullable=False),
            pa.field("max_allowed", pa.int32(), nullable=False),
            pa.field("requests", pa.int64(), nullable=False),
            pa.field("retries", pa.int64(), nullable=False),
            pa.field("splits", pa.int64(), nullable=False),
            pa.field("bytes_received", pa.int64(), nullable=False),
            pa.field("events_received", pa.int64(), nullable=False),
            pa.field("events_loaded", pa.int64(), nullable=False),
            pa.field("events_rejected", pa.int64(), nullable=False),
            pa.field("code_version", pa.string(), nullable=False),
            pa.field("schema_version", pa.int32(), nullable=False),
        ]
    ),
    "one row per pipeline run",
    ("run_id",),
)

LOADED_EXTRACTS = Table(
    "loaded_extracts",
    pa.schema(
        [
            pa.field("uri", pa.string(), nullable=False),
            pa.field("fetched_at", UTC_MS, nullable=False),
            pa.field("partition", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
        ]
    ),
    "one row per partition extract (one window's stored answer, at `uri` as fetched at"
    " `fetched_at`) whose rows this file took in; a later run that is handed the same extract"
    " by its cache skips it, since the file already holds it or something newer",
    ("uri", "fetched_at"),
)

TABLES: tuple[Table, ...] = (EVENTS, EVENT_IDS, REJECTED_EVENTS, ETL_RUNS, LOADED_EXTRACTS)

_DUCKDB_TYPES: dict[pa.DataType, str] = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
    pa.date32(): "DATE",
    UTC_MS: "TIMESTAMPTZ",
    pa.list_(pa.string()): "VARCHAR[]",
}


def duckdb_type(arrow: pa.DataType) -> str:
    return _DUCKDB_TYPES[arrow]


def duckdb_ddl(table: Table) -> str:
    """CREATE TABLE text for DuckDB; identifiers come from this module, never from input.

    Keys are kept by the load and checked by it (``pipelines.load``), not declared: DuckDB backs
    a PRIMARY KEY with an index that its joins and scans never use, which took half the bytes of
    a year's file and a tenth of every load's time, and was rewritten by every batch.
    """
    cols = [
        f'"{f.name}" {duckdb_type(f.type)}{"" if f.nullable else " NOT NULL"}' for f in table.schema
    ]
    return f'CREATE TABLE "{table.name}" (\n  ' + ",\n  ".join(cols) + "\n)"


def duckdb_create(table: Table) -> list[str]:
    """The statements that make ``table`` in a DuckDB file: its DDL, then its documentation."""
    return [
        duckdb_ddl(table),
        *duckdb_comments(table.name, table.grain, table.key, docs=table.docs),
    ]


def duckdb_comments(
    name: str,
    grain: str,
    key: Sequence[str],
    *,
    invariants: Sequence[str] = (),
    docs: Mapping[str, str] | None = None,
) -> list[str]:
    """COMMENT statements that carry a table's documentation into the file itself, where
    ``duckdb_tables()`` and ``duckdb_columns()`` show it to whoever opens the file."""
    about = f"Grain: {grain}. Key: {', '.join(key) or 'none'}."
    if invariants:
        about += f" Invariants: {'; '.join(invariants)}."
    return [f'COMMENT ON TABLE "{name}" IS {_text(about)}'] + [
        f'COMMENT ON COLUMN "{name}"."{column}" IS {_text(doc)}'
        for column, doc in (docs or {}).items()
    ]


def _text(value: str) -> str:
    """A SQL string literal of ``value`` (documentation from this code, never from input)."""
    return "'" + value.replace("'", "''") + "'"
