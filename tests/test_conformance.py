"""Conformance: clean_body (and the load) over real USGS answers kept in ../shared/data/usgs-real.

The folder is shared, read-only and not part of this repository; without it the module skips.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipelines.clean import Cleaned, clean_body
from pipelines.errors import BadBody
from schemas.events import RECORD, RECORD_SCHEMA
from tests.conftest import parquet_files, run_record

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "usgs-real"
if not DATA.is_dir():
    pytest.skip(f"real USGS conformance set not found at {DATA}", allow_module_level=True)

UTC = dt.UTC

FDSN_2019 = "fdsn_query_2019_conus_m2.5.geojson"
FEED_2013 = "feed_all_week_2013-08.geojson"
FEED_2014 = "feed_all_week_2014-04.geojson"
COUNT_MISMATCH = "feed_2.5_day_2021-11-23_count_mismatch.json"
SNAPSHOT_1710 = "feed_2.5_day_2022-12-19T1710.json"
SNAPSHOT_1807 = "feed_2.5_day_2022-12-19T1807.json"
EMPTY = "feed_2.5_day_2025-09-29_empty.json"
ZERO_BYTES = "bad_zero_byte_body.json"
TRUNCATED = "bad_feed_1.0_month_2019-02_truncated.json"
LATIN1 = "bad_fdsn_query_uk_latin1.json"
ERROR_400 = "error_400_exceeds_limit.txt"

VALID = {
    FDSN_2019: 4312,
    FEED_2013: 1718,
    FEED_2014: 1513,
    COUNT_MISMATCH: 44,
    SNAPSHOT_1710: 32,
    SNAPSHOT_1807: 30,
    EMPTY: 0,
}
BROKEN = {
    ZERO_BYTES: "empty body (0 bytes) where a GeoJSON FeatureCollection was expected",
    TRUNCATED: (
        "invalid JSON after 3,299,780 bytes (Input data was truncated): truncated or corrupt body"
    ),
    LATIN1: "body is not UTF-8: byte 0xc9 at offset 11,847",
}


@functools.cache
def raw(name: str) -> bytes:
    return (DATA / name).read_bytes()


@functools.cache
def parsed(name: str) -> dict[str, Any]:
    return json.loads(raw(name))


@functools.cache
def cleaned(name: str) -> Cleaned:
    return clean_body(raw(name), name)


def column(name: str, col: str) -> list[Any]:
    return cleaned(name).events.column(col).to_pylist()


def test_the_folder_holds_exactly_the_files_these_tests_know() -> None:
    names = {p.name for p in DATA.iterdir()}
    assert names == {*VALID, *BROKEN, ERROR_400, "README.md"}


# --- valid answers -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "count"), list(VALID.items()))
def test_valid_file_loads_every_feature(name: str, count: int) -> None:
    result = cleaned(name)
    assert result.events.schema == RECORD_SCHEMA
    assert (result.events.num_rows, result.rejects.num_rows, result.received) == (count, 0, count)
    assert len(parsed(name)["features"]) == count
    assert column(name, "id") == [f["id"] for f in parsed(name)["features"]]


@pytest.mark.parametrize("name", list(VALID))
def test_null_contract_holds_on_real_data(name: str) -> None:
    """Per column: NULL exactly where the service sent null or left the key out."""
    features = parsed(name)["features"]
    events = cleaned(name).events
    for c in RECORD:
        if c.wire is not None:
            sent_null = sum(f["properties"].get(c.wire) is None for f in features)
        elif c.name == "depth_km":
            sent_null = sum(f["geometry"]["coordinates"][2] is None for f in features)
        else:
            sent_null = 0
        assert events.column(c.name).null_count == sent_null, c.name


@pytest.mark.parametrize("name", [n for n, count in VALID.items() if count])
def test_no_float_artefact_survives(name: str) -> None:
    """Every rounded column holds no more decimals than USGS publishes."""
    events = cleaned(name).events
    for c in RECORD:
        if c.decimals is None:
            continue
        for value in events.column(c.name).to_pylist():
            if value is not None:
                assert value == round(value, c.decimals), (c.name, value)
                assert len(repr(value).partition(".")[2]) <= c.decimals, (c.name, value)


def test_fdsn_2019_first_feature() -> None:
    (first,) = cleaned(FDSN_2019).events.slice(0, 1).to_pylist()
    assert first == {
        "id": "nc73314571",
        "mag": 2.51,
        "place": "4km NW of The Geysers, CA",
        "time": dt.datetime(2019, 12, 14, 6, 51, 7, 580000, tzinfo=UTC),
        "updated": dt.datetime(2019, 12, 14, 6, 56, 3, 68000, tzinfo=UTC),
        "tz": -480,
        "url": "https://earthquake.usgs.gov/earthquakes/eventpage/nc73314571",
        "detail": "https://earthquake.usgs.gov/fdsnws/event/1/query?eventid=nc73314571&format=geojson",
        "felt": None,
        "cdi": None,
        "mmi": None,
        "alert": None,
        "status": "automatic",
        "tsunami": 0,
        "sig": 97,
        "net": "nc",
        "code": "73314571",
        "ids": ["nc73314571"],
        "sources": ["nc"],
        "types": [
            "focal-mechanism", "geoserve", "nearby-cities", "origin", "phase-data",
            "scitech-link",
        ],
        "nst": 51,
        "dmin": 0.00418,
        "rms": 0.06,
        "gap": 35.0,
        "mag_type": "md",
        "event_type": "earthquake",
        "title": "M 2.5 - 4km NW of The Geysers, CA",
        "longitude": -122.79083,
        "latitude": 38.80567,
        "depth_km": 1.43,
    }  # fmt: skip


def test_fdsn_2019_17_digit_magnitudes() -> None:
    assert raw(FDSN_2019).count(b'"mag":2.5099999999999998,') == 71
    assert column(FDSN_2019, "mag").count(2.51) == 71


def test_fdsn_2019_tz_null_in_some_rows() -> None:
    tz = column(FDSN_2019, "tz")
    counts = {value: tz.count(value) for value in set(tz)}
    assert counts == {-480: 3420, -420: 251, -360: 438, -300: 41, -240: 4, None: 158}


def test_fdsn_2019_event_types() -> None:
    counts: dict[str, int] = {}
    for t in column(FDSN_2019, "event_type"):
        counts[t] = counts.get(t, 0) + 1
    assert counts == {
        "earthquake": 4147,
        "mining explosion": 160,
        "explosion": 3,
        "quarry blast": 1,
        "mine collapse": 1,
    }


@pytest.mark.parametrize("name", [FEED_2013, FEED_2014])
def test_status_lower_cased_across_old_feeds(name: str) -> None:
    sent = {f["properties"]["status"] for f in parsed(name)["features"]}
    assert "REVIEWED" in sent
    assert set(column(name, "status")) == {"reviewed", "automatic"}


def test_2014_status_counts_merge_both_spellings() -> None:
    status = column(FEED_2014, "status")
    assert (status.count("reviewed"), status.count("automatic")) == (651 + 198, 435 + 229)


@pytest.mark.parametrize("name", [FEED_2013, FEED_2014])
def test_quarry_spellings_become_quarry_blast(name: str) -> None:
    assert set(column(name, "event_type")) == {"earthquake", "quarry blast"}


def test_2014_event_type_counts() -> None:
    types = column(FEED_2014, "event_type")
    assert (types.count("earthquake"), types.count("quarry blast")) == (1486, 15 + 12)


def test_2013_feed_has_no_title_and_it_is_null_throughout() -> None:
    assert all("title" not in f["properties"] for f in parsed(FEED_2013)["features"])
    assert {len(f["properties"]) for f in parsed(FEED_2013)["features"]} == {25}
    assert cleaned(FEED_2013).events.column("title").null_count == 1718


def test_2013_mag_type_lower_cased() -> None:
    sent = {f["properties"]["magType"] for f in parsed(FEED_2013)["features"]}
    assert any(t != t.lower() for t in sent if t is not None)
    got = set(column(FEED_2013, "mag_type"))
    assert got == {t.lower() if t is not None else None for t in sent}
    assert all(t is None or t == t.lower() for t in got)


def test_count_mismatch_features_win() -> None:
    assert parsed(COUNT_MISMATCH)["metadata"]["count"] == 43
    assert cleaned(COUNT_MISMATCH).events.num_rows == 44


def test_empty_answer() -> None:
    assert "bbox" not in parsed(EMPTY)
    assert parsed(EMPTY)["metadata"]["count"] == 0
    assert cleaned(EMPTY).events.equals(RECORD_SCHEMA.empty_table())


@pytest.mark.parametrize("name", list(VALID))
def test_time_is_the_epoch_ms_sent(name: str) -> None:
    events = cleaned(name).events
    for col in ("time", "updated"):
        sent = [f["properties"][col] for f in parsed(name)["features"]]
        assert events.column(col).cast(pa.int64()).to_pylist() == sent


# --- broken answers ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "message"), list(BROKEN.items()))
def test_broken_file_is_a_bad_body(name: str, message: str) -> None:
    with pytest.raises(BadBody) as info:
        clean_body(raw(name), name)
    assert str(info.value) == message


def test_latin1_offset_is_the_first_non_utf8_byte() -> None:
    body = raw(LATIN1)
    assert body[11847] == 0xC9
    body[:11847].decode("utf-8")  # all valid before it


def test_error_400_text_is_a_bad_body() -> None:
    with pytest.raises(BadBody, match=r"^invalid JSON after 262 bytes \("):
        clean_body(raw(ERROR_400), ERROR_400)


# --- two snapshots an hour apart, through the load -----------------------------------------


def _features_by_id(name: str) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in parsed(name)["features"]}


def _revised() -> dict[str, dict[str, Any]]:
    """id -> newer properties, for ids in both snapshots whose properties changed."""
    older, newer = _features_by_id(SNAPSHOT_1710), _features_by_id(SNAPSHOT_1807)
    return {
        i: newer[i]["properties"]
        for i in sorted(older.keys() & newer.keys())
        if older[i]["properties"] != newer[i]["properties"]
    }


def _run(run_id: str):
    from pipelines.plan import Window

    return run_record(
        run_id,
        Window(dt.datetime(2022, 12, 18, tzinfo=UTC), dt.datetime(2022, 12, 20, tzinfo=UTC)),
        started_at=dt.datetime(2022, 12, 19, 18, 7, tzinfo=UTC),
        base_url="https://earthquake.usgs.gov",
        min_magnitude=2.5,
    )


def _load(path: Path, names: list[str], run_id: str):
    from pipelines.load import write_duckdb
    from pipelines.transform import derive

    return write_duckdb(
        path,
        parquet_files([derive(cleaned(n).events) for n in names], path.parent, run_id),
        [cleaned(n).rejects for n in names],
        _run(run_id),
    )


def _rows(path: Path) -> dict[str, tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute("SELECT id, updated, place, title FROM events").fetchall()
    return {r[0]: r[1:] for r in rows}


def _expected(props: dict[str, Any]) -> tuple[Any, ...]:
    updated = dt.datetime.fromtimestamp(props["updated"] / 1000, UTC)
    return (updated, props["place"], props["title"])


def test_snapshots_facts() -> None:
    older, newer = _features_by_id(SNAPSHOT_1710), _features_by_id(SNAPSHOT_1807)
    assert (len(older), len(newer)) == (32, 30)
    assert len(older.keys() & newer.keys()) == 30
    assert len(older.keys() | newer.keys()) == 32
    assert len(older.keys() - newer.keys()) == 2
    revised = _revised()
    assert len(revised) == 9
    for i, props in revised.items():
        changed = {k for k in props if props[k] != older[i]["properties"][k]}
        assert changed == {"place", "title"}, i
        # The README says `updated` was revised too; in these bytes it was not.
        assert props["updated"] == older[i]["properties"]["updated"], i
    generated = [parsed(n)["metadata"]["generated"] for n in (SNAPSHOT_1710, SNAPSHOT_1807)]
    assert generated[0] < generated[1]


def test_snapshots_in_one_load_keep_one_row_per_id(tmp_path: Path) -> None:
    path = tmp_path / "quakes.duckdb"
    counts = _load(path, [SNAPSHOT_1710, SNAPSHOT_1807], "run-1")
    distinct = _features_by_id(SNAPSHOT_1710).keys() | _features_by_id(SNAPSHOT_1807).keys()
    rows = _rows(path)
    assert len(distinct) == 32
    assert set(rows) == distinct
    assert (counts.received, counts.loaded, counts.rejected, counts.total) == (32, 32, 0, 32)
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchall() == [
            (32, 32)
        ]


def test_snapshots_in_one_load_keep_the_newer_revision(tmp_path: Path) -> None:
    revised = _revised()
    assert len(revised) == 9
    for attempt in range(5):  # `updated` ties: the later arrival must win every time
        path = tmp_path / f"quakes-{attempt}.duckdb"
        _load(path, [SNAPSHOT_1710, SNAPSHOT_1807], f"run-{attempt}")
        rows = _rows(path)
        assert {i: rows[i] for i in revised} == {i: _expected(p) for i, p in revised.items()}


def test_snapshots_in_two_runs_keep_the_newer_revision(tmp_path: Path) -> None:
    path = tmp_path / "quakes.duckdb"
    first = _load(path, [SNAPSHOT_1710], "run-1710")
    second = _load(path, [SNAPSHOT_1807], "run-1807")
    assert (first.received, first.total) == (32, 32)
    assert (second.received, second.loaded, second.total) == (30, 30, 32)

    older, newer = _features_by_id(SNAPSHOT_1710), _features_by_id(SNAPSHOT_1807)
    rows = _rows(path)
    assert set(rows) == older.keys() | newer.keys()
    revised = _revised()
    assert len(revised) == 9
    assert {i: rows[i] for i in revised} == {i: _expected(p) for i, p in revised.items()}
    # The two events that dropped out of the later feed keep their only revision.
    for i in older.keys() - newer.keys():
        assert rows[i] == _expected(older[i]["properties"])
    # Everything else is as the later feed has it.
    for i, f in newer.items():
        assert rows[i] == _expected(f["properties"])
