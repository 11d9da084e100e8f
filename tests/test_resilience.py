"""Faults through real HTTP: a run loads exactly what the service holds, or fails cleanly."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re

import duckdb
import pytest

from pipelines.errors import QuakecatError
from pipelines.extract import fetch_partition
from pipelines.fdsn.client import ClientSettings, FdsnClient, FetchStats
from pipelines.fdsn.fake import Catalogue, FakeFDSN, Faults, generate_catalogue
from pipelines.plan import Window, service_time
from tests.conftest import retry_notice, utc

pytestmark = pytest.mark.slow

FAST_RETRIES = ("--backoff", "0.01", "--max-attempts", "6")


def _loaded(path) -> tuple[int, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchall()[0]


def _run_stats(path) -> tuple[int, int, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT requests, retries, splits FROM etl_runs").fetchall()[0]


@pytest.mark.parametrize(
    ("faults", "statuses", "reason"),
    [
        (Faults(every_503=3), {503}, "HTTP 503"),
        (Faults(every_429=4, retry_after="1"), {429}, "HTTP 429"),
        (
            Faults(every_truncated=5),
            {200},
            r"the connection closed [\d,]+ bytes into a [\d,]+-byte answer",
        ),
        (
            Faults(zero_byte_at=frozenset({2})),
            {200},
            re.escape("empty body (0 bytes) where a GeoJSON FeatureCollection was expected"),
        ),
        (Faults(slow_at=frozenset({3}), slow_s=2.0), {200}, "timed out"),
        (
            Faults(latin1_at=frozenset({2})),
            {200},
            r"body is not UTF-8: byte 0x[0-9a-f]{2} at offset [\d,]+",
        ),
    ],
    ids=["503-every-3rd", "429-every-4th", "truncated-every-5th", "zero-byte", "slow", "latin1"],
)
def test_faults_are_retried_and_every_event_arrives(
    may_catalogue: Catalogue, quakecat, tmp_path, faults, statuses, reason
):
    out = tmp_path / "q.duckdb"
    with FakeFDSN(may_catalogue, faults=faults) as service:
        code, _, stderr = quakecat(
            "--start", "2024-05-01", "--end", "2024-05-06", "--base-url", service.base_url,
            "--out", str(out), "--read-timeout", "1", *FAST_RETRIES,
        )  # fmt: skip
        log = list(service.log)
    assert code == 0
    expected = may_catalogue.count(utc(2024, 5, 1), utc(2024, 5, 6))
    assert _loaded(out) == (expected, expected)
    requests, retries, _ = _run_stats(out)
    # Every request that reached the service is counted (a slow answer the client gave up on is
    # logged only when the fake finishes it), and each fault cost exactly one retry.
    arrivals = max(r.n for r in log)
    assert requests == arrivals
    faulted = [n for n in range(1, arrivals + 1) if faults.pick(n) is not None]
    assert retries == len(faulted) >= 1
    assert {r.status for r in log if r.n in faulted} <= statuses
    # Each retry was announced as it happened, with what went wrong. Arrivals interleave, so a
    # retry can itself be the nth arrival and be faulted again: then that request's notices go
    # on counting (2, 3, ...), never skipping an attempt.
    notices = stderr.splitlines()
    assert len(notices) == retries
    attempts: dict[str, list[int]] = {}
    for line in notices:
        notice = retry_notice(service.base_url, reason, r"(?P<n>\d)", 6).fullmatch(line)
        assert notice, stderr
        attempts.setdefault(notice["request"], []).append(int(notice["n"]))
    assert all(seen == list(range(2, 2 + len(seen))) for seen in attempts.values()), stderr
    # 1 count + 5 daily partitions succeed once each.
    assert requests - retries == 6


def test_a_day_over_three_times_the_limit_is_split_and_never_400s(quakecat, tmp_path):
    catalogue = generate_catalogue(
        utc(2024, 5, 1), utc(2024, 5, 4), per_day=40, seed=3,
        bursts=[(utc(2024, 5, 2), utc(2024, 5, 3), 560)],
    )  # fmt: skip
    heavy_day = catalogue.count(utc(2024, 5, 2), utc(2024, 5, 3))
    assert heavy_day > 3 * 180
    out = tmp_path / "q.duckdb"
    with FakeFDSN(catalogue, max_allowed=180) as service:
        code, _, stderr = quakecat(
            "--start", "2024-05-01", "--end", "2024-05-04", "--base-url", service.base_url,
            "--out", str(out), *FAST_RETRIES,
        )  # fmt: skip
        statuses = {r.status for r in service.log}
    assert (code, stderr) == (0, "")
    assert statuses == {200}
    expected = catalogue.count(utc(2024, 5, 1), utc(2024, 5, 4))
    assert _loaded(out) == (expected, expected)
    _, _, splits = _run_stats(out)
    assert splits >= 2


def test_a_service_that_stays_down_fails_with_the_url_and_last_status(
    may_catalogue, quakecat, tmp_path
):
    out = tmp_path / "q.duckdb"
    with FakeFDSN(may_catalogue) as healthy:
        first = quakecat(
            "--start", "2024-05-01", "--end", "2024-05-02", "--base-url", healthy.base_url,
            "--out", str(out),
        )  # fmt: skip
    assert first[0] == 0
    yesterday = out.read_bytes()
    with FakeFDSN(may_catalogue, faults=Faults(fail_all_status=503)) as service:
        code, stdout, stderr = quakecat(
            "--start", "2024-05-01", "--end", "2024-05-06", "--base-url", service.base_url,
            "--out", str(out), "--backoff", "0.01",
        )  # fmt: skip
        attempts = len(service.log)
    assert (code, stdout) == (1, "")
    *notices, error = stderr.splitlines()
    assert [bool(retry_notice(service.base_url, "HTTP 503", n, 3).fullmatch(line))
            for n, line in enumerate(notices, start=2)] == [True, True], stderr  # fmt: skip
    assert error == (
        f"quakecat: error: {service.base_url}/count failed after 3 attempts; last error: HTTP 503."
        " Check the service or try again later"
    )
    assert attempts == 3
    assert out.read_bytes() == yesterday
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.duckdb", "q.duckdb.html"]


def test_the_politeness_budget_bounds_concurrency_across_50_partitions(quakecat, tmp_path):
    catalogue = generate_catalogue(utc(2020, 1, 1), utc(2024, 3, 1), per_day=1, seed=5)
    out = tmp_path / "q.duckdb"
    with FakeFDSN(catalogue, latency_s=0.05) as service:
        code, stdout, stderr = quakecat(
            "--start", "2020-01-01", "--end", "2024-03-01", "--base-url", service.base_url,
            "--out", str(out), "--max-in-flight", "3",
        )  # fmt: skip
        peak = service.max_in_flight
    assert (code, stderr) == (0, "")
    line = r"^partitions  50 \(0 from cache, (\d+) stored while fetching\)$"
    staged = re.search(line, stdout, re.M)
    assert staged and int(staged[1]) <= 49  # the last one is the load's
    assert peak == 3
    expected = catalogue.count(utc(2020, 1, 1), utc(2024, 3, 1))
    assert _loaded(out) == (expected, expected)


def test_a_year_with_a_month_over_the_limit_takes_at_most_20_requests(quakecat, tmp_path):
    catalogue = generate_catalogue(
        utc(2023, 1, 1), utc(2024, 1, 1), per_day=370, seed=2023,
        bursts=[(utc(2023, 7, 1), utc(2023, 8, 1), 320)],
    )  # fmt: skip
    july = catalogue.count(utc(2023, 7, 1), utc(2023, 8, 1))
    assert july > 20_000
    total = catalogue.count(utc(2023, 1, 1), utc(2024, 1, 1))
    assert 130_000 <= total <= 150_000
    out = tmp_path / "q.duckdb"
    with FakeFDSN(catalogue) as service:
        code, _, stderr = quakecat(
            "--start", "2023-01-01", "--end", "2024-01-01", "--base-url", service.base_url,
            "--out", str(out),
        )  # fmt: skip
        log = list(service.log)
    assert (code, stderr) == (0, "")
    assert _loaded(out) == (total, total)
    assert {r.status for r in log} == {200}
    # 1 count + 12 months + the rest of July after its first, full, page.
    assert len(log) == 14
    assert _run_stats(out) == (14, 0, 1)


def test_events_sharing_the_millisecond_a_full_page_ends_on_are_not_lost():
    base = generate_catalogue(utc(2024, 5, 1), utc(2024, 5, 2), per_day=300, seed=9)
    # Ten events on the very millisecond where the first page (limit 100) will end.
    pinned = base.events[95:105]
    moment = pinned[0].time_ms

    def pin(event):
        feature = json.loads(event.raw)
        feature["properties"]["time"] = moment
        return dataclasses.replace(event, time_ms=moment, raw=json.dumps(feature).encode())

    events = [*base.events[:95], *map(pin, pinned), *base.events[105:]]
    catalogue = Catalogue(tuple(sorted(events, key=lambda e: e.time_ms)))
    with FakeFDSN(catalogue, max_allowed=100) as service:
        client = FdsnClient(ClientSettings(base_url=service.base_url))
        stats = FetchStats()
        got = fetch_partition(client, Window(utc(2024, 5, 1), utc(2024, 5, 2)), None, 100, stats)
    ids = got.events["id"].to_pylist()
    assert sorted(ids) == sorted(e.id for e in catalogue.events)
    assert len(ids) == len(set(ids)) == len(catalogue.events)
    assert stats.splits == stats.requests - 1 >= 2


def test_more_events_in_one_millisecond_than_the_limit_fail_naming_the_partition():
    base = generate_catalogue(utc(2024, 5, 1), utc(2024, 5, 2), per_day=300, seed=9)
    # Five events on one millisecond, with a search limit of four: no split can part them.
    moment = base.events[50].time_ms

    def pin(event):
        feature = json.loads(event.raw)
        feature["properties"]["time"] = moment
        return dataclasses.replace(event, time_ms=moment, raw=json.dumps(feature).encode())

    events = [*base.events[:50], *map(pin, base.events[50:55]), *base.events[55:]]
    catalogue = Catalogue(tuple(sorted(events, key=lambda e: e.time_ms)))
    day = Window(utc(2024, 5, 1), utc(2024, 5, 2))
    with FakeFDSN(catalogue, max_allowed=4) as service:
        client = FdsnClient(ClientSettings(base_url=service.base_url))
        with pytest.raises(QuakecatError) as caught:
            fetch_partition(client, day, None, 4, FetchStats())
    at = service_time(dt.datetime.fromtimestamp(moment / 1000, dt.UTC))
    assert str(caught.value) == (
        f"{day.key}: more than 4 events from {at} on could not be told apart by time; lower the"
        " window or ask the operators"
    )


def test_min_magnitude_asks_the_service_and_loads_exactly_what_it_selects(
    service: FakeFDSN, quakecat, tmp_path
):
    out = tmp_path / "q.duckdb"
    code, _, stderr = quakecat(
        "--start", "2024-05-01", "--end", "2024-05-04", "--base-url", service.base_url,
        "--min-magnitude", "2.5", "--out", str(out),
    )  # fmt: skip
    assert (code, stderr) == (0, "")
    expected = service.catalogue.count(utc(2024, 5, 1), utc(2024, 5, 4), 2.5)
    assert 0 < expected < service.catalogue.count(utc(2024, 5, 1), utc(2024, 5, 4))
    with duckdb.connect(str(out), read_only=True) as con:
        assert con.execute("SELECT count(*), min(mag) >= 2.5 FROM events").fetchall() == [
            (expected, True)
        ]
        assert con.execute("SELECT min_magnitude FROM etl_runs").fetchall() == [(2.5,)]
    assert {r.params.get("minmagnitude") for r in service.log} == {"2.5"}


def test_a_no_data_answer_204_is_an_empty_window_not_a_fault(
    may_catalogue: Catalogue, quakecat, tmp_path
):
    # The FDSN specification's default for a query that matches nothing (USGS sends 200).
    out = tmp_path / "q.duckdb"
    with FakeFDSN(may_catalogue, no_data_status=204) as service:
        stats = FetchStats()
        client = FdsnClient(ClientSettings(base_url=service.base_url))
        got = fetch_partition(client, Window(utc(2024, 5, 1), utc(2024, 5, 2)), 9.5, 20_000, stats)
        assert (got.events.num_rows, got.rejects.num_rows) == (0, 0)
        assert (stats.requests, stats.retries) == (1, 0)
        assert [(r.path, r.status, r.bytes_sent) for r in service.log] == [("query", 204, 0)]
        code, stdout, stderr = quakecat(
            "--start", "2024-05-01", "--end", "2024-05-03", "--base-url", service.base_url,
            "--min-magnitude", "9.5", "--out", str(out),
        )  # fmt: skip
    assert (code, stderr) == (0, "")
    assert "events      0 loaded, 0 rejected" in stdout
    assert _loaded(out) == (0, 0)
