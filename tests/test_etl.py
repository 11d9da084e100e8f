"""End to end: the real CLI runs the real Flyte pipeline locally against the fake service."""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipelines.analytics import ANALYTICS_TABLES
from pipelines.fdsn.client import USGS_BASE_URL
from pipelines.fdsn.fake import BASE_PATH, Catalogue, FakeFDSN, Faults
from pipelines.files import one_writer
from tests.conftest import retry_notice, utc

pytestmark = pytest.mark.slow


def test_multi_day_window_loads_exactly_what_the_service_holds(
    service: FakeFDSN, may_catalogue: Catalogue, quakecat, tmp_path
):
    out = tmp_path / "quakes.duckdb"
    code, stdout, stderr = quakecat(
        "--start", "2024-05-01T06:00:00Z", "--end", "2024-05-04", "--base-url", service.base_url,
        "--out", str(out),
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    expected = may_catalogue.features(utc(2024, 5, 1, 6), utc(2024, 5, 4))
    assert len(expected) > 900

    with duckdb.connect(str(out), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone() == (
            len(expected),
            len(expected),
        )
        by_id = {f["id"]: f for f in expected}
        rows = con.execute(
            "SELECT id, time, updated, mag, place, tz, felt, nst, ids FROM events"
        ).fetchall()
        assert {r[0] for r in rows} == set(by_id)
        for id_, time, updated, mag, place, tz, felt, nst, ids in rows:
            props = by_id[id_]["properties"]
            assert time == dt.datetime.fromtimestamp(props["time"] / 1000, dt.UTC)
            assert updated == dt.datetime.fromtimestamp(props["updated"] / 1000, dt.UTC)
            assert (mag, place, tz, felt, nst) == (
                props["mag"], props["place"], props["tz"], props["felt"], props["nst"],
            )  # fmt: skip
            assert ids == props["ids"].strip(",").split(",")
        # Nulls the service sent stayed NULL (the fake sends some for each of these).
        nulls = con.execute(
            "SELECT count(*) FILTER (mag IS NULL), count(*) FILTER (place IS NULL),"
            " count(*) FILTER (tz IS NULL) FROM events"
        ).fetchone()
        assert nulls == (
            sum(f["properties"]["mag"] is None for f in expected),
            sum(f["properties"]["place"] is None for f in expected),
            sum(f["properties"]["tz"] is None for f in expected),
        )
        assert min(nulls) > 0
        assert con.execute("SELECT typeof(time) FROM events LIMIT 1").fetchone() == (
            "TIMESTAMP WITH TIME ZONE",
        )
        (daily_total,) = con.execute("SELECT sum(events) FROM daily_summary").fetchall()[0]
        assert daily_total == len(expected)
        for table in ANALYTICS_TABLES:
            assert con.execute(f"SELECT count(*) > 0 FROM {table}").fetchall() == [(True,)], table
        run = con.execute(
            "SELECT partitions, events_received, events_loaded, events_rejected, requests,"
            " base_url FROM etl_runs"
        ).fetchone()
    # 2024-05-01T06 .. 2024-05-04 is shorter than a month: one partition per UTC day.
    assert run == (3, len(expected), len(expected), 0, 4, service.base_url)
    assert f"{len(expected):,} loaded, 0 rejected" in stdout
    assert f"output      {out}\nreport      {out}.html\n" in stdout
    page = Path(f"{out}.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert f"{len(expected):,}" in page
    assert [r.path for r in service.log] == ["count", "query", "query", "query"]


def test_partitions_stored_while_later_ones_fetch_give_the_file_a_fast_run_gives(
    may_catalogue: Catalogue, quakecat, tmp_path
):
    window = ("--start", "2024-05-01", "--end", "2024-05-04")
    slow, fast = tmp_path / "slow.duckdb", tmp_path / "fast.duckdb"
    # One request at a time, each slower than a stage: every partition but the last arrives
    # while another is fetching.
    with FakeFDSN(may_catalogue, latency_s=0.5) as service:
        code, stdout, stderr = quakecat(
            *window, "--base-url", service.base_url, "--out", str(slow), "--max-in-flight", "1"
        )
    assert (code, stderr) == (0, "")
    staged = re.search(
        r"^partitions  3 \(0 from cache, (\d) stored while fetching\)$", stdout, re.M
    )
    # The first is always stored before the next arrives; the second when its stage began
    # before the last partition arrived; the last one is the load's.
    assert staged and staged[1] in ("1", "2")
    with FakeFDSN(may_catalogue) as service:
        assert quakecat(*window, "--base-url", service.base_url, "--out", str(fast))[0] == 0

    expected = may_catalogue.count(utc(2024, 5, 1), utc(2024, 5, 4))
    tables = ["events", "event_ids", *ANALYTICS_TABLES]
    with (
        duckdb.connect(str(slow), read_only=True) as a,
        duckdb.connect(str(fast), read_only=True) as b,
    ):
        assert a.execute("SELECT count(*) FROM events").fetchall() == [(expected,)]
        assert a.execute("SELECT events_received FROM etl_runs").fetchall() == [(expected,)]
        for table in tables:
            rows = f"SELECT * FROM {table} ORDER BY ALL"
            assert a.execute(rows).fetchall() == b.execute(rows).fetchall(), table


def test_start_after_end_exits_2_and_writes_nothing(quakecat, tmp_path):
    out = tmp_path / "quakes.duckdb"
    code, _stdout, stderr = quakecat(
        "--start", "2024-05-02", "--end", "2024-05-01", "--out", str(out)
    )
    assert code == 2
    assert stderr == (
        "quakecat: error: --start 2024-05-02T00:00:00.000Z must be before --end "
        "2024-05-01T00:00:00.000Z (start is inclusive, end exclusive)\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "yesterday"], "--start 'yesterday' is not a date (2024-05-01) or ISO-8601"),
        (["--base-url", "file:///etc"], "--base-url must be an http(s) URL"),
        (["--max-in-flight", "0"], "argument --max-in-flight: must be > 0 and finite, got 0"),
        (["--backoff", "nan"], "argument --backoff: must be > 0 and finite, got nan"),
        (["--read-timeout", "inf"], "argument --read-timeout: must be > 0 and finite, got inf"),
        (["--min-magnitude", "nan"], "argument --min-magnitude: must be a finite number, got nan"),
        (["--min-magnitude", "big"], "argument --min-magnitude: invalid float value: 'big'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(quakecat, tmp_path, argv, message):
    code, _, stderr = quakecat(*argv, "--out", str(tmp_path / "q.duckdb"))
    assert code == 2
    assert stderr.startswith(f"quakecat: error: {message}")
    assert stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_unreachable_service_exits_1_and_leaves_existing_output_untouched(
    service: FakeFDSN, quakecat, tmp_path
):
    out = tmp_path / "quakes.duckdb"
    first = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url,
        "--out", str(out),
    )  # fmt: skip
    assert first[0] == 0
    before = out.read_bytes()
    code, stdout, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", "http://127.0.0.1:9/fdsn",
        "--out", str(out), "--connect-timeout", "0.5",
    )  # fmt: skip
    assert (code, stdout) == (1, "")
    *notices, error = stderr.splitlines()
    # Each retry is announced as it starts waiting (the default backoff: 1 s, then 2 to 3 s).
    unreachable = "http://127.0.0.1:9/fdsn"
    assert [bool(retry_notice(unreachable, "could not connect", n, 3).fullmatch(line))
            for n, line in enumerate(notices, start=2)] == [True, True], stderr  # fmt: skip
    assert "retrying in 1 s " in notices[0]
    assert error == (
        f"quakecat: error: {unreachable}/count failed after 3 attempts; last error: "
        "could not connect. Check the service or try again later"
    )
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quakes.duckdb", "quakes.duckdb.html"]


def test_an_out_file_that_is_not_our_database_exits_2_untouched(quakecat, tmp_path):
    out = tmp_path / "notes.duckdb"
    out.write_bytes(b"my notes")
    code, _, stderr = quakecat("--start", "2024-05-01", "--end", "2024-05-02", "--out", str(out))
    assert code == 2
    assert stderr.startswith(f"quakecat: error: --out {out} is not a quakecat DuckDB database (")
    assert stderr.endswith(
        "); choose another --out (a file quakecat did not write is never replaced)\n"
    )
    assert out.read_bytes() == b"my notes"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (
            "UPDATE etl_runs SET schema_version = 1",
            "holds schema version 1, this quakecat writes 2",
        ),
        (
            "INSERT INTO events SELECT * FROM events LIMIT 1",
            "holds rows that repeat a key (events.id), which quakecat never writes: the file was"
            " changed by other means",
        ),
    ],
    ids=["older-schema", "repeated-key"],
)
def test_an_archive_this_quakecat_cannot_add_to_exits_2_untouched(
    service: FakeFDSN, quakecat, tmp_path, edit: str, reason: str
):
    out = tmp_path / "q.duckdb"
    argv = ("--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url)
    assert quakecat(*argv, "--out", str(out))[0] == 0
    with duckdb.connect(str(out)) as con:
        con.execute(edit)
    before = out.read_bytes()
    service.reset_log()
    code, _, stderr = quakecat(*argv, "--out", str(out))
    assert code == 2
    assert stderr == (
        f"quakecat: error: --out {out} {reason}; choose another --out or remove it to rebuild\n"
    )
    assert out.read_bytes() == before
    assert service.log == []


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    from pipelines.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"quakecat {version('quakecat')}\n"


def test_a_run_keeps_one_working_copy_at_a_time_in_its_scratch_space(
    may_catalogue: Catalogue, quakecat, tmp_path, monkeypatch
):
    # Each stage writes the whole working copy anew; kept to the end of the run, a long
    # backfill's copies held gigabytes (2.1 GB for ten years).
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: set[str] = set()
    most = 0
    running = True

    def watch() -> None:
        nonlocal most
        while running:
            # os.walk, not rglob: folders come and go under it (errors are skipped).
            copies = [f"{d}/{n}" for d, _, names in os.walk(scratch) for n in names
                      if n == "staged.duckdb"]  # fmt: skip
            seen.update(copies)
            most = max(most, len(copies))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # One request at a time, each slower than a stage: a stage per partition but the last.
        with FakeFDSN(may_catalogue, latency_s=0.4) as service:
            code, stdout, _ = quakecat(
                "--start", "2024-05-01", "--end", "2024-05-06", "--base-url", service.base_url,
                "--out", str(tmp_path / "q.duckdb"), "--max-in-flight", "1",
            )  # fmt: skip
    finally:
        running = False
        watcher.join()
    assert code == 0
    assert "stored while fetching" in stdout
    # Several stages each made a copy; the one a stage read went once the next one was made.
    assert len(seen) >= 3
    assert most <= 2


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, where mounting one is allowed (root on Linux); skips elsewhere."""
    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_scratch_disk_fails_with_one_line_saying_what_to_do(
    service: FakeFDSN, quakecat, tmp_path, tiny_disk, monkeypatch
):
    monkeypatch.setattr(tempfile, "tempdir", str(tiny_disk))
    out = tmp_path / "out" / "q.duckdb"
    code, _, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-06", "--base-url", service.base_url,
        "--out", str(out),
    )  # fmt: skip
    assert code == 1
    # Which write meets the full disk first varies (DuckDB's WAL, a Parquet file, a copy).
    assert stderr.startswith("quakecat: error: ") and "No space left on device" in stderr
    assert stderr.endswith(
        "; free space there, or point TMPDIR at a larger disk for the run's scratch files (now"
        f" {tiny_disk})\n"
    )
    assert stderr.count("\n") == 1
    assert not out.exists()
    assert list(tiny_disk.iterdir()) == []


def test_console_script_reports_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "etl",
            "--start",
            "2024-05-02",
            "--end",
            "2024-05-01",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("quakecat: error: --start 2024-05-02T00:00:00.000Z must be")
    assert result.stderr.count("\n") == 1


def test_demo_builds_the_database_the_service_holds(quakecat, tmp_path):
    out = tmp_path / "demo.duckdb"
    code, stdout, stderr = quakecat(
        "demo", "--start", "2024-05-01", "--end", "2024-05-03", "--out", str(out)
    )
    assert (code, stderr) == (0, "")
    with duckdb.connect(str(out), read_only=True) as con:
        (loaded,) = con.execute("SELECT count(*) FROM events").fetchone()
    assert stdout.endswith(f"demo database: {out} ({loaded:,} events, as the service holds)\n")
    assert loaded > 600


@pytest.mark.parametrize(
    ("fmt", "name"), [((), "demo.duckdb"), (("--format", "sqlite"), "demo.sqlite")]
)
def test_demo_without_out_writes_into_data_beside_its_report(
    quakecat, tmp_path, monkeypatch, fmt, name
):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = quakecat("demo", "--start", "2024-05-01", "--end", "2024-05-02", *fmt)
    assert (code, stderr) == (0, "")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [name, f"{name}.html"]
    assert f"output      data/{name}\nreport      data/{name}.html\n" in stdout


def test_two_databases_in_one_folder_keep_a_report_each(quakecat, tmp_path):
    window = ("--start", "2024-05-01", "--end", "2024-05-02")
    for name in ("quakes.duckdb", "demo.duckdb"):
        assert quakecat("demo", *window, "--out", str(tmp_path / name))[:3:2] == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo.duckdb",
        "demo.duckdb.html",
        "quakes.duckdb",
        "quakes.duckdb.html",
    ]


def test_invalid_records_are_quarantined_with_reason_and_raw_json(
    may_catalogue: Catalogue, quakecat, tmp_path
):
    window = (utc(2024, 5, 1), utc(2024, 5, 3))
    chosen = may_catalogue.select(*(int(t.timestamp() * 1000) for t in window))
    broken = {chosen[10].id: ("latitude", 95.0), chosen[20].id: ("time", None)}
    broken[chosen[30].id] = ("mag", "big")

    def corrupt(event):
        if event.id not in broken:
            return event
        feature = json.loads(event.raw)
        field, value = broken[event.id]
        if field == "latitude":
            feature["geometry"]["coordinates"][1] = value
        else:
            feature["properties"][field] = value
        return dataclasses.replace(event, raw=json.dumps(feature).encode())

    catalogue = Catalogue(tuple(corrupt(e) for e in may_catalogue.events))
    out = tmp_path / "q.duckdb"
    with FakeFDSN(catalogue) as service:
        code, stdout, stderr = quakecat(
            "--start", "2024-05-01", "--end", "2024-05-03", "--base-url", service.base_url,
            "--out", str(out),
        )  # fmt: skip
    assert (code, stderr) == (0, "")
    assert f"{len(chosen) - 3:,} loaded, 3 rejected" in stdout
    assert (
        "\nrejects     the 3 are in table rejected_events, each with its reason and the feature"
        " as sent\n"
    ) in stdout
    with duckdb.connect(str(out), read_only=True) as con:
        rejected = con.execute(
            "SELECT id, reason, json_extract(raw_json, '$.id') FROM rejected_events ORDER BY id"
        ).fetchall()
        accounting = con.execute(
            "SELECT events_received, events_loaded, events_rejected FROM etl_runs"
        ).fetchall()
        (in_events,) = con.execute(
            "SELECT count(*) FROM events WHERE id IN (SELECT id FROM rejected_events)"
        ).fetchall()[0]
    reasons = {
        chosen[10].id: "Expected `float` <= 90.0 - at `$.geometry.coordinates[1]`",
        chosen[20].id: "Expected `int`, got `null` - at `$.properties.time`",
        chosen[30].id: "Expected `float | null`, got `str` - at `$.properties.mag`",
    }
    assert rejected == sorted((id_, reason, f'"{id_}"') for id_, reason in reasons.items())
    assert accounting == [(len(chosen), len(chosen) - 3, 3)]
    assert in_events == 0


def _events(path) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT * FROM events ORDER BY id").fetchall()


def test_overlapping_runs_and_a_revised_event_give_one_row_per_event_with_newest_values(
    may_catalogue: Catalogue, quakecat, tmp_path
):
    out = tmp_path / "q.duckdb"
    with FakeFDSN(may_catalogue) as service:
        assert quakecat(
            "--start", "2024-05-01", "--end", "2024-05-03", "--base-url", service.base_url,
            "--out", str(out),
        )[0] == 0  # fmt: skip

    # The service revises one event of 2 May: newer `updated`, a new place, and a new preferred
    # id; the old id becomes an alias.
    old = may_catalogue.select(int(utc(2024, 5, 2).timestamp() * 1000), 2**62)[5]
    feature = json.loads(old.raw)
    feature["id"] = "us7000new1"
    feature["properties"].update(
        updated=old.updated_ms + 60_000,
        place="12 km N of Revised, Alaska",
        ids=f",{old.id},us7000new1,",
    )
    revised = dataclasses.replace(
        old, id="us7000new1", updated_ms=old.updated_ms + 60_000, raw=json.dumps(feature).encode()
    )
    catalogue = Catalogue(tuple(revised if e is old else e for e in may_catalogue.events))
    with FakeFDSN(catalogue) as service:
        code, stdout, _ = quakecat(
            "--start", "2024-05-02", "--end", "2024-05-04", "--base-url", service.base_url,
            "--out", str(out),
        )  # fmt: skip
        assert code == 0
        after_second = _events(out)
        code, _, _ = quakecat(
            "--start", "2024-05-02", "--end", "2024-05-04", "--base-url", service.base_url,
            "--out", str(out),
        )  # fmt: skip
        assert code == 0

    expected_ids = {f["id"] for f in catalogue.features(utc(2024, 5, 1), utc(2024, 5, 4))}
    assert old.id not in expected_ids
    assert {row[0] for row in after_second} == expected_ids
    assert len(after_second) == len(expected_ids)
    assert f"{len(expected_ids):,} in the file" in stdout
    with duckdb.connect(str(out), read_only=True) as con:
        assert con.execute(
            "SELECT place, updated, ids FROM events WHERE id = 'us7000new1'"
        ).fetchall() == [
            (
                "12 km N of Revised, Alaska",
                dt.datetime.fromtimestamp(revised.updated_ms / 1000, dt.UTC),
                [old.id, "us7000new1"],
            )
        ]
        aliases = con.execute(
            "SELECT alias, id FROM event_ids WHERE id = 'us7000new1' ORDER BY alias"
        ).fetchall()
        assert aliases == [(old.id, "us7000new1"), ("us7000new1", "us7000new1")]
        assert con.execute("SELECT count(*) FROM event_ids").fetchall() == [
            (sum(len(set(r[17]) | {r[0]}) for r in after_second),)
        ]
        assert con.execute("SELECT count(*) FROM etl_runs").fetchall() == [(3,)]
    # Loading the same window again changes nothing in `events`.
    assert _events(out) == after_second


def _etl_process(scratch: Path, *argv: str) -> subprocess.Popen:
    """``quakecat etl ARGV --no-cache`` as a process of its own, its temporary files in
    ``scratch``; its stderr is kept (read it with ``communicate``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "etl", *argv, "--no-cache"],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_storing(run: subprocess.Popen, scratch: Path, task: str = "*") -> None:
    """Until a task of ``run`` (a stage or the load; ``task="load"``: the load) has its working
    copy open, DuckDB busy in one of the run's threads."""
    deadline = time.monotonic() + 60
    while not any(scratch.glob(f"quakecat-run-*/quakecat-{task}-*/quakes.duckdb")):
        assert run.poll() is None, "the run ended before anything was stored"
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_run_killed_during_load_leaves_the_previous_database_and_no_litter(
    service: FakeFDSN, quakecat, tmp_path, monkeypatch
):
    out = tmp_path / "out" / "quakes.duckdb"
    window = ("--start", "2024-05-01", "--end", "2024-05-03", "--base-url", service.base_url)
    assert quakecat(*window, "--out", str(out))[0] == 0
    before = out.read_bytes()
    # What a writer killed mid-copy leaves: a partial file of a process that no longer exists.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    (out.parent / f".quakes.duckdb.{dead}-0badcafe.partial").write_bytes(b"half a file")

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    child = _etl_process(
        scratch, *window[:2], "--end", "2024-05-06", *window[4:], "--out", str(out)
    )
    _wait_until_storing(child, scratch, task="load")
    child.send_signal(signal.SIGKILL)
    child.communicate()

    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == [
        ".quakes.duckdb." + f"{dead}-0badcafe.partial",
        ".quakes.duckdb.lock",  # its flock went with the process; the next writer takes it
        "quakes.duckdb",
        "quakes.duckdb.html",
    ]
    (left,) = scratch.iterdir()
    assert left.name.startswith(f"quakecat-run-{child.pid}-")
    # A task of a run stopped by a signal may start its folder outside the run's, once that is
    # gone; those are known by their pid too.
    for kind in ("stage", "load"):
        (scratch / f"quakecat-{kind}-{child.pid}-0badcafe").mkdir()
        (scratch / f"quakecat-{kind}-{child.pid}-0badcafe" / "quakes.duckdb").write_bytes(b"x")
    (scratch / f"quakecat-load-{os.getpid()}-alive").mkdir()  # a live process's: kept
    # The next run is not tripped up by anything the killed one left, and tidies the orphans.
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    code, _, stderr = quakecat(*window[:2], "--end", "2024-05-06", *window[4:], "--out", str(out))
    assert (code, stderr) == (0, "")
    assert sorted(p.name for p in out.parent.iterdir()) == ["quakes.duckdb", "quakes.duckdb.html"]
    assert [p.name for p in scratch.iterdir()] == [f"quakecat-load-{os.getpid()}-alive"]
    with duckdb.connect(str(out), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM etl_runs").fetchall() == [(2,)]


def test_an_archive_open_for_writing_elsewhere_exits_2_untouched_naming_the_holder(
    service: FakeFDSN, quakecat, tmp_path
):
    out = tmp_path / "quakes.duckdb"
    window = ("--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url)
    assert quakecat(*window, "--out", str(out))[0] == 0
    before = out.read_bytes()
    service.reset_log()
    # Another program (a notebook, the duckdb shell) holds DuckDB's write lock on the file.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]);"
         " print('open', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "open\n"
        code, _, stderr = quakecat(*window, "--out", str(out))
    finally:
        holder.communicate("")
    assert code == 2
    assert stderr == (
        f"quakecat: error: --out {out} is open for writing in another program"
        f" ({Path(sys.executable).resolve().name}, PID {holder.pid}); close it there and run"
        " again (read-only connections do not get in the way)\n"
    )
    assert service.log == []
    assert out.read_bytes() == before


def test_an_archive_another_program_writes_during_a_run_is_not_replaced(
    service: FakeFDSN, quakecat, tmp_path
):
    out = tmp_path / "out" / "quakes.duckdb"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    window = ("--start", "2024-05-01", "--base-url", service.base_url, "--out", str(out))
    assert quakecat(*window, "--end", "2024-05-03")[0] == 0
    child = _etl_process(scratch, *window, "--end", "2024-05-06")
    _wait_until_storing(child, scratch)
    # Meanwhile someone adds a table of their own to the archive.
    with duckdb.connect(str(out)) as con:
        con.execute("CREATE TABLE my_notes AS SELECT 'keep me' AS note")
    _, stderr = child.communicate()
    assert (child.returncode, stderr) == (
        1,
        f"quakecat: error: --out {out} was changed by another program while this run went on;"
        " nothing was published, so its changes stand: run again once it is done\n",
    )
    with duckdb.connect(str(out), read_only=True) as con:
        assert con.execute("SELECT note FROM my_notes").fetchall() == [("keep me",)]
        assert con.execute("SELECT count(*) FROM etl_runs").fetchall() == [(1,)]


def test_a_second_writer_of_the_same_out_exits_2_before_any_request(
    service: FakeFDSN, quakecat, tmp_path
):
    out = tmp_path / "quakes.duckdb"
    window = ("--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url)
    assert quakecat(*window, "--out", str(out))[0] == 0
    before = out.read_bytes()
    service.reset_log()
    with one_writer(out):  # as a run in another process holds it
        code, _, stderr = quakecat(*window, "--out", str(out))
    assert code == 2
    assert stderr == (
        f"quakecat: error: --out {out} is being written by another quakecat process (pid"
        f" {os.getpid()}); wait for it to end or choose another --out\n"
    )
    assert service.log == []
    assert out.read_bytes() == before
    # Once it is free, the next run writes, and leaves no lock behind.
    assert quakecat(*window, "--out", str(out))[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quakes.duckdb", "quakes.duckdb.html"]


def test_sigterm_ends_a_run_as_ctrl_c_does_and_the_next_run_leaves_no_scratch(
    service: FakeFDSN, quakecat, tmp_path
):
    out = tmp_path / "out" / "quakes.duckdb"
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    def start(end: str) -> subprocess.Popen:
        window = ("--start", "2024-05-01", "--end", end, "--base-url", service.base_url)
        return _etl_process(scratch, *window, "--out", str(out))

    def finish(run: subprocess.Popen) -> tuple[int, str]:
        _, stderr = run.communicate()
        return run.returncode, stderr

    assert finish(start("2024-05-03")) == (0, "")
    before = out.read_bytes()
    child = start("2024-05-06")
    _wait_until_storing(child, scratch)
    # Meanwhile, a second writer of the same file is turned away, told whom to wait for.
    assert quakecat("--start", "2024-05-01", "--base-url", service.base_url, "--out", str(out)) == (
        2,
        "",
        f"quakecat: error: --out {out} is being written by another quakecat process (pid"
        f" {child.pid}); wait for it to end or choose another --out\n",
    )
    child.send_signal(signal.SIGTERM)

    assert finish(child) == (143, "quakecat: terminated; no output was written\n")
    assert out.read_bytes() == before
    assert finish(start("2024-05-06")) == (0, "")
    assert list(scratch.iterdir()) == []


_LIBC = ctypes.CDLL(None, use_errno=True)


@pytest.mark.skipif(
    not hasattr(_LIBC, "tgkill"), reason="tgkill(2), to pick the thread, is Linux's"
)
@pytest.mark.parametrize(
    ("stop", "said", "code"),
    [(signal.SIGINT, "interrupted", 130), (signal.SIGTERM, "terminated", 143)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_the_kernel_hands_to_a_task_thread_stops_the_run_at_once(
    may_catalogue: Catalogue, tmp_path, stop, said, code
):
    # The kernel gives a process's signal to any of its threads; here, surely not the main one.
    # The first query is held for a minute: the run must stop while it waits, not once it ends.
    out = tmp_path / "q.duckdb"
    held = Faults(slow_at=frozenset({2}), slow_s=60.0)
    with FakeFDSN(may_catalogue, faults=held) as service:
        window = ("--start", "2024-05-01", "--end", "2024-05-03", "--base-url", service.base_url)
        child = _etl_process(tmp_path, *window, "--out", str(out), "--read-timeout", "120")
        try:
            deadline = time.monotonic() + 60
            while service.arrivals < 2:
                assert child.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            task_thread = next(
                int(t) for t in os.listdir(f"/proc/{child.pid}/task") if int(t) != child.pid
            )
            assert _LIBC.tgkill(child.pid, task_thread, stop) == 0
            _, stderr = child.communicate(timeout=30)
        finally:
            child.kill()
        answered = {r.n for r in service.log}
    assert (child.returncode, stderr) == (code, f"quakecat: {said}; no output was written\n")
    assert 1 in answered and 2 not in answered  # the count, and not the held query
    assert not out.exists()


def test_a_run_leaves_no_flyte_metadata_behind(service: FakeFDSN, quakecat, tmp_path):
    out = tmp_path / "q.duckdb"
    window = ("--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url)
    assert quakecat(*window, "--out", str(out))[0] == 0
    with duckdb.connect(str(out), read_only=True) as con:
        ((run_id,),) = con.execute("SELECT run_id FROM etl_runs").fetchall()
    # Flyte's own default place for a local run's metadata, which nothing would clean up.
    assert not (Path("/tmp/flyte/metadata") / run_id).exists()


def test_an_out_path_that_cannot_be_written_exits_2_before_any_request(
    service: FakeFDSN, quakecat, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "q.duckdb"
    code, _, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url,
        "--out", str(out),
    )  # fmt: skip
    assert code == 2
    assert stderr == f"quakecat: error: --out {out}: {blocker} is a file, not a folder\n"
    assert service.log == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    ("out", "problem"),
    [
        ("/proc/q.duckdb", "cannot write in its folder /proc (No such file or directory); choose"),
        ("/proc/new/q.duckdb", "cannot create its folder (No such file or directory)"),
    ],
)
def test_an_out_folder_that_refuses_new_files_exits_2_before_any_request(
    service: FakeFDSN, quakecat, out, problem
):
    # /proc refuses new files and folders even to root, whom permission bits never stop.
    code, _, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url,
        "--out", out,
    )  # fmt: skip
    assert code == 2
    assert stderr.startswith(f"quakecat: error: --out {out}: {problem}")
    assert stderr.count("\n") == 1
    assert service.log == []


def test_an_out_that_is_a_folder_exits_2_before_any_request(service: FakeFDSN, quakecat, tmp_path):
    code, _, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", service.base_url,
        "--out", str(tmp_path),
    )  # fmt: skip
    assert (code, stderr) == (
        2,
        f"quakecat: error: --out {tmp_path} is a directory; give a file path such as"
        " data/quakes.duckdb\n",
    )
    assert service.log == []


def test_a_base_url_that_is_not_the_service_exits_1_at_once_naming_the_option(
    service: FakeFDSN, quakecat, tmp_path
):
    site = service.base_url.removesuffix(BASE_PATH)  # the web site around the service
    code, _, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", site,
        "--out", str(tmp_path / "q.duckdb"),
    )  # fmt: skip
    assert code == 1
    assert stderr == (
        f"quakecat: error: {site}/count?format=geojson&starttime=2024-05-01T00%3A00%3A00.000"
        '&endtime=2024-05-02T00%3A00%3A00.000 answered HTTP 404 with a web page ("Page Not'
        ' Found"), not FDSN GeoJSON; check --base-url: it must be the root of an FDSN event'
        f" service, such as {USGS_BASE_URL}\n"
    )
    assert [(r.path, r.status) for r in service.log] == [("/count", 404)]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
