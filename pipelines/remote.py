"""A cluster run's database, fetched to a local file: find the run, download its first output.

``download_database`` connects with the cluster configuration (``.flyte/config.yaml`` or the other
places Flyte looks), finds the run (by name, or the latest successful run of the ``etl`` task),
and hands the run's first output, a ``flyte.io.File``, to ``fetch_file``. From there on a remote
run's File and a local one take the same path: the bytes go to a temporary file beside ``out``,
are checked to be a whole database, and only then replace ``out`` (``os.replace``). A failed or
interrupted download leaves ``out`` as it was and no temporary file behind.

The blob store is read with the caller's own credentials (``File.download_sync``), as for any
Flyte 2 client.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import flyte
import flyte.config
import flyte.storage
from flyte.io import File

from pipelines.envs import driver
from pipelines.errors import QuakecatError, first_line
from pipelines.files import partial_beside

# The top-level task (pipelines/etl.py): runs of it are what `download_database` looks for.
ETL_TASK = f"{driver.name}.etl"
NO_CLUSTER = (
    "no cluster configured: set the endpoint in .flyte/config.yaml "
    "(see README, Running on a cluster)"
)
# Endpoints that stand for "fill me in" (RFC 2606 names), as in the committed template.
_PLACEHOLDER_SUFFIXES = (".invalid", ".example", "example.com", "example.org", "example.net")
_DUCKDB_HEADERS = 3 * 4096  # the file header and two database headers, before the blocks
_SQLITE_MAGIC = b"SQLite format 3\x00"
_DUCKDB_MAGIC = b"DUCK"  # at offset 8, after the block checksum


def download_database(
    run_name: str | None,
    out: Path,
    *,
    config: Path | None = None,
    task_name: str = ETL_TASK,
    log_level: int = logging.CRITICAL,
) -> Path:
    """Download the database of run ``run_name`` (default: the latest successful ``task_name``
    run) to ``out``, atomically; return ``out``.

    ``config`` is the Flyte config file to use (default: where Flyte looks, starting with
    ``./.flyte/config.yaml``). Every failure is a QuakecatError with a one-line message.
    """
    cfg = cluster_config(config)
    flyte.init_from_config(cfg, log_level=log_level)
    run = _find_run(run_name, task_name, cfg)
    return fetch_file(_database_of(run, task_name, cfg), Path(out))


def cluster_config(config: Path | None = None) -> flyte.config.Config:
    """The Flyte configuration of a real cluster, or QuakecatError (``NO_CLUSTER``)."""
    if config is not None:
        if not Path(config).is_file():
            raise QuakecatError(f"config file {config} does not exist")
        path: Path | None = Path(config)
    else:
        # Looked up afresh: `flyte.config.auto()` caches its first answer for the process.
        from flyte.config._reader import resolve_config_path

        path = resolve_config_path()
    cfg = flyte.config.auto(path) if path is not None else flyte.config.Config()
    endpoint = cfg.platform.endpoint
    if not endpoint or _is_placeholder(endpoint):
        raise QuakecatError(NO_CLUSTER)
    if not cfg.task.project or not cfg.task.domain:
        raise QuakecatError(
            f"no project or domain configured: set task.project and task.domain in {path} "
            "(see README, Running on a cluster)"
        )
    return cfg


def _is_placeholder(endpoint: str) -> bool:
    host = endpoint.split("://", 1)[-1].lstrip("/").split("/", 1)[0].rsplit(":", 1)[0]
    return host.lower().rstrip(".").endswith(_PLACEHOLDER_SUFFIXES)


def _find_run(run_name: str | None, task_name: str, cfg: flyte.config.Config):
    from connectrpc.errors import ConnectError
    from flyte.models import ActionPhase
    from flyte.remote import Run

    finished = (ActionPhase.SUCCEEDED, ActionPhase.RECOVERED)  # RECOVERED: outputs reused as is
    where = f"project {cfg.task.project}, domain {cfg.task.domain}"
    try:
        if run_name:
            run = Run.get(run_name)
        else:
            latest = Run.listall(
                in_phase=finished,
                task_name=task_name,
                sort_by=("created_at", "desc"),
                limit=1,
            )
            run = next(iter(latest), None)
            if run is None:
                raise QuakecatError(
                    f"no successful run of {task_name} in {where}: start one (just etl-remote) "
                    "or name a run"
                )
    except ConnectError as exc:
        missing = (
            f"no such run: {run_name} (in {where})"
            if run_name
            else f"the cluster at {cfg.platform.endpoint} has no {where}"
        )
        raise _rpc_error(exc, cfg, missing) from None
    phase = ActionPhase(run.phase)
    if phase not in finished:
        state = {
            ActionPhase.FAILED: "failed",
            ActionPhase.ABORTED: "was aborted",
            ActionPhase.TIMED_OUT: "timed out",
        }.get(phase, f"is still {phase.value.replace('_', ' ')}")
        raise QuakecatError(
            f"run {run.name} {state}, so it has no database (see: flyte get run {run.name})"
        )
    return run


def _database_of(run, task_name: str, cfg: flyte.config.Config) -> File:
    from connectrpc.errors import ConnectError

    try:
        outputs = run.typed_outputs({"o0": File})
    except ConnectError as exc:
        raise _rpc_error(exc, cfg, f"run {run.name} has no outputs stored") from None
    except Exception as exc:
        raise QuakecatError(
            f"run {run.name}: its first output is not a file ({first_line(exc)}); "
            f"is it a run of {task_name}?"
        ) from None
    database = outputs.get("o0")
    if not isinstance(database, File):
        raise QuakecatError(f"run {run.name} has no database output; is it a run of {task_name}?")
    return database


def _rpc_error(exc, cfg: flyte.config.Config, not_found: str) -> QuakecatError:
    from connectrpc.code import Code

    if exc.code == Code.NOT_FOUND:
        return QuakecatError(not_found)
    if exc.code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
        return QuakecatError(
            f"the cluster at {cfg.platform.endpoint} refused the request ({exc.code.name.lower()}):"
            f" {first_line(exc)}"
        )
    return QuakecatError(f"cannot reach the cluster at {cfg.platform.endpoint}: {first_line(exc)}")


def fetch_file(database: File, out: Path) -> Path:
    """Copy ``database`` (any ``flyte.io.File``, local or remote) to ``out`` atomically.

    The bytes land in a temporary file beside ``out``; it replaces ``out`` only once the download
    has finished and the file opens as a DuckDB or SQLite database. Otherwise QuakecatError, with
    ``out`` as it was and the temporary file removed.
    """
    out = Path(out)
    if out.is_dir():
        raise QuakecatError(f"{out} is a directory; give a file path such as data/quakes.duckdb")
    source = database.path
    with partial_beside(out) as partial:
        try:
            landed = database.download_sync(str(partial))
        except Exception as exc:
            reason, hint = first_line(exc), ""
            if flyte.storage.is_remote(source):
                if isinstance(exc, FileNotFoundError):
                    reason = "the blob store has no object there (removed since the run wrote it?)"
                else:
                    hint = " (reading the cluster's blob store needs your own credentials for it)"
            raise QuakecatError(f"downloading {source} failed: {reason}{hint}") from None
        if Path(landed).absolute() != partial.absolute() or not partial.is_file():
            raise QuakecatError(f"downloading {source} wrote {landed}, not a file at {partial}")
        expected, got = _size(source), partial.stat().st_size
        if expected is not None and got != expected:
            raise QuakecatError(
                f"downloading {source} stopped short: {got:,} of {expected:,} bytes"
            )
        try:
            table_counts(partial)
        except QuakecatError as exc:
            raise QuakecatError(f"downloaded {source} is not a whole database: {exc}") from None
    return out


def _size(source: str) -> int | None:
    """The size of the stored file, when the store can tell (None: not checked)."""
    try:
        return int(flyte.storage.get_underlying_filesystem(path=source).size(source))
    except Exception:
        return None


def database_format(path: Path) -> str:
    """``"duckdb"`` or ``"sqlite"``, from the file's header; else QuakecatError."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
    except FileNotFoundError:
        raise QuakecatError(f"{path} does not exist") from None
    except OSError as exc:
        raise QuakecatError(f"cannot read {path}: {exc.strerror}") from None
    if header == _SQLITE_MAGIC:
        return "sqlite"
    if header[8:12] == _DUCKDB_MAGIC:
        return "duckdb"
    raise QuakecatError(f"{path} is neither a DuckDB nor a SQLite database")


def table_counts(path: Path) -> dict[str, int]:
    """Rows per table of a DuckDB or SQLite file, by table name (``schema.name`` outside main)."""
    path = Path(path)
    if database_format(path) == "sqlite":
        return _sqlite_counts(path)
    return _duckdb_counts(path)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _duckdb_counts(path: Path) -> dict[str, int]:
    import duckdb

    try:
        with duckdb.connect(str(path), read_only=True) as db:
            # At least every block in use must be there. (Not every block counted: DuckDB cuts
            # free blocks off the end of its file but keeps counting them.)
            ((block_size, used),) = db.execute(
                "SELECT block_size, used_blocks FROM pragma_database_size() "
                "WHERE database_name = current_database()"
            ).fetchall()
            _check_length(path, _DUCKDB_HEADERS + block_size * used)
            tables = db.execute(
                "SELECT schema_name, table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND NOT internal AND NOT temporary "
                "ORDER BY schema_name, table_name"
            ).fetchall()
            counts = {}
            for schema, table in tables:
                ((count,),) = db.execute(
                    f"SELECT count(*) FROM {_quote(schema)}.{_quote(table)}"
                ).fetchall()
                counts[table if schema == "main" else f"{schema}.{table}"] = count
            return counts
    except duckdb.Error as exc:
        raise QuakecatError(f"{path}: DuckDB cannot read it: {first_line(exc)}") from None


def _check_length(path: Path, expected: int) -> None:
    """A database file is at least as long as its header says: else it was cut short."""
    size = path.stat().st_size
    if size < expected:
        raise QuakecatError(f"{path} is cut short: {size:,} bytes, its header says {expected:,}")


def _sqlite_counts(path: Path) -> dict[str, int]:
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise QuakecatError(f"{path}: SQLite cannot open it: {exc}") from None
    try:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        _check_length(path, page_size * pages)
        tables = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
            "ESCAPE '\\' ORDER BY name"
        ).fetchall()
        return {
            name: db.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
            for (name,) in tables
        }
    except sqlite3.Error as exc:
        raise QuakecatError(f"{path}: SQLite cannot read it: {exc}") from None
    finally:
        db.close()
