"""Shared fixtures: a fake FDSN service and an S3 server on 127.0.0.1, and helpers to run the
real CLI."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.fdsn.client import FetchStats
from pipelines.fdsn.fake import Catalogue, FakeFDSN, generate_catalogue
from pipelines.load import RunRecord
from pipelines.plan import Window
from tests.blobstore import Folder, new_bucket, s3_server

UTC = dt.UTC
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "usgs-real"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def parquet_files(tables: list[pa.Table], directory: Path, stem: str = "part") -> list[Path]:
    """``tables`` written as the Parquet files a load reads (transform outputs), in order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}-{i:03d}.parquet" for i in range(len(tables))]
    for table, path in zip(tables, paths, strict=True):
        pq.write_table(table, path)
    return paths


def run_record(run_id: str, window: Window, **fields: Any) -> RunRecord:
    """What the driver hands a load, for a load a test calls directly: ``fields`` replace the
    plain values (a local service, no filter, one partition, started as the window ends)."""
    plain = {
        "started_at": window.end,
        "base_url": "http://127.0.0.1/fdsnws/event/1",
        "min_magnitude": None,
        "partitions": 1,
        "stats": FetchStats(),
        "code_version": "test",
    }
    return RunRecord(run_id=run_id, window=window, **{**plain, **fields})


@pytest.fixture(scope="session")
def may_catalogue() -> Catalogue:
    """Five days of May 2024 at a realistic all-magnitude rate."""
    return generate_catalogue(utc(2024, 5, 1), utc(2024, 5, 6), per_day=360, seed=11)


@pytest.fixture
def service(may_catalogue: Catalogue) -> Iterator[FakeFDSN]:
    with FakeFDSN(may_catalogue) as fake:
        yield fake


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Folder:
    """A new bucket of the S3 server, and Flyte's settings to reach it, for this test."""
    return Folder(new_bucket(s3_endpoint, monkeypatch), tmp_path)


@pytest.fixture
def quakecat(capsys: pytest.CaptureFixture[str]):
    """Run the real CLI in-process; returns (exit code, stdout, stderr).

    Without Flyte's cache: in one process its database is fixed at the first run, and a fake
    service on a reused port must never be served another test's partitions (caching is
    tested in subprocesses of its own, in tests/test_incremental.py).
    """

    def run(*argv: str) -> tuple[int, str, str]:
        if argv[:1] == ("demo",):
            code = main([*argv, "--no-cache"])
        else:
            # Three attempts unless a test asks for more: the last --max-attempts given wins.
            code = main(["etl", "--max-attempts", "3", *argv, "--no-cache"])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def retry_notice(base_url: str, reason: str, attempt: int | str, of: int) -> re.Pattern[str]:
    """The line a run prints before it retries a request (``reason`` and ``attempt`` may be
    regexes); the group ``request`` is the URL and window retried."""
    return re.compile(
        rf"quakecat: (?P<request>{re.escape(base_url)}/(query|count) \(\S+ to \S+\)): {reason}; "
        rf"retrying in [\d.]+ s \(attempt {attempt} of {of}\)"
    )


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a user's stderr does."""

    def isatty(self) -> bool:
        return True
