"""A cluster run's archive, in Flyte's local mode: the task code a scheduled run executes, with
the archive at a local path where a cluster has a blob store (no cluster is reachable here)."""

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
    replace_archive,
    scheduled_archive,
)
from pipelines.cli import local_runner
from pipelines.errors import QuakecatError, UsageError
from pipelines.etl import etl
from pipelines.extract import FetchRequest
from pipelines.fdsn.client import ClientSettings
from pipelines.fdsn.fake import Catalogue, FakeFDSN
from tests.conftest import utc

pytestmark = pytest.mark.slow


def _run(service: FakeFDSN, start, end, archive: Path, raw: Path):
    flyte.init(log_level=logging.CRITICAL)
    run = local_runner(raw, cache=False).run(
        etl,
        start=start,
        end=end,
        request=FetchRequest(client=ClientSettings(base_url=service.base_url, max_attempts=1)),
        fmt=archive_format(str(archive)) or "duckdb",
        archive=str(archive),
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
    may_catalogue: Catalogue, tmp_path: Path, name: str
):
    archive = tmp_path / "store" / name
    with FakeFDSN(may_catalogue) as service:
        _run(service, utc(2024, 5, 1), utc(2024, 5, 3), archive, tmp_path / "raw1")
        first = [r.path for r in service.log]
        service.reset_log()
        database, _report, summary = _run(
            service, utc(2024, 5, 3), utc(2024, 5, 6), archive, tmp_path / "raw2"
        )
        second = [r.path for r in service.log]
    # The first run made the archive; the second added its days to it, and the run's own
    # database output (what `just download` fetches) is that archive.
    assert _events(archive) == (may_catalogue.count(utc(2024, 5, 1), utc(2024, 5, 6)), 2)
    assert summary.events_total == _events(archive)[0]
    assert Path(database.path).read_bytes() == archive.read_bytes()
    # The archive told the second run the search limit, as --out does: no count request.
    assert (first, second) == (["count", "query", "query"], ["query"] * 3)
    assert sorted(p.name for p in archive.parent.iterdir()) == [name]


def test_an_archive_this_quakecat_cannot_add_to_fails_the_run_naming_it(
    may_catalogue: Catalogue, tmp_path: Path
):
    archive = tmp_path / "quakes.duckdb"
    archive.write_bytes(b"a file of someone else's")
    with FakeFDSN(may_catalogue) as service, pytest.raises(Exception) as caught:
        _run(service, utc(2024, 5, 1), utc(2024, 5, 2), archive, tmp_path / "raw")
    first_line = str(caught.value).splitlines()[0]
    assert f"{archive} is not a quakecat DuckDB database (" in first_line
    assert first_line.endswith(
        "choose another archive (a file quakecat did not write is never replaced)"
    )
    assert archive.read_bytes() == b"a file of someone else's"
    assert service.log == []  # refused before any request


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


def test_an_archive_another_run_changed_meanwhile_is_left_as_that_run_wrote_it(tmp_path: Path):
    archive, ours = tmp_path / "quakes.duckdb", tmp_path / "ours.duckdb"
    archive.write_bytes(b"version 1")
    ours.write_bytes(b"this run's database")
    seen = fingerprint(str(archive))
    archive.write_bytes(b"version 2, by another run")
    with pytest.raises(QuakecatError) as caught:
        replace_archive(File(path=str(ours)), str(archive), seen)
    assert str(caught.value) == (
        f"archive {archive} was changed by another run while this one went on; this run's"
        " database was not written there, so those changes stand: run again once it is done"
    )
    assert archive.read_bytes() == b"version 2, by another run"
    # Unchanged since it was read (here: still absent), it is replaced, atomically.
    fresh = tmp_path / "new" / "quakes.duckdb"
    replace_archive(File(path=str(ours)), f"file://{fresh}", fingerprint(str(fresh)))
    assert fresh.read_bytes() == b"this run's database"
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["quakes.duckdb"]


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
