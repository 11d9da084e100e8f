"""The SQLite edition of the database: the same tables and rows, in types SQLite has.

The pipeline always builds DuckDB (the analytics need it); SQLite is an export of that file, and
an existing SQLite archive is imported back into DuckDB before a run adds to it. Type mapping:
timestamps are ISO-8601 UTC text (``2024-05-01T12:00:00.123Z``), dates ``YYYY-MM-DD`` text,
lists JSON arrays as text, booleans 0/1.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa

from schemas.tables import TABLES, duckdb_create

_KEYS = {table.name: table.key for table in TABLES}
_BATCH_ROWS = 50_000


def _export_expression(column: str, duckdb_type: str) -> tuple[str, str]:
    """(DuckDB expression giving the SQLite value, SQLite column type)."""
    quoted = f'"{column}"'
    if duckdb_type == "TIMESTAMP WITH TIME ZONE":
        return f"strftime({quoted}, '%Y-%m-%dT%H:%M:%S.%gZ')", "TEXT"
    if duckdb_type == "DATE":
        return f"strftime({quoted}, '%Y-%m-%d')", "TEXT"
    if duckdb_type.endswith("[]"):
        return f"CAST(to_json({quoted}) AS VARCHAR)", "TEXT"
    if duckdb_type == "BOOLEAN":
        return f"CAST({quoted} AS INTEGER)", "INTEGER"
    if duckdb_type in ("DOUBLE", "FLOAT") or duckdb_type.startswith("DECIMAL"):
        return quoted, "REAL"
    if duckdb_type.endswith("INT") or duckdb_type in ("INTEGER", "BIGINT", "HUGEINT"):
        return quoted, "INTEGER"
    return quoted, "TEXT"


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str, bool]]:
    rows = con.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_name = ? AND table_schema = 'main' ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [(name, kind, nullable == "YES") for name, kind, nullable in rows]


def export_sqlite(duckdb_path: Path, sqlite_path: Path) -> None:
    """Write every table of ``duckdb_path`` into a new SQLite file at ``sqlite_path``."""
    with (
        duckdb.connect(str(duckdb_path), read_only=True) as con,
        sqlite3.connect(sqlite_path) as out,
    ):
        con.execute("SET TimeZone = 'UTC'")
        tables = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        ]
        for table in tables:
            columns = _columns(con, table)
            mapped = [_export_expression(name, kind) for name, kind, _ in columns]
            definitions = [
                f'"{name}" {sqlite_type}{"" if nullable else " NOT NULL"}'
                for (name, _, nullable), (_, sqlite_type) in zip(columns, mapped, strict=True)
            ]
            if _KEYS.get(table):
                definitions.append("PRIMARY KEY (" + ", ".join(_KEYS[table]) + ")")
            out.execute(f'CREATE TABLE "{table}" ({", ".join(definitions)})')
            placeholders = ", ".join("?" * len(columns))
            result = con.execute(
                f'SELECT {", ".join(expr for expr, _ in mapped)} FROM "{table}" ORDER BY ALL'
            )
            while batch := result.fetchmany(_BATCH_ROWS):
                out.executemany(f'INSERT INTO "{table}" VALUES ({placeholders})', batch)
        out.commit()


def import_sqlite(sqlite_path: Path, duckdb_path: Path) -> None:
    """Rebuild the pipeline's own tables of a SQLite archive in a new DuckDB file.

    Analytics tables are not imported: the load materialises them again from ``events``.
    """
    with (
        sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True) as source,
        duckdb.connect(str(duckdb_path)) as con,
    ):
        con.execute("SET TimeZone = 'UTC'")
        for table in TABLES:
            for statement in duckdb_create(table):
                con.execute(statement)
            columns = _columns(con, table.name)
            names = [name for name, _, _ in columns]
            staged_schema = pa.schema([(name, _staged_type(kind)) for name, kind, _ in columns])
            casts = ", ".join(_import_expression(name, kind) for name, kind, _ in columns)
            quoted = ", ".join(f'"{name}"' for name in names)
            cursor = source.execute(f'SELECT {quoted} FROM "{table.name}"')
            while batch := cursor.fetchmany(_BATCH_ROWS):
                staged = pa.Table.from_arrays(
                    [
                        pa.array(values, kind)
                        for values, kind in zip(
                            zip(*batch, strict=True), staged_schema.types, strict=True
                        )
                    ],
                    schema=staged_schema,
                )
                con.register("staged", staged)
                try:
                    con.execute(f'INSERT INTO "{table.name}" SELECT {casts} FROM staged')
                finally:
                    con.unregister("staged")


def _staged_type(duckdb_type: str) -> pa.DataType:
    _, sqlite_type = _export_expression("", duckdb_type)
    return {"INTEGER": pa.int64(), "REAL": pa.float64()}.get(sqlite_type, pa.string())


def _import_expression(column: str, duckdb_type: str) -> str:
    quoted = f'"{column}"'
    if duckdb_type.endswith("[]"):
        return f"CAST(CAST({quoted} AS JSON) AS {duckdb_type})"
    return f"CAST({quoted} AS {duckdb_type})"
