"""The archive a cluster run adds to: one database at a storage URI (``s3://...``), read when a
run starts and replaced by the run's database when it ends.

A local run keeps its archive in ``--out``. A run on a cluster has no disk that outlives it: without
an archive, each scheduled run would build a database of its own seven days only, and a download
would get one week, not the catalogue.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import flyte.storage
from flyte.io import File

from pipelines.envs import worker
from pipelines.errors import QuakecatError, UsageError
from pipelines.files import local_path, publish, scratch_folder
from pipelines.load import SUFFIX_FORMATS, ExtractRef, check_database
from pipelines.task_fields import default

# Set when deploying (QUAKECAT_ARCHIVE=s3://bucket/quakecat/quakes.duckdb just deploy): where
# the scheduled runs keep their archive.
ARCHIVE_ENV = "QUAKECAT_ARCHIVE"

# What a store tells of an object that changes with every write: local files (size, mtime,
# inode), S3 (ETag, LastModified), GCS (generation), Azure (etag, last_modified).
_VERSION_KEYS = ("size", "mtime", "ino", "ETag", "LastModified", "generation", "etag")


@dataclass
class ArchiveState:
    """The archive as a run found it when it started."""

    # Its version as read; "" when there is no archive yet, and this run makes it. The archive
    # is replaced only if it still has this version.
    seen: str = default("")
    # What an earlier run learned, as check_database reads it from a local archive.
    max_allowed: int | None = default(None)
    held: list[ExtractRef] = field(default_factory=list)


def scheduled_archive() -> str:
    """The archive the schedule passes to its runs (``""``: none, each run builds its own)."""
    uri = os.environ.get(ARCHIVE_ENV, "").strip()
    if uri and not flyte.storage.is_remote(uri):
        raise UsageError(
            f"{ARCHIVE_ENV}={uri!r} is not a storage URI; a scheduled run has no disk that"
            " outlives it: give the cluster's blob store, such as"
            " s3://BUCKET/quakecat/quakes.duckdb"
        )
    return uri


def archive_format(uri: str) -> str | None:
    """The format the archive's name says (``None`` when it says none)."""
    return SUFFIX_FORMATS.get(Path(uri).suffix.lower())


def check_archive_format(uri: str, fmt: str) -> None:
    named = archive_format(uri)
    if named and named != fmt:
        raise UsageError(
            f"archive {uri} is named as a {named} file but fmt is {fmt}; pass fmt {named}"
            " (flyte run: --fmt) or rename the archive"
        )


def fingerprint(uri: str) -> str:
    """What tells one version of the object at ``uri`` from the next; ``""`` when absent."""
    path = uri if flyte.storage.is_remote(uri) else str(local_path(uri))
    store = flyte.storage.get_underlying_filesystem(path=path)
    try:
        info = store.info(path)
    except FileNotFoundError:
        return ""
    return json.dumps({k: info[k] for k in _VERSION_KEYS if k in info}, default=str)


@worker.task
def read_archive(uri: str, fmt: str, base_url: str) -> ArchiveState:
    """The archive at ``uri``, checked as the CLI checks ``--out``: a database of ``fmt`` that
    this quakecat can add to, and what it knows (read where it lies when on this machine)."""
    seen = fingerprint(uri)
    if not seen:
        return ArchiveState()
    with scratch_folder("load") as scratch:
        local = local_path(uri)
        if flyte.storage.is_remote(uri):
            local = Path(scratch) / f"archive.{fmt}"
            asyncio.run(flyte.storage.get(uri, str(local)))
        archive = check_database(local, fmt, base_url, name=uri, option="archive")
    return ArchiveState(seen, archive.max_allowed, list(archive.held))


@worker.task
def write_archive(database: File, uri: str, seen: str) -> None:
    """The run's ``database`` in place of the archive it read (see ``replace_archive``)."""
    replace_archive(database, uri, seen)


def replace_archive(database: File, uri: str, seen: str) -> None:
    """Put ``database`` at ``uri``, unless the archive there is no longer the version ``seen``
    that this run started from: another run added to it meanwhile, and replacing it would
    throw that away."""
    if fingerprint(uri) != seen:
        raise QuakecatError(
            f"archive {uri} was changed by another run while this one went on; this run's"
            " database was not written there, so those changes stand: run again once it is done"
        )
    if not flyte.storage.is_remote(uri):
        publish(database, local_path(uri))
        return
    with scratch_folder("load") as scratch:
        local = Path(scratch) / Path(uri).name
        database.download_sync(str(local))
        # One object, written whole: a reader of the store gets the old archive or the new one.
        asyncio.run(flyte.storage.put(str(local), uri))
