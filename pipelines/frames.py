"""Partitions between tasks: the Parquet files behind a ``flyte.io.DataFrame``, read where they
lie.

Flyte's own ``DataFrame.open`` copies even a frame on this machine into the temporary folder
before reading it, and the copy stays there until the run ends: 400 MB of a ten-year backfill's
scratch space, written for nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import flyte.storage
import pyarrow as pa
import pyarrow.parquet as pq
from flyte.io import DataFrame

from pipelines.errors import QuakecatError
from pipelines.files import local_path, scratch_folder


def parquet_files(frame: DataFrame, scratch: str | Path, n: int = 0) -> list[Path]:
    """The Parquet files behind partition ``n``'s ``frame`` on this machine: where they are, or
    downloaded into ``scratch`` from a blob store."""
    if frame.format != "parquet" or not frame.uri:
        raise QuakecatError(f"partition {n} is not stored as Parquet ({frame.format}, {frame.uri})")
    if flyte.storage.is_remote(frame.uri):
        local = Path(scratch) / f"partition-{n:05d}"
        asyncio.run(flyte.storage.get(frame.uri, str(local), recursive=True))
    else:
        local = local_path(frame.uri)
    return sorted(p for p in local.rglob("*") if p.is_file())


def read_table(frame: DataFrame) -> pa.Table:
    """The rows of ``frame``, in memory (a download from a blob store goes when they are read)."""
    with scratch_folder("read") as scratch:
        return pq.read_table(parquet_files(frame, scratch))
