"""Fetching a run's database: the atomic download, table counts, and finding the run.

No cluster exists here. A remote run's first output is a `flyte.io.File`; `fetch_file` is what
`download_database` hands it to, so these tests drive `fetch_file` with a local File
(`File.from_local_sync` of a real DuckDB database made by the test): the same code path, with
`File.download_sync` reading the local file instead of the blob store. Finding the run is driven
through a stand-in for `flyte.remote.Run` (clearly not the cluster), and the error paths that need
no cluster (no endpoint configured, an unreachable endpoint) run the real SDK.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import duckdb
import flyte
import flyte.remote
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyte.io import File
from flyte.models import ActionPhase

import pipelines.remote as remote
from pipelines.errors import QuakecatError
from pipelines.remote import (
    ETL_TASK,
    NO_CLUSTER,
    database_format,
    download_database,
    fetch_file,
    table_counts,
)
from tests.blobstore import Folder

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def local_flyte() -> None:
    """`File.from_local_sync` needs Flyte initialised; no endpoint means local."""
    flyte.init()


def make_duckdb(path: Path, events: int, runs: int = 1) -> Path:
    with duckdb.connect(str(path)) as db:
        db.execute("CREATE TABLE events (id VARCHAR PRIMARY KEY, mag DOUBLE)")
        db.execute("INSERT INTO events SELECT 'ev' || range, range / 10 FROM range(?)", [events])
        db.execute("CREATE TABLE etl_runs (run_id VARCHAR)")
        db.execute("INSERT INTO etl_runs SELECT 'run' || range FROM range(?)", [runs])
        db.execute('CREATE TABLE "odd ""name""" (x INTEGER)')
        db.execute("CREATE SCHEMA extra")
        db.execute("CREATE TABLE extra.notes AS SELECT 1 AS x UNION ALL SELECT 2")
        db.execute("CREATE VIEW big_events AS SELECT * FROM events WHERE mag > 1")
    return path


def make_sqlite(path: Path, events: int) -> Path:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, mag REAL)")
        db.executemany(
            "INSERT INTO events VALUES (?, ?)", [(f"ev{i}", i / 10) for i in range(events)]
        )
        db.execute("CREATE TABLE etl_runs (run_id TEXT)")
        db.execute("INSERT INTO etl_runs VALUES ('run0')")
        db.execute("CREATE VIEW big_events AS SELECT * FROM events WHERE mag > 1")
    db.close()
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    return make_duckdb(tmp_path / "run" / "quakes.duckdb", events=500, runs=2)


@pytest.fixture
def old_out(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return make_duckdb(tmp_path / "data" / "quakes.duckdb", events=3)


EXPECTED = {"etl_runs": 2, "events": 500, "extra.notes": 2, 'odd "name"': 0}


def test_fetch_to_new_path(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "fresh" / "dir" / "quakes.duckdb"
    assert fetch_file(File.from_local_sync(source), out) == out
    assert out.read_bytes() == source.read_bytes()
    assert table_counts(out) == EXPECTED
    assert leftovers(out.parent) == []


def test_fetch_replaces_existing(source: Path, old_out: Path) -> None:
    assert table_counts(old_out)["events"] == 3
    fetch_file(File.from_local_sync(source), old_out)
    assert table_counts(old_out) == EXPECTED
    assert leftovers(old_out.parent) == []


def test_vanished_source_leaves_existing(source: Path, old_out: Path) -> None:
    database = File.from_local_sync(source)
    source.unlink()
    before = old_out.read_bytes()
    with pytest.raises(QuakecatError, match=rf"^downloading {source} failed: .*No such file"):
        fetch_file(database, old_out)
    assert old_out.read_bytes() == before
    assert leftovers(old_out.parent) == []


def test_fetch_from_a_blob_store(tmp_path: Path, source: Path, bucket: Folder) -> None:
    # As `just download` reads a cluster run's output: an s3:// File, through Flyte's storage.
    bucket.write("run/quakes.duckdb", source.read_bytes())
    out = tmp_path / "data" / "remote.duckdb"
    assert fetch_file(File(path=bucket.uri("run/quakes.duckdb")), out) == out
    assert out.read_bytes() == source.read_bytes()
    assert table_counts(out) == EXPECTED
    assert leftovers(out.parent) == []


def test_an_object_gone_from_the_blob_store_is_named(old_out: Path, bucket: Folder) -> None:
    gone = bucket.uri("run/quakes.duckdb")
    before = old_out.read_bytes()
    with pytest.raises(QuakecatError) as caught:
        fetch_file(File(path=gone), old_out)
    assert str(caught.value) == (
        f"downloading {gone} failed: the blob store has no object there (removed since the run"
        " wrote it?)"
    )
    assert old_out.read_bytes() == before
    assert leftovers(old_out.parent) == []


def test_download_failing_midway_leaves_existing(
    monkeypatch: pytest.MonkeyPatch, source: Path, old_out: Path
) -> None:
    def half_then_fail(self: File, local_path: str | None = None) -> str:
        data = Path(self.path).read_bytes()
        Path(local_path).write_bytes(data[: len(data) // 2])
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(File, "download_sync", half_then_fail)
    before = old_out.read_bytes()
    with pytest.raises(QuakecatError) as caught:
        fetch_file(File.from_local_sync(source), old_out)
    assert str(caught.value) == f"downloading {source} failed: connection reset by peer"
    assert old_out.read_bytes() == before
    assert leftovers(old_out.parent) == []


def test_short_download_is_refused(
    monkeypatch: pytest.MonkeyPatch, source: Path, old_out: Path
) -> None:
    """A download that ends without an error but without its last block never replaces out."""

    def short(self: File, local_path: str | None = None) -> str:
        data = Path(self.path).read_bytes()
        Path(local_path).write_bytes(data[:-4096])
        return str(local_path)

    monkeypatch.setattr(File, "download_sync", short)
    before = old_out.read_bytes()
    size = source.stat().st_size
    with pytest.raises(QuakecatError) as caught:
        fetch_file(File.from_local_sync(source), old_out)
    assert str(caught.value) == (
        f"downloading {source} stopped short: {size - 4096:,} of {size:,} bytes"
    )
    assert old_out.read_bytes() == before
    assert leftovers(old_out.parent) == []


def test_corrupt_download_is_refused(
    monkeypatch: pytest.MonkeyPatch, source: Path, old_out: Path
) -> None:
    """When the store cannot tell the size, the file must still open as a database."""
    monkeypatch.setattr(remote, "_size", lambda _source: None)

    def half(self: File, local_path: str | None = None) -> str:
        data = Path(self.path).read_bytes()
        Path(local_path).write_bytes(data[: len(data) // 2])
        return str(local_path)

    monkeypatch.setattr(File, "download_sync", half)
    before = old_out.read_bytes()
    with pytest.raises(QuakecatError, match=rf"^downloaded {source} is not a whole database: "):
        fetch_file(File.from_local_sync(source), old_out)
    assert old_out.read_bytes() == before
    assert leftovers(old_out.parent) == []


def test_out_is_a_directory(tmp_path: Path, source: Path) -> None:
    with pytest.raises(QuakecatError, match=r"is a directory; give a file path"):
        fetch_file(File.from_local_sync(source), tmp_path)


def test_orphans_of_dead_processes_are_removed(source: Path, old_out: Path) -> None:
    dead = old_out.with_name(f".{old_out.name}.{2**22 + 1}-0123abcd.partial")  # > any pid_max
    alive = old_out.with_name(f".{old_out.name}.{os.getpid()}-89abcdef.partial")
    dead.write_bytes(b"left by a killed download")
    alive.write_bytes(b"being written right now")
    fetch_file(File.from_local_sync(source), old_out)
    assert leftovers(old_out.parent) == [alive.name]


def test_table_counts_duckdb(tmp_path: Path) -> None:
    path = make_duckdb(tmp_path / "a.duckdb", events=7, runs=3)
    assert database_format(path) == "duckdb"
    assert table_counts(path) == {"etl_runs": 3, "events": 7, "extra.notes": 2, 'odd "name"': 0}


def test_table_counts_sqlite(tmp_path: Path) -> None:
    path = make_sqlite(tmp_path / "a.sqlite", events=11)
    assert database_format(path) == "sqlite"
    assert table_counts(path) == {"etl_runs": 1, "events": 11}
    assert list(tmp_path.iterdir()) == [path]  # read-only: no journal left behind


def test_table_counts_refuses_other_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database at all")
    with pytest.raises(QuakecatError) as caught:
        table_counts(text)
    assert str(caught.value) == f"{text} is neither a DuckDB nor a SQLite database"
    with pytest.raises(QuakecatError) as caught:
        table_counts(tmp_path / "missing.duckdb")
    assert str(caught.value) == f"{tmp_path / 'missing.duckdb'} does not exist"


def test_etl_task_name() -> None:
    from pipelines.etl import etl

    assert ETL_TASK == etl.name == "quakecat-driver.etl"


# -- configuration: no cluster --------------------------------------------------------------


def write_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def test_no_endpoint_configured(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        """
        task:
          project: quakecat
          domain: development
        """,
    )
    with pytest.raises(QuakecatError) as caught:
        download_database(None, tmp_path / "quakes.duckdb", config=config)
    assert str(caught.value) == NO_CLUSTER
    assert NO_CLUSTER == (
        "no cluster configured: set the endpoint in .flyte/config.yaml "
        "(see README, Running on a cluster)"
    )
    assert not (tmp_path / "quakes.duckdb").exists()


def test_placeholder_endpoint_is_not_a_cluster(tmp_path: Path) -> None:
    """The committed template names flyte.example.invalid: that is no cluster either."""
    template = (PROJECT_ROOT / ".flyte" / "config.yaml").read_text()
    config = write_config(tmp_path / "config.yaml", template)
    with pytest.raises(QuakecatError) as caught:
        download_database("some-run", tmp_path / "quakes.duckdb", config=config)
    assert str(caught.value) == NO_CLUSTER


def test_project_and_domain_are_required(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        """
        admin:
          endpoint: dns:///flyte.mycompany.net
        """,
    )
    with pytest.raises(QuakecatError) as caught:
        download_database(None, tmp_path / "quakes.duckdb", config=config)
    assert str(caught.value) == (
        f"no project or domain configured: set task.project and task.domain in {config} "
        "(see README, Running on a cluster)"
    )


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(QuakecatError) as caught:
        download_database(None, tmp_path / "q.duckdb", config=tmp_path / "nope.yaml")
    assert str(caught.value) == f"config file {tmp_path / 'nope.yaml'} does not exist"


def _run_python(code: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYTE", "UCTL_", "_U_"))}
    env.update(HOME=str(home), DO_NOT_TRACK="1", PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


_DOWNLOAD = """
    import sys
    from pathlib import Path
    from pipelines.errors import QuakecatError
    from pipelines.remote import download_database
    try:
        download_database(None, Path("quakes.duckdb"))
    except QuakecatError as exc:
        print(f"ERROR {exc}")
"""


def test_no_config_found_anywhere(tmp_path: Path) -> None:
    """Outside the repo, with an empty HOME: Flyte finds no config file at all."""
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    done = _run_python(_DOWNLOAD, tmp_path / "work", tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ERROR {NO_CLUSTER}"
    assert list((tmp_path / "work").iterdir()) == []


def test_config_found_in_home(tmp_path: Path) -> None:
    """~/.flyte/config.yaml is found; without an endpoint it is still no cluster."""
    (tmp_path / "home" / ".flyte").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    write_config(
        tmp_path / "home" / ".flyte" / "config.yaml",
        """
        admin:
          endpoint: dns:///flyte.example.invalid
        task:
          project: quakecat
          domain: development
        """,
    )
    done = _run_python(_DOWNLOAD, tmp_path / "work", tmp_path / "home")
    assert done.stdout.strip() == f"ERROR {NO_CLUSTER}", done.stderr


@pytest.mark.slow
def test_unreachable_cluster(tmp_path: Path) -> None:
    """A configured endpoint where nothing listens: the real SDK call fails, in one line."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    write_config(
        tmp_path / "work" / "config.yaml",
        f"""
        admin:
          endpoint: dns:///127.0.0.1:{port}
          insecure: true
        task:
          project: quakecat
          domain: development
        """,
    )
    done = _run_python(_DOWNLOAD, tmp_path / "work", tmp_path / "home")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"ERROR cannot reach the cluster at dns:///127.0.0.1:{port}: "), line
    assert "\n" not in line
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["config.yaml"]


# -- finding the run: a stand-in for flyte.remote.Run (no cluster here) -----------------------


class FakeRun:
    """What `download_database` uses of `flyte.remote.Run`: name, phase, typed_outputs."""

    runs: ClassVar[dict[str, FakeRun]] = {}
    listed: ClassVar[list[dict]] = []
    list_error: ClassVar[Exception | None] = None

    def __init__(self, name: str, phase: ActionPhase, output: object = None) -> None:
        self.name, self.phase, self.output = name, phase, output

    def typed_outputs(self, types: dict[str, type]) -> dict[str, object]:
        assert types == {"o0": File}
        if isinstance(self.output, Exception):
            raise self.output
        return {} if self.output is None else {"o0": self.output}

    @classmethod
    def get(cls, name: str) -> FakeRun:
        if name not in cls.runs:
            raise ConnectError(Code.NOT_FOUND, f"run {name} not found")
        return cls.runs[name]

    @classmethod
    def listall(cls, **filters):
        cls.listed.append(filters)
        if cls.list_error is not None:
            raise cls.list_error
        wanted = [r for r in cls.runs.values() if r.phase in filters["in_phase"]]
        yield from wanted[-1:]  # newest last here; the server sorts by created_at desc


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configured (fake) cluster: returns the config file to pass."""
    config = write_config(
        tmp_path / "config.yaml",
        """
        admin:
          endpoint: dns:///flyte.mycompany.net
        task:
          project: quakecat
          domain: development
        """,
    )
    inits = []
    monkeypatch.setattr(flyte, "init_from_config", lambda cfg, **kw: inits.append(cfg))
    monkeypatch.setattr(flyte.remote, "Run", FakeRun)
    monkeypatch.setattr(FakeRun, "runs", {})
    monkeypatch.setattr(FakeRun, "listed", [])
    monkeypatch.setattr(FakeRun, "list_error", None)
    yield config
    assert [cfg.platform.endpoint for cfg in inits] == ["dns:///flyte.mycompany.net"]


def test_latest_successful_run(cluster: Path, source: Path, tmp_path: Path) -> None:
    older = make_duckdb(tmp_path / "older.duckdb", events=1)
    for run in (
        FakeRun("r-old", ActionPhase.SUCCEEDED, File.from_local_sync(older)),
        FakeRun("r-new", ActionPhase.SUCCEEDED, File.from_local_sync(source)),
        FakeRun("r-failed", ActionPhase.FAILED),
        FakeRun("r-running", ActionPhase.RUNNING),
    ):
        FakeRun.runs[run.name] = run
    out = tmp_path / "data" / "quakes.duckdb"
    assert download_database(None, out, config=cluster) == out
    assert table_counts(out) == EXPECTED
    assert FakeRun.listed == [
        {
            "in_phase": (ActionPhase.SUCCEEDED, ActionPhase.RECOVERED),
            "task_name": "quakecat-driver.etl",
            "sort_by": ("created_at", "desc"),
            "limit": 1,
        }
    ]


def test_named_run(cluster: Path, source: Path, tmp_path: Path) -> None:
    FakeRun.runs["r1"] = FakeRun("r1", ActionPhase.SUCCEEDED, File.from_local_sync(source))
    out = tmp_path / "quakes.duckdb"
    download_database("r1", out, config=cluster)
    assert out.read_bytes() == source.read_bytes()
    assert FakeRun.listed == []


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (None, "no such run: r1 (in project quakecat, domain development)"),
        (
            FakeRun("r1", ActionPhase.FAILED),
            "run r1 failed, so it has no database (see: flyte get run r1)",
        ),
        (
            FakeRun("r1", ActionPhase.ABORTED),
            "run r1 was aborted, so it has no database (see: flyte get run r1)",
        ),
        (
            FakeRun("r1", ActionPhase.RUNNING),
            "run r1 is still running, so it has no database (see: flyte get run r1)",
        ),
        (
            FakeRun("r1", ActionPhase.WAITING_FOR_RESOURCES),
            "run r1 is still waiting for resources, so it has no database (see: flyte get run r1)",
        ),
        (
            FakeRun("r1", ActionPhase.SUCCEEDED),
            "run r1 has no database output; is it a run of quakecat-driver.etl?",
        ),
        (
            FakeRun("r1", ActionPhase.SUCCEEDED, TypeError("cannot convert a string to File")),
            "run r1: its first output is not a file (cannot convert a string to File); "
            "is it a run of quakecat-driver.etl?",
        ),
    ],
)
def test_run_without_database(
    cluster: Path, tmp_path: Path, old_out: Path, run: FakeRun | None, message: str
) -> None:
    if run is not None:
        FakeRun.runs[run.name] = run
    before = old_out.read_bytes()
    with pytest.raises(QuakecatError) as caught:
        download_database("r1", old_out, config=cluster)
    assert str(caught.value) == message
    assert old_out.read_bytes() == before
    assert leftovers(old_out.parent) == []


def test_no_successful_run(cluster: Path, tmp_path: Path) -> None:
    FakeRun.runs["r-failed"] = FakeRun("r-failed", ActionPhase.FAILED)
    with pytest.raises(QuakecatError) as caught:
        download_database(None, tmp_path / "quakes.duckdb", config=cluster)
    assert str(caught.value) == (
        "no successful run of quakecat-driver.etl in project quakecat, domain development: "
        "start one (just etl-remote) or name a run"
    )


def test_recovered_run_counts_as_succeeded(cluster: Path, source: Path, tmp_path: Path) -> None:
    FakeRun.runs["r1"] = FakeRun("r1", ActionPhase.RECOVERED, File.from_local_sync(source))
    out = download_database("r1", tmp_path / "quakes.duckdb", config=cluster)
    assert table_counts(out) == EXPECTED


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            Code.NOT_FOUND,
            "the cluster at dns:///flyte.mycompany.net has no project quakecat, domain development",
        ),
        (
            Code.UNAUTHENTICATED,
            "the cluster at dns:///flyte.mycompany.net refused the request (unauthenticated): "
            "token expired",
        ),
        (
            Code.UNAVAILABLE,
            "cannot reach the cluster at dns:///flyte.mycompany.net: token expired",
        ),
    ],
)
def test_listing_fails(cluster: Path, tmp_path: Path, code: Code, message: str) -> None:
    FakeRun.list_error = ConnectError(code, "token expired\nsecond line")
    with pytest.raises(QuakecatError) as caught:
        download_database(None, tmp_path / "quakes.duckdb", config=cluster)
    assert str(caught.value) == message


def test_cli_download_without_a_cluster_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The repo's .flyte/config.yaml is a template: its placeholder endpoint is no cluster."""
    from pipelines.cli import main

    out = tmp_path / "q.duckdb"
    assert main(["download", "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"quakecat: error: {NO_CLUSTER}\n"
    assert list(tmp_path.iterdir()) == []  # no file, and no lock left behind


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_cli_download_to_a_folder_that_refuses_new_files_exits_2_before_the_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipelines.cli import main

    assert main(["download", "--out", "/proc/q.duckdb"]) == 2
    assert capsys.readouterr().err == (
        "quakecat: error: --out /proc/q.duckdb: cannot write in its folder /proc (No such file or"
        " directory); choose a writable path\n"
    )


def test_a_download_by_default_never_lands_on_the_local_runs_archive() -> None:
    from pipelines.cli import DEFAULT_OUT, build_parser

    target = build_parser().parse_args(["download"]).out
    assert (target, DEFAULT_OUT) == (Path("data/remote.duckdb"), Path("data/quakes.duckdb"))
