"""Caching, late revisions and resume, through real local Flyte runs in subprocesses.

Each run is a process of its own with HOME and the working directory in a temp folder, so that
Flyte's local cache (which follows the config file it finds, else ~/.flyte) is this test's alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import duckdb
import pytest

from pipelines.fdsn.fake import Catalogue, FakeFDSN, Faults, generate_catalogue

pytestmark = pytest.mark.slow

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
END = NOW
START = END - dt.timedelta(days=60)


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _command(
    base_url: str, out: Path, *extra: str, start: dt.datetime = START, end: dt.datetime = END
) -> list[str]:
    return [
        sys.executable, "-m", "pipelines.cli", "etl", "--start", _iso(start), "--end", _iso(end),
        "--base-url", base_url, "--out", str(out), "--backoff", "0.01", *extra,
    ]  # fmt: skip


def _run(home: Path, base_url: str, out: Path, *extra: str) -> str:
    result = subprocess.run(
        _command(base_url, out, *extra), cwd=home, env=_env(home), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _env(home: Path) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "HOME": str(home), "PYTHONPATH": root}


def _events(out: Path) -> list[tuple]:
    with duckdb.connect(str(out), read_only=True) as con:
        return con.execute("SELECT * EXCLUDE (updated) FROM events ORDER BY id").fetchall()


def _daily(out: Path) -> list[tuple]:
    with duckdb.connect(str(out), read_only=True) as con:
        return con.execute("SELECT * FROM daily_summary ORDER BY ALL").fetchall()


def _queries(service: FakeFDSN) -> list[tuple[str, str, str | None]]:
    return sorted(
        (r.path, r.params.get("starttime", ""), r.params.get("updatedafter")) for r in service.log
    )


@pytest.fixture
def catalogue() -> Catalogue:
    return generate_catalogue(START, END, per_day=60, seed=17)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_a_second_run_refetches_only_unsettled_partitions_plus_one_revision_query(
    catalogue: Catalogue, home: Path, tmp_path: Path
):
    out = tmp_path / "q.duckdb"
    settle_before = NOW - dt.timedelta(days=30)
    with FakeFDSN(catalogue) as service:
        cold = _run(home, service.base_url, out)
        cold_log = _queries(service)
        service.reset_log()
        first = _events(out)
        first_daily = _daily(out)
        warm = _run(home, service.base_url, out)
        warm_log = _queries(service)

    # 60 days ending now: the tail of one month (settled: it ended over 30 days ago), then
    # the months inside the settle horizon.
    month_starts = sorted({q[1] for q in cold_log if q[0] == "query"})
    assert len(month_starts) == 3
    assert [q[0] for q in cold_log] == ["count", "query", "query", "query"]
    assert re.search(r"^partitions  3 \(0 from cache, [012] stored while fetching\)$", cold, re.M)
    settled_start = month_starts[0]
    unsettled = [("query", s, None) for s in month_starts[1:]]
    # The warm run knows the search limit from the archive: no count; the settled month comes
    # from the cache; one `updatedafter` query covers the settled span.
    (revision,) = [q for q in warm_log if q[2] is not None]
    assert sorted(q for q in warm_log if q[2] is None) == unsettled
    assert revision[:2] == ("query", settled_start)
    assert len(warm_log) == 3
    # The cached month is held by the archive already: it is neither stored nor loaded.
    assert re.search(r"^partitions  3 \(1 from cache, [012] stored while fetching\)$", warm, re.M)
    assert settle_before > dt.datetime.fromisoformat(month_starts[1] + "+00:00")
    assert _events(out) == first
    assert _daily(out) == first_daily
    expected = catalogue.count(START, END)
    assert len(first) == expected
    # The settled month's extract is the one the file took in last time: it is not loaded
    # again. The unsettled months, fetched afresh, are.
    settled_end = dt.datetime.fromisoformat(month_starts[1] + "+00:00")
    with duckdb.connect(str(out), read_only=True) as con:
        runs = con.execute(
            "SELECT events_received, partitions_cached FROM etl_runs ORDER BY finished_at"
        ).fetchall()
        extracts = con.execute(
            "SELECT partition, count(*), count(DISTINCT uri) FROM loaded_extracts"
            " GROUP BY partition ORDER BY partition"
        ).fetchall()
    assert runs == [(expected, 0), (catalogue.count(settled_end, END), 1)]
    assert [(n, uris) for _, n, uris in extracts] == [(1, 1), (2, 2), (2, 2)]
    assert extracts[0][0].startswith(f"{_iso(START)[:10]}")


def test_a_revised_old_event_arrives_through_updatedafter(
    catalogue: Catalogue, home: Path, tmp_path: Path
):
    out = tmp_path / "q.duckdb"
    with FakeFDSN(catalogue) as service:
        _run(home, service.base_url, out)
        # Revise an event of the settled (cached) month; a plain query of that month is never
        # made again, so only `updatedafter` can bring the revision.
        old = catalogue.select(
            int(START.timestamp() * 1000), int(START.timestamp() * 1000) + 86_400_000
        )[3]
        feature = json.loads(old.raw)
        now_ms = int(time.time() * 1000)
        feature["properties"].update(updated=now_ms, place="3 km E of Revised, Alaska", mag=4.2)
        revised = dataclasses.replace(
            old, updated_ms=now_ms, mag=4.2, raw=json.dumps(feature).encode()
        )
        service.catalogue = Catalogue(tuple(revised if e is old else e for e in catalogue.events))
        service.reset_log()
        stdout = _run(home, service.base_url, out)
        revision_queries = [r for r in service.log if "updatedafter" in r.params]
    assert len(revision_queries) == 1
    assert "1 revised" in stdout
    with duckdb.connect(str(out), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute(
            "SELECT place, mag, updated FROM events WHERE id = ?", [old.id]
        ).fetchall()
        assert con.execute("SELECT count(*) FROM events").fetchall() == [
            (catalogue.count(START, END),)
        ]
    assert row == [
        ("3 km E of Revised, Alaska", 4.2, dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC))
    ]


def test_filters_schema_and_no_cache_change_what_is_reused(
    catalogue: Catalogue, home: Path, tmp_path: Path
):
    with FakeFDSN(catalogue) as service:
        _run(home, service.base_url, tmp_path / "a.duckdb")
        service.reset_log()
        # Another filter is another cache key: every partition is fetched again.
        _run(home, service.base_url, tmp_path / "b.duckdb", "--min-magnitude", "1.5")
        assert [r.path for r in service.log].count("query") == 3
        service.reset_log()
        # --no-cache refetches everything, the settled month included.
        _run(home, service.base_url, tmp_path / "a.duckdb", "--no-cache")
        assert sorted(r.path for r in service.log) == ["query", "query", "query"]
        service.reset_log()
        # A removed partition store must not leave the cache pointing at nothing.
        store = home / ".flyte" / "local-cache" / "quakecat-partitions"
        assert (store / ".created").exists()
        for path in sorted(store.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        store.rmdir()
        _run(home, service.base_url, tmp_path / "c.duckdb")
        assert [r.path for r in service.log].count("query") == 3


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_an_interrupted_run_resumes_with_the_partitions_it_had_not_finished(
    home: Path, tmp_path: Path, stop: signal.Signals
):
    catalogue = generate_catalogue(START, END, per_day=40, seed=23)
    out = tmp_path / "q.duckdb"
    # Nothing settled: every partition is keyed by the archive's resume token, and
    # one request at a time makes the order of completion observable.
    extra = ("--settle-days", "3650", "--max-in-flight", "1")
    # The third query (request 4, after the count) is answered after 2 s: the run is stopped
    # while it waits for it, whenever it sends it and however long it takes to cache the others.
    held = Faults(slow_at=frozenset({4}), slow_s=2.0)
    with FakeFDSN(catalogue, latency_s=0.1, faults=held) as service:
        child = subprocess.Popen(
            _command(service.base_url, out, *extra), cwd=home, env=_env(home),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Kill once two partitions are cached, with the third under way.
        cache_db = home / ".flyte" / "local-cache" / "cache.db"
        deadline = time.monotonic() + 60
        while _cached_entries(cache_db) < 2 or service.arrivals < 4:
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        cached = {r.params["starttime"] for r in service.requests_to("query")}
        child.send_signal(stop)
        assert child.wait() == (-9 if stop == signal.SIGKILL else 143)
        assert not out.exists()
        # The fake logs the held answer once it is sent: wait for it, before the next run.
        while len(service.requests_to("query")) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        service.reset_log()
        _run(home, service.base_url, out, *extra)
        queries = service.requests_to("query")
        fetched = {r.params["starttime"] for r in queries if "updatedafter" not in r.params}
        revision_queries = [r for r in queries if "updatedafter" in r.params]
    assert len(cached) == 2
    assert len(fetched) == 1
    assert not fetched & cached
    # What was reused is checked for revisions since it was fetched, in one query.
    assert len(revision_queries) == 1
    assert revision_queries[0].params["starttime"] == min(cached)
    assert len(_events(out)) == catalogue.count(START, END)
    assert not out.with_name(".q.duckdb.resume").exists()


def _cached_entries(cache_db: Path) -> int:
    if not cache_db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{cache_db}?mode=ro", uri=True, timeout=0.1)) as con:
            return con.execute("SELECT count(*) FROM task_cache").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_two_archives_filled_side_by_side_share_the_cache_without_clashing(
    home: Path, tmp_path: Path
):
    # Both runs miss the cache for the same settled months at the same moments (latency and a
    # transfer cap keep their fetches side by side), so each writes those months' Parquet: one
    # folder for both had a task read the other's half-written file (3 runs of 4 failed so).
    start, end = dt.datetime(2023, 1, 1, tzinfo=dt.UTC), dt.datetime(2023, 7, 1, tzinfo=dt.UTC)
    catalogue = generate_catalogue(start, end, per_day=300, seed=3)

    def command(base_url: str, out: Path) -> list[str]:
        return _command(base_url, out, start=start, end=end)

    outs = [tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "c.duckdb"]
    with FakeFDSN(catalogue, latency_s=0.2, rate_bytes_per_s=20e6) as service:
        runs = [
            subprocess.Popen(
                command(service.base_url, out),
                cwd=home,
                env=_env(home),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for out in outs[:2]
        ]
        assert [(run.communicate()[1], run.returncode) for run in runs] == [("", 0), ("", 0)]
        service.reset_log()
        third = subprocess.run(
            command(service.base_url, outs[2]), cwd=home, env=_env(home), capture_output=True
        )
        assert third.returncode == 0
        asked = [r.params for r in service.requests_to("query")]
    expected = catalogue.count(start, end)
    assert [len(_events(out)) for out in outs] == [expected] * 3
    # The cache the two filled serves the third run: one `updatedafter` query is all it asks.
    assert [("updatedafter" in params) for params in asked] == [True]
