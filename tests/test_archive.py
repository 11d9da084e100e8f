"""A cluster run's archive, in Flyte's local mode: the task code a scheduled run executes, with
the archive in a local folder, and in an S3 bucket of a real S3-protocol server on 127.0.0.1
(moto's) reached through Flyte's own storage settings as a pod reaches its blob store. In the S3
case the runs also write every output (partitions, stages, database, report) to a bucket, as
runs on a cluster do."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

import duckdb
import flyte
import pytest
from flyte.io import File

from pipelines.archive import (
    ARCHIVE_ENV,
    archive_format,
    fingerprint,
    put_unless_changed,
    replace_archive,
    scheduled_archive,
)
from pipelines.cli import local_runner
from pipelines.errors import QuakecatError, UsageError
from pipelines.etl import etl
from pipelines.extract import FetchRequest
from pipelines.fdsn.client import ClientSettings
from pipelines.fdsn.fake import Catalogue, FakeFDSN
from tests.blobstore import Folder, new_bucket
from tests.conftest import utc

pytestmark = pytest.mark.slow


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path: Path) -> Folder:
    if request.param == "local":
        (tmp_path / "store").mkdir()
        return Folder(str(tmp_path / "store"), tmp_path)
    return request.getfixturevalue("bucket")


@pytest.fixture
def outputs(folder: Folder, tmp_path: Path, request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where runs write their outputs: a local folder, or, beside an archive in a bucket, a
    bucket of their own, as on a cluster (its partitions, stages, database and report)."""
    if not folder.remote:
        return str(tmp_path / "raw")
    # Flyte's local mode makes an empty local folder named after a remote raw-data path
    # ("s3:/BUCKET/..."), in the working directory.
    monkeypatch.chdir(tmp_path)
    return new_bucket(request.getfixturevalue("s3_endpoint"), monkeypatch)


def _run(service: FakeFDSN, start, end, archive: str, raw: str, metadata: Path):
    flyte.init(log_level=logging.CRITICAL)
    run = local_runner(raw, cache=False, metadata=metadata).run(
        etl,
        start=start,
        end=end,
        request=FetchRequest(client=ClientSettings(base_url=service.base_url, max_attempts=1)),
        fmt=archive_format(archive) or "duckdb",
        archive=archive,
    )
    return run.outputs()


def _events(path: Path) -> tuple[int, int]:
    with contextlib.closing(
        sqlite3.connect(path)
        if archive_format(str(path)) == "sqlite"
        else duckdb.connect(str(path))
    ) as con:
        ((events,),) = con.execute("SELECT count(*) FROM events").fetchall()
        ((runs,),) = con.execute("SELECT count(*) FROM etl_runs").fetchall()
    return events, runs


@pytest.mark.parametrize("name", ["quakes.duckdb", "quakes.sqlite"])
def test_runs_with_an_archive_add_to_it_as_local_runs_add_to_out(
    may_catalogue: Catalogue, tmp_path: Path, folder: Folder, outputs: str, name: str
):
    archive = folder.uri(name)
    with FakeFDSN(may_catalogue) as service:
        _run(service, utc(2024, 5, 1), utc(2024, 5, 3), archive, f"{outputs}/1", tmp_path / "m1")
        first = [r.path for r in service.log]
        service.reset_log()
        database, _report, summary = _run(
            service, utc(2024, 5, 3), utc(2024, 5, 6), archive, f"{outputs}/2", tmp_path / "m2"
        )
        second = [r.path for r in service.log]
    # The first run made the archive; the second added its days to it, and the run's own
    # database output (what `just download` fetches) is that archive.
    expected = may_catalogue.count(utc(2024, 5, 1), utc(2024, 5, 6))
    assert _events(folder.copy(name)) == (expected, 2)
    assert summary.events_total == expected
    assert database.path.startswith(f"{outputs}/2/")
    assert Path(database.download_sync(str(tmp_path / name))).read_bytes() == folder.read(name)
    # The archive told the second run the search limit, as --out does: no count request.
    assert (first, second) == (["count", "query", "query"], ["query"] * 3)
    assert folder.names() == [name]


def test_an_archive_this_quakecat_cannot_add_to_fails_the_run_naming_it(
    may_catalogue: Catalogue, tmp_path: Path, folder: Folder
):
    folder.write("quakes.duckdb", b"a file of someone else's")
    archive = folder.uri("quakes.duckdb")
    with FakeFDSN(may_catalogue) as service, pytest.raises(Exception) as caught:
        _run(service, utc(2024, 5, 1), utc(2024, 5, 2), archive, str(tmp_path / "raw"), tmp_path)
    first_line = str(caught.value).splitlines()[0]
    assert f"{archive} is not a quakecat DuckDB database (" in first_line
    assert first_line.endswith(
        "choose another archive (a file quakecat did not write is never replaced)"
    )
    assert folder.read("quakes.duckdb") == b"a file of someone else's"
    assert service.log == []  # refused before any request


@pytest.mark.parametrize("where", ["missing bucket", "file for a folder"])
def test_an_archive_the_run_could_not_write_fails_it_before_any_request(
    may_catalogue: Catalogue, tmp_path: Path, bucket: Folder, where: str
):
    # (bucket: for Flyte's settings of the S3 server, where this bucket is not.)
    if where == "missing bucket":
        archive = "s3://no-such-bucket/quakecat/quakes.duckdb"
        reason = " cannot be written (its bucket does not exist); give an archive in a bucket"
    else:
        (tmp_path / "taken").write_text("a file where the archive's folder would be")
        archive = str(tmp_path / "taken" / "quakes.duckdb")
        reason = f": {tmp_path / 'taken'} is a file, not a folder"
    with FakeFDSN(may_catalogue) as service, pytest.raises(Exception) as caught:
        _run(service, utc(2024, 5, 1), utc(2024, 5, 2), archive, str(tmp_path / "raw"), tmp_path)
    assert f"archive {archive}{reason}" in str(caught.value).splitlines()[0]
    assert service.log == []  # found out before any request, not at the end of the run


def test_an_archive_named_for_the_other_format_fails_before_any_request(
    may_catalogue: Catalogue, tmp_path: Path
):
    archive = tmp_path / "quakes.sqlite"
    flyte.init(log_level=logging.CRITICAL)
    with FakeFDSN(may_catalogue) as service, pytest.raises(Exception) as caught:
        local_runner(tmp_path / "raw", cache=False).run(
            etl,
            start=utc(2024, 5, 1),
            end=utc(2024, 5, 2),
            request=FetchRequest(client=ClientSettings(base_url=service.base_url)),
            archive=str(archive),
        )
    assert (
        str(caught.value)
        .splitlines()[0]
        .endswith(
            f"archive {archive} is named as a sqlite file but fmt is duckdb; pass fmt sqlite"
            " (flyte run: --fmt) or rename the archive"
        )
    )
    assert service.log == []
    assert not archive.exists()


def test_an_archive_another_run_changed_meanwhile_is_left_as_that_run_wrote_it(
    tmp_path: Path, folder: Folder
):
    ours = tmp_path / "ours.duckdb"
    ours.write_bytes(b"this run's database")
    folder.write("quakes.duckdb", b"version 1")
    archive = folder.uri("quakes.duckdb")
    seen = fingerprint(archive)
    folder.write("quakes.duckdb", b"version 2")  # the same size: only its version tells
    changed = (
        f"archive {archive} was changed by another run while this one went on; this run's"
        " database was not written there, so those changes stand: run again once it is done"
    )
    with pytest.raises(QuakecatError) as caught:
        replace_archive(File(path=str(ours)), archive, seen)
    assert str(caught.value) == changed
    assert folder.read("quakes.duckdb") == b"version 2"
    # Unchanged since it was read (here: still absent), it is replaced, atomically.
    fresh = folder.uri("new.duckdb")
    replace_archive(File(path=str(ours)), fresh, fingerprint(fresh))
    assert folder.read("new.duckdb") == b"this run's database"
    assert folder.names() == ["new.duckdb", "quakes.duckdb"]


@pytest.mark.parametrize("seen", ["version 1", None], ids=["replaced", "created"])
def test_a_blob_store_takes_the_write_only_if_the_archive_is_still_as_read(
    tmp_path: Path, bucket: Folder, seen: str | None
):
    # Another run may write the archive after this one's last look, while its database
    # downloads: the store itself refuses the write then.
    archive = bucket.uri("quakes.duckdb")
    if seen:
        bucket.write("quakes.duckdb", seen.encode())
    as_read = fingerprint(archive)
    bucket.write("quakes.duckdb", b"version 2")
    ours = tmp_path / "ours.duckdb"
    ours.write_bytes(b"this run's database")
    with pytest.raises(QuakecatError, match="was changed by another run while this one went on"):
        put_unless_changed(ours, archive, as_read)
    assert bucket.read("quakes.duckdb") == b"version 2"
    put_unless_changed(ours, archive, fingerprint(archive))
    assert bucket.read("quakes.duckdb") == b"this run's database"


def test_the_scheduled_archive_is_a_storage_uri(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ARCHIVE_ENV, raising=False)
    assert scheduled_archive() == ""
    monkeypatch.setenv(ARCHIVE_ENV, " s3://bucket/quakecat/quakes.sqlite ")
    assert scheduled_archive() == "s3://bucket/quakecat/quakes.sqlite"
    assert archive_format(scheduled_archive()) == "sqlite"
    assert archive_format("gs://bucket/quakes.duckdb") == "duckdb"
    assert archive_format("gs://bucket/quakes") is None
    monkeypatch.setenv(ARCHIVE_ENV, "/data/quakes.duckdb")
    with pytest.raises(UsageError) as caught:
        scheduled_archive()
    assert str(caught.value) == (
        "QUAKECAT_ARCHIVE='/data/quakes.duckdb' is not a storage URI; a scheduled run has no disk"
        " that outlives it: give the cluster's blob store, such as"
        " s3://BUCKET/quakecat/quakes.duckdb"
    )
