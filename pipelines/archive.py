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
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import flyte.storage
import obstore
from flyte.io import File
from obstore.exceptions import (
    AlreadyExistsError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import ObjectStore, from_url

from pipelines.envs import worker
from pipelines.errors import QuakecatError, UsageError, first_line
from pipelines.files import (
    file_version,
    local_path,
    probe_folder,
    publish,
    scratch_folder,
    unwritable_folder,
)
from pipelines.load import SUFFIX_FORMATS, ExtractRef, check_database
from pipelines.task_fields import default

# Set when deploying (QUAKECAT_ARCHIVE=s3://bucket/quakecat/quakes.duckdb just deploy): where
# the scheduled runs keep their archive.
ARCHIVE_ENV = "QUAKECAT_ARCHIVE"


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
    """What tells one version of the object at ``uri`` from the next; ``""`` when absent. A blob
    store says it with an ETag and, where objects are versioned, a version, both of which S3,
    GCS and Azure take as a write's precondition; a local file as ``--out``'s check does."""
    if not flyte.storage.is_remote(uri):
        version = file_version(local_path(uri))
        return json.dumps(version) if version else ""
    store, name = object_store(uri)
    try:
        head = obstore.head(store, name)
    except FileNotFoundError:
        return ""
    return json.dumps({k: head[k] for k in ("e_tag", "version") if head[k]})


def object_store(uri: str) -> tuple[ObjectStore, str]:
    """The store holding ``uri``'s folder, configured as Flyte configures its own, and the name
    of the object in it."""
    folder, _, name = uri.rpartition("/")
    settings = flyte.storage.get_configured_fsspec_kwargs(urlparse(uri).scheme)
    return from_url(folder, **settings), name


@worker.task
def read_archive(uri: str, fmt: str, base_url: str) -> ArchiveState:
    """The archive at ``uri``, checked as the CLI checks ``--out``: a database of ``fmt`` that
    this quakecat can add to, and what it knows (read where it lies when on this machine)."""
    check_writable(uri)
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


def check_writable(uri: str) -> None:
    """Found out when a run starts, not after the whole run: the archive's place takes new
    objects (a probe beside it, written and removed). Reading is not enough: a bucket that is
    missing, or that the cluster may only read, would otherwise fail the run at its very end."""
    if not flyte.storage.is_remote(uri):
        path = local_path(uri)
        try:
            probe_folder(path)
        except OSError as exc:
            raise QuakecatError(f"archive {uri}: {unwritable_folder(path, exc)}") from None
        return
    store, name = object_store(uri)
    probe = f".{name}.{uuid.uuid4().hex[:8]}.probe"
    try:
        obstore.put(store, probe, b"", mode="create")
        obstore.delete(store, probe)
        return
    except FileNotFoundError:
        reason = "its bucket does not exist"
    except (PermissionDeniedError, UnauthenticatedError):
        reason = "this cluster's credentials may not write there"
    except Exception as exc:
        reason = first_line(exc)
    raise QuakecatError(
        f"archive {uri} cannot be written ({reason}); give an archive in a bucket this"
        " cluster may write to"
    )


@worker.task
def write_archive(database: File, uri: str, seen: str) -> None:
    """The run's ``database`` in place of the archive it read (see ``replace_archive``)."""
    replace_archive(database, uri, seen)


def replace_archive(database: File, uri: str, seen: str) -> None:
    """Put ``database`` at ``uri``, unless the archive there is no longer the version ``seen``
    that this run started from: another run added to it meanwhile, and replacing it would
    throw that away."""
    if fingerprint(uri) != seen:  # before downloading anything
        raise _changed(uri)
    if not flyte.storage.is_remote(uri):
        publish(database, local_path(uri))
        return
    with scratch_folder("load") as scratch:
        local = Path(scratch) / Path(uri).name
        database.download_sync(str(local))
        put_unless_changed(local, uri, seen)


def put_unless_changed(local: Path, uri: str, seen: str) -> None:
    """Write ``local`` to the blob store at ``uri`` if the object there is still the version
    ``seen`` (``""``: still absent), in one request, so that a run which wrote the archive after
    this one's last look is not overwritten either."""
    store, name = object_store(uri)
    try:
        # One PUT of the whole object (up to 5 GB on S3): readers get the old archive or the
        # new one. obstore's multipart upload would take no precondition.
        obstore.put(
            store, name, local, mode=json.loads(seen) if seen else "create", use_multipart=False
        )
    except (AlreadyExistsError, PreconditionError):
        raise _changed(uri) from None


def _changed(uri: str) -> QuakecatError:
    return QuakecatError(
        f"archive {uri} was changed by another run while this one went on; this run's"
        " database was not written there, so those changes stand: run again once it is done"
    )
