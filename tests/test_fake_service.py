"""The fake FDSN service must behave like USGS on the wire, or pipeline tests prove nothing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import requests

from pipelines.fdsn.fake import Catalogue, FakeFDSN, Faults, generate_catalogue

START = datetime(2024, 5, 1)
END = datetime(2024, 5, 11)
PROPERTY_ORDER = [
    "mag", "place", "time", "updated", "tz", "url", "detail", "felt", "cdi", "mmi", "alert",
    "status", "tsunami", "sig", "net", "code", "ids", "sources", "types", "nst", "dmin", "rms",
    "gap", "magType", "type", "title",
]  # fmt: skip


def iso(t_ms: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(milliseconds=t_ms)).isoformat(timespec="milliseconds")


def ms(*ymd: int) -> int:
    return int(datetime(*ymd, tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return generate_catalogue(START, END, seed=11)


@pytest.fixture
def fake(cat: Catalogue):
    with FakeFDSN(cat, max_allowed=1000) as f:
        yield f


def get(fake: FakeFDSN, path: str = "query", **params) -> requests.Response:
    params.setdefault("format", "geojson")
    return requests.get(f"{fake.base_url}/{path}", params=params, timeout=10)


def ids(resp: requests.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [f["id"] for f in resp.json()["features"]]


def test_year_generation_is_realistic() -> None:
    # How fast it is, `just bench` reports ("catalogue: ... events in ... s"); no timed asserts.
    events = generate_catalogue(datetime(2024, 1, 1), datetime(2025, 1, 1), per_day=385.0).events
    assert 135_000 < len(events) < 147_000
    assert [e.time_ms for e in events] == sorted(e.time_ms for e in events)
    assert len({e.id for e in events}) == len(events)
    feats = [msgspec.json.decode(e.raw) for e in events[:20_000]]
    assert all(list(f) == ["type", "properties", "geometry", "id"] for f in feats)
    assert all(list(f["properties"]) == PROPERTY_ORDER for f in feats)
    for f in feats:
        p, (lon, lat, depth) = f["properties"], f["geometry"]["coordinates"]
        assert -180 <= lon <= 180 and -90 <= lat <= 90 and -3 <= depth <= 700
        assert p["updated"] >= p["time"] and f["id"] in p["ids"].strip(",").split(",")
        assert p["ids"].startswith(",") and p["ids"].endswith(",")
    mags = [f["properties"]["mag"] for f in feats]
    places = [f["properties"]["place"] for f in feats]
    assert 0.003 < mags.count(None) / len(mags) < 0.03
    assert any(m is not None and m < 0 for m in mags) and max(m or 0 for m in mags) > 5
    assert None in places and any(p and ", " not in p for p in places)
    assert any(p and not p.isascii() for p in places)
    assert any("," in f["properties"]["ids"][1:-1] for f in feats)
    assert {f["properties"]["magType"] for f in feats} >= {"ml", "md", "mb", "mww", "Ml"}
    assert {f["properties"]["type"] for f in feats} >= {"earthquake", "quarry blast"}


def test_generation_is_deterministic_and_bursts_add_volume() -> None:
    july, burst = (datetime(2024, 7, 1), datetime(2024, 8, 1)), datetime(2024, 7, 10)
    spec = dict(bursts=[(burst, burst + timedelta(days=1), 4000.0)])
    a, b = generate_catalogue(*july, **spec), generate_catalogue(*july, **spec)
    assert [e.raw for e in a.events] == [e.raw for e in b.events]
    assert a.events[0].raw != generate_catalogue(*july, seed=8).events[0].raw
    assert a.count(*july) > 14_000
    assert 4_000 < a.count(burst, burst + timedelta(days=1)) < 4_700


def test_count_matches_catalogue(fake: FakeFDSN, cat: Catalogue) -> None:
    for start, end, mm in [(START, END, None), (START, START + timedelta(hours=5), 1.5)]:
        params = {"starttime": start.isoformat(), "endtime": end.isoformat()}
        if mm is not None:
            params["minmagnitude"] = str(mm)
        resp = get(fake, "count", **params)
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json() == {"count": cat.count(start, end, mm), "maxAllowed": 1000}


def test_window_is_start_inclusive_end_exclusive(fake: FakeFDSN, cat: Catalogue) -> None:
    edge = cat.events[500]
    lo, hi = cat.events[400].time_ms, edge.time_ms
    got = ids(get(fake, starttime=iso(lo), endtime=iso(hi)))
    expected = [e.id for e in reversed(cat.select(lo, hi))]  # newest first by default
    assert got == expected and edge.id not in got and cat.events[400].id in got
    at_edge = ids(get(fake, starttime=iso(hi) + "Z", endtime=iso(hi + 1) + "+00:00"))
    assert at_edge == [e.id for e in cat.events if e.time_ms == hi] and edge.id in at_edge


def test_minmagnitude_orderby_limit_offset_updatedafter(fake: FakeFDSN, cat: Catalogue) -> None:
    day = {"starttime": "2024-05-02", "endtime": "2024-05-03"}
    lo, hi = ms(2024, 5, 2), ms(2024, 5, 3)
    asc = [e.id for e in cat.select(lo, hi)]
    assert ids(get(fake, orderby="time-asc", **day)) == asc
    strong = [e.id for e in cat.select(lo, hi) if e.mag is not None and e.mag >= 2.0]
    assert ids(get(fake, orderby="time-asc", minmagnitude="2.0", **day)) == strong
    assert ids(get(fake, orderby="time-asc", limit="5", offset="11", **day)) == asc[10:15]
    assert ids(get(fake, orderby="time-asc", limit="3", **day)) == asc[:3]
    assert ids(get(fake, limit="2", offset="1", **day)) == asc[::-1][:2]
    cut = sorted(e.updated_ms for e in cat.select(lo, hi))[len(asc) // 2]
    fresh = [e.id for e in cat.select(lo, hi) if e.updated_ms > cut]
    assert ids(get(fake, orderby="time-asc", updatedafter=iso(cut), **day)) == fresh


def test_feature_collection_wire_format(fake: FakeFDSN, cat: Catalogue) -> None:
    resp = get(fake, starttime="2024-05-03T00:00:00", endtime="2024-05-03T03:00:00", limit="20")
    assert resp.headers["Content-Type"] == "application/json"
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    body = resp.json()
    assert list(body) == ["type", "metadata", "features", "bbox"]
    meta = body["metadata"]
    assert meta["count"] == len(body["features"]) and meta["status"] == 200
    assert meta["title"] == "USGS Earthquakes" and meta["limit"] == 20
    coords = [f["geometry"]["coordinates"] for f in body["features"]]
    assert body["bbox"][:3] == [min(c[i] for c in coords) for i in range(3)]
    hour = cat.features(datetime(2024, 5, 3), datetime(2024, 5, 3, 3))
    assert len(hour) > 20 and body["features"] == hour[::-1][:20]
    empty = get(fake, starttime="2030-01-01", endtime="2030-01-02").json()
    assert empty["features"] == [] and "bbox" not in empty and empty["metadata"]["count"] == 0


def test_bad_requests_answer_400_text(fake: FakeFDSN) -> None:
    no_format = requests.get(f"{fake.base_url}/query", timeout=5)
    assert no_format.status_code == 400 and "format must be geojson" in no_format.text
    assert get(fake, format="xml").status_code == 400
    bad = get(fake, minlatitudes="5")
    assert bad.status_code == 400 and "Invalid parameter minlatitudes" in bad.text
    assert get(fake, starttime="yesterday").status_code == 400
    assert get(fake, orderby="magnitude").status_code == 400
    assert requests.get(f"{fake.base_url}/nope", timeout=5).status_code == 404


def test_over_limit_is_400_unless_limit_truncates(fake: FakeFDSN, cat: Catalogue) -> None:
    window = {"starttime": START.isoformat(), "endtime": END.isoformat()}
    resp = get(fake, **window)
    lines = resp.text.splitlines()
    assert resp.status_code == 400 and resp.headers["Content-Type"].startswith("text/plain")
    assert lines[0] == "Error 400: Bad Request"
    assert lines[1] == (
        f"{cat.count(START, END)} matching events exceeds search limit of 1000. "
        "Modify the search to match fewer events."
    )
    assert lines[2] == "Usage details are available from https://earthquake.usgs.gov/fdsnws/event/1"
    assert lines[3].startswith("Request Submitted: ") and lines[4].startswith("Service version: ")
    assert get(fake, limit="1001", **window).status_code == 400
    truncated = ids(get(fake, limit="1000", **window))
    assert truncated == [e.id for e in reversed(cat.events)][:1000]


def test_fault_schedule_on_the_wire(cat: Catalogue) -> None:
    q = {"starttime": "2024-05-04", "endtime": "2024-05-04T06:00:00"}
    faults = Faults(every_503=7, every_429=5, retry_after="3", every_truncated=4)
    with FakeFDSN(cat, faults=faults) as fake:
        seen = []
        for _ in range(7):
            try:
                r = get(fake, **q)
                seen.append((r.status_code, r.headers.get("Retry-After"), len(r.content)))
            except requests.exceptions.ChunkedEncodingError:
                seen.append(("truncated", None, None))
        full = seen[0][2]
        assert seen == [
            (200, None, full),
            (200, None, full),
            (200, None, full),
            ("truncated", None, None),
            (429, "3", seen[4][2]),
            (200, None, full),
            (503, None, seen[6][2]),
        ]
        log = fake.requests_to("query")
        assert [r.n for r in log] == list(range(1, 8))
        assert [r.status for r in log] == [200, 200, 200, 200, 429, 200, 503]
        assert log[3].bytes_sent == full // 2 and log[0].bytes_sent == full
        assert log[0].params == {"format": "geojson", **q}

        fake.set_faults(Faults(zero_byte_at=frozenset({8}), latin1_at=frozenset({9})))
        zero = get(fake, **q)
        assert zero.status_code == 200 and zero.content == b""
        assert zero.headers["Content-Length"] == "0"
        latin = get(fake, **q)
        assert latin.status_code == 200 and len(latin.content) < full
        with pytest.raises(UnicodeDecodeError):
            latin.content.decode("utf-8")
        assert msgspec.json.decode(latin.content.decode("latin-1"))["type"] == "FeatureCollection"

        fake.set_faults(Faults(fail_all_status=503, every_429=1))
        assert [get(fake, "count", **q).status_code for _ in range(3)] == [503] * 3
        fake.reset_log()
        fake.set_faults(Faults())
        assert get(fake, "count", **q).status_code == 200
        assert [(r.n, r.path, r.status) for r in fake.log] == [(13, "count", 200)]


def test_slow_and_concurrency_are_observable(cat: Catalogue) -> None:
    q = {"starttime": "2024-05-04", "endtime": "2024-05-04T01:00:00"}
    with FakeFDSN(cat, faults=Faults(slow_at=frozenset({1}), slow_s=0.6)) as fake:
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f"{fake.base_url}/query", params={"format": "geojson", **q}, timeout=0.2)
        t0 = time.perf_counter()
        assert get(fake, **q).status_code == 200
        assert time.perf_counter() - t0 < 0.5
    with FakeFDSN(cat, latency_s=0.4) as fake, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: get(fake, "count", **q).status_code, range(4)))
        assert statuses == [200] * 4
        assert fake.max_in_flight == 4 and sorted(r.in_flight for r in fake.log)[-1] == 4
        assert sorted(r.n for r in fake.log) == [1, 2, 3, 4]


def test_transfer_rate_cap_paces_the_body_without_changing_it(cat: Catalogue) -> None:
    q = {"starttime": "2024-05-02", "endtime": "2024-05-04", "limit": "600"}
    with FakeFDSN(cat) as fake:
        free = get(fake, **q).content
    rate = 2_000_000.0  # bytes per second: a ~0.6 MB answer takes ~0.3 s
    assert len(free) > 400_000
    with FakeFDSN(cat, rate_bytes_per_s=rate) as fake:
        t0 = time.perf_counter()
        capped = get(fake, **q)
        seconds = time.perf_counter() - t0
        assert capped.status_code == 200 and len(capped.content) == len(free)
        # Only metadata.generated (the time of the answer) may differ.
        after_metadata = free.index(b',"features":')
        assert capped.content[after_metadata:] == free[after_metadata:]
        assert int(capped.headers["Content-Length"]) == len(free)
        assert fake.log[-1].bytes_sent == len(free)
    assert len(free) / rate <= seconds < len(free) / rate + 2.0
    with pytest.raises(ValueError, match="rate_bytes_per_s"):
        FakeFDSN(cat, rate_bytes_per_s=0)
