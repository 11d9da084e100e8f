"""clean_body: one rule per test, tiny inline GeoJSON bodies, exact expected values."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from pipelines.clean import REJECTS_SCHEMA, Cleaned, clean_body
from pipelines.errors import BadBody
from schemas.events import RECORD_SCHEMA

UTC = dt.UTC

# The 26 properties of a USGS GeoJSON feature, in the order the service sends them.
USGS_PROPERTIES = (
    "mag", "place", "time", "updated", "tz", "url", "detail", "felt", "cdi", "mmi", "alert",
    "status", "tsunami", "sig", "net", "code", "ids", "sources", "types", "nst", "dmin", "rms",
    "gap", "magType", "type", "title",
)  # fmt: skip
REQUIRED_PROPERTIES = ("time", "updated")
NULLABLE_PROPERTIES = tuple(p for p in USGS_PROPERTIES if p not in REQUIRED_PROPERTIES)
COLUMN_OF = {"magType": "mag_type", "type": "event_type"}

TIME_MS = 1576306267580  # 2019-12-14T06:51:07.580Z
UPDATED_MS = 1576306563068  # 2019-12-14T06:56:03.068Z


def feature(
    id: str | None = "nc73314571",
    *,
    coordinates: list[Any] | None = None,
    drop: tuple[str, ...] = (),
    **properties: Any,
) -> dict[str, Any]:
    """One USGS-shaped feature with all 26 properties; keyword arguments override properties."""
    props: dict[str, Any] = {
        "mag": 2.51,
        "place": "4km NW of The Geysers, CA",
        "time": TIME_MS,
        "updated": UPDATED_MS,
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
        "ids": ",nc73314571,",
        "sources": ",nc,",
        "types": ",focal-mechanism,origin,",
        "nst": 51,
        "dmin": 0.00418,
        "rms": 0.06,
        "gap": 35,
        "magType": "md",
        "type": "earthquake",
        "title": "M 2.5 - 4km NW of The Geysers, CA",
    }
    assert tuple(props) == USGS_PROPERTIES
    props.update(properties)
    for key in drop:
        del props[key]
    out: dict[str, Any] = {
        "type": "Feature",
        "properties": props,
        "geometry": {
            "type": "Point",
            "coordinates": [-122.7908325, 38.8056679, 1.43] if coordinates is None else coordinates,
        },
        "id": id,
    }
    return out


def body(*features: dict[str, Any], count: int | None = None, **dumps: Any) -> bytes:
    collection = {
        "type": "FeatureCollection",
        "metadata": {"count": len(features) if count is None else count, "api": "1.8.1"},
        "features": list(features),
    }
    return json.dumps(collection, **dumps).encode("utf-8")


def clean(*features: dict[str, Any], **kwargs: Any) -> Cleaned:
    return clean_body(body(*features, **kwargs), "2019-12-14")


def only_event(*features: dict[str, Any]) -> dict[str, Any]:
    cleaned = clean(*features)
    assert cleaned.rejects.num_rows == 0, cleaned.rejects.to_pylist()
    (row,) = cleaned.events.to_pylist()
    return row


def without_key(d: dict[str, Any], key: str) -> dict[str, Any]:
    out = copy.deepcopy(d)
    del out[key]
    return out


# A feature that is always rejected: putting it first forces clean_body off its all-valid fast
# path onto the per-feature path, which must give the same answer for the good features.
OUT_OF_RANGE = feature("zz-bad", mag=99.0)
OUT_OF_RANGE_REASON = "Expected `float` <= 10.0 - at `$.properties.mag`"


@pytest.fixture(params=["fast-path", "per-feature-path"])
def events_of(request: pytest.FixtureRequest) -> Callable[..., pa.Table]:
    """Clean features alone, or behind one rejected feature; either way return the events."""

    def run(*features: dict[str, Any]) -> pa.Table:
        if request.param == "fast-path":
            cleaned = clean(*features)
            assert cleaned.rejects.num_rows == 0, cleaned.rejects.to_pylist()
        else:
            cleaned = clean(OUT_OF_RANGE, *features)
            assert cleaned.rejects.select(["id", "reason"]).to_pylist() == [
                {"id": "zz-bad", "reason": OUT_OF_RANGE_REASON}
            ]
        assert cleaned.events.schema == RECORD_SCHEMA
        return cleaned.events

    return run


def column(events: pa.Table, name: str) -> list[Any]:
    return events.column(name).to_pylist()


# --- a whole record -------------------------------------------------------------------------


def test_full_feature_converts_to_one_exact_row(events_of) -> None:
    expected = pa.Table.from_pylist(
        [
            {
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
                "types": ["focal-mechanism", "origin"],
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
            }
        ],
        schema=RECORD_SCHEMA,
    )
    result = events_of(feature())
    assert result.equals(expected, check_metadata=True)
    assert_frame_equal(pl.from_arrow(result), pl.from_arrow(expected))


def test_received_counts_accepted_and_rejected() -> None:
    cleaned = clean(feature("a"), feature("b", mag=None), feature("c", time=None))
    assert (cleaned.events.num_rows, cleaned.rejects.num_rows, cleaned.received) == (2, 1, 3)
    assert cleaned.rejects.schema == REJECTS_SCHEMA


# --- the null contract ----------------------------------------------------------------------


@pytest.mark.parametrize("prop", NULLABLE_PROPERTIES)
def test_null_stays_null(prop: str, events_of) -> None:
    events = events_of(feature(**{prop: None}))
    assert column(events, COLUMN_OF.get(prop, prop)) == [None]


@pytest.mark.parametrize("prop", NULLABLE_PROPERTIES)
def test_missing_key_is_null(prop: str, events_of) -> None:
    events = events_of(feature(drop=(prop,)))
    assert column(events, COLUMN_OF.get(prop, prop)) == [None]


def test_every_nullable_property_null_at_once(events_of) -> None:
    events = events_of(feature(coordinates=[1.5, -2.5, None], **dict.fromkeys(NULLABLE_PROPERTIES)))
    nulls = {name: None for name in events.column_names}
    expected = {
        **nulls,
        "id": "nc73314571",
        "time": dt.datetime(2019, 12, 14, 6, 51, 7, 580000, tzinfo=UTC),
        "updated": dt.datetime(2019, 12, 14, 6, 56, 3, 68000, tzinfo=UTC),
        "longitude": 1.5,
        "latitude": -2.5,
    }
    assert events.to_pylist() == [expected]
    # Not one invented 0 or "" anywhere.
    assert [events.column(n).null_count for n in events.column_names] == [
        0 if expected[n] is not None else 1 for n in events.column_names
    ]


def test_old_answer_without_title_is_null(events_of) -> None:
    """API 1.0.9 answers have 25 keys: no `title`."""
    events = events_of(feature("a", drop=("title",)), feature("b", title="M 1.0 - b"))
    assert column(events, "title") == [None, "M 1.0 - b"]


def test_depth_null_stays_null(events_of) -> None:
    events = events_of(feature(coordinates=[-122.5, 38.5, None]))
    assert column(events, "depth_km") == [None]


def test_zero_and_empty_string_are_kept_not_nulled(events_of) -> None:
    events = events_of(feature(mag=0.0, felt=0, tsunami=0, sig=0, nst=0, place="", gap=0))
    row = events.to_pylist()[0]
    assert (row["mag"], row["felt"], row["tsunami"], row["sig"], row["nst"], row["place"]) == (
        0.0, 0, 0, 0, 0, "",
    )  # fmt: skip
    assert row["gap"] == 0.0


# --- required fields -----------------------------------------------------------------------


def _drop_id(f: dict[str, Any]) -> dict[str, Any]:
    return without_key(f, "id")


def _null_id(f: dict[str, Any]) -> dict[str, Any]:
    return {**f, "id": None}


def _props(**over: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "properties": {**f["properties"], **over}}

    return edit


def _drop_prop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "properties": without_key(f["properties"], key)}

    return edit


def _coords(coordinates: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "geometry": {"type": "Point", "coordinates": coordinates}}

    return edit


def _geometry(geometry: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(f: dict[str, Any]) -> dict[str, Any]:
        return {**f, "geometry": geometry}

    return edit


@pytest.mark.parametrize(
    ("edit", "known_id", "reason"),
    [
        (_drop_id, False, "Object missing required field `id`"),
        (_null_id, False, "Expected `str`, got `null` - at `$.id`"),
        (_drop_prop("time"), True, "Object missing required field `time` - at `$.properties`"),
        (_props(time=None), True, "Expected `int`, got `null` - at `$.properties.time`"),
        (
            _drop_prop("updated"),
            True,
            "Object missing required field `updated` - at `$.properties`",
        ),
        (_props(updated=None), True, "Expected `int`, got `null` - at `$.properties.updated`"),
        (
            _coords([None, 38.8, 1.4]),
            True,
            "Expected `float`, got `null` - at `$.geometry.coordinates[0]`",
        ),
        (
            _coords([-122.7, None, 1.4]),
            True,
            "Expected `float`, got `null` - at `$.geometry.coordinates[1]`",
        ),
        (_coords([38.8]), True, "Expected `array` of length 3 - at `$.geometry.coordinates`"),
        (_coords(None), True, "Expected `array`, got `null` - at `$.geometry.coordinates`"),
        (_geometry(None), True, "Expected `object`, got `null` - at `$.geometry`"),
    ],
    ids=[
        "id-missing", "id-null", "time-missing", "time-null", "updated-missing", "updated-null",
        "longitude-null", "latitude-null", "coordinates-short", "coordinates-null",
        "geometry-null",
    ],
)  # fmt: skip
def test_missing_or_null_required_field_rejects_that_record(
    edit: Callable[[dict[str, Any]], dict[str, Any]], known_id: bool, reason: str
) -> None:
    bad = edit(feature("ci40000002"))
    cleaned = clean(feature("ci40000001"), bad, feature("ci40000003"))

    assert column(cleaned.events, "id") == ["ci40000001", "ci40000003"]
    expected = pa.Table.from_pylist(
        [
            {
                "partition": "2019-12-14",
                "id": "ci40000002" if known_id else None,
                "reason": reason,
                "raw_json": json.dumps(bad),
            }
        ],
        schema=REJECTS_SCHEMA,
    )
    assert cleaned.rejects.equals(expected)
    assert json.loads(cleaned.rejects.column("raw_json")[0].as_py()) == bad


def test_a_feature_that_is_not_an_object_is_rejected_without_id() -> None:
    cleaned = clean_body(
        b'{"type":"FeatureCollection","features":[null,' + json.dumps(feature()).encode() + b"]}",
        "p",
    )
    assert column(cleaned.events, "id") == ["nc73314571"]
    assert cleaned.rejects.to_pylist() == [
        {
            "partition": "p",
            "id": None,
            "reason": "Expected `object`, got `null`",
            "raw_json": "null",
        }
    ]


def test_every_feature_rejected_gives_empty_events_with_schema() -> None:
    cleaned = clean(feature("a", time=None), feature("b", mag=11.0))
    assert cleaned.events.equals(RECORD_SCHEMA.empty_table())
    assert column(cleaned.rejects, "id") == ["a", "b"]


# --- ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        (
            {"coordinates": [-122.7, 91.0, 1.4]},
            "Expected `float` <= 90.0 - at `$.geometry.coordinates[1]`",
        ),
        (
            {"coordinates": [-122.7, -90.5, 1.4]},
            "Expected `float` >= -90.0 - at `$.geometry.coordinates[1]`",
        ),
        (
            {"coordinates": [-181.0, 38.8, 1.4]},
            "Expected `float` >= -180.0 - at `$.geometry.coordinates[0]`",
        ),
        (
            {"coordinates": [180.5, 38.8, 1.4]},
            "Expected `float` <= 180.0 - at `$.geometry.coordinates[0]`",
        ),
        (
            {"coordinates": [-122.7, 38.8, 1001.0]},
            "Expected `float` <= 1000.0 - at `$.geometry.coordinates[2]`",
        ),
        (
            {"coordinates": [-122.7, 38.8, -15.5]},
            "Expected `float` >= -15.0 - at `$.geometry.coordinates[2]`",
        ),
        ({"mag": 10.5}, "Expected `float` <= 10.0 - at `$.properties.mag`"),
        ({"mag": -2.5}, "Expected `float` >= -2.0 - at `$.properties.mag`"),
        ({"tz": 1260}, "Expected `int` <= 1200 - at `$.properties.tz`"),
        ({"felt": -1}, "Expected `int` >= 0 - at `$.properties.felt`"),
        ({"tsunami": 2}, "Expected `int` <= 1 - at `$.properties.tsunami`"),
        ({"gap": 361.0}, "Expected `float` <= 360.0 - at `$.properties.gap`"),
        ({"cdi": 12.5}, "Expected `float` <= 12.0 - at `$.properties.cdi`"),
        ({"dmin": -0.1}, "Expected `float` >= 0.0 - at `$.properties.dmin`"),
    ],
    ids=[
        "lat-91", "lat--90.5", "lon--181", "lon-180.5", "depth-1001", "depth--15.5",
        "mag-10.5", "mag--2.5", "tz-1260", "felt--1", "tsunami-2", "gap-361", "cdi-12.5",
        "dmin--0.1",
    ],
)  # fmt: skip
def test_out_of_range_rejects_that_record(override: dict[str, Any], reason: str) -> None:
    bad = feature("us7000bad", **override)
    cleaned = clean(feature("us7000ok1"), bad)
    assert column(cleaned.events, "id") == ["us7000ok1"]
    assert cleaned.rejects.to_pylist() == [
        {
            "partition": "2019-12-14",
            "id": "us7000bad",
            "reason": reason,
            "raw_json": json.dumps(bad),
        }
    ]


@pytest.mark.parametrize(
    ("override", "name", "value"),
    [
        ({"coordinates": [-122.7, 90.0, 1.4]}, "latitude", 90.0),
        ({"coordinates": [-122.7, -90.0, 1.4]}, "latitude", -90.0),
        ({"coordinates": [180.0, 38.8, 1.4]}, "longitude", 180.0),
        ({"coordinates": [-180.0, 38.8, 1.4]}, "longitude", -180.0),
        ({"coordinates": [-122.7, 38.8, 1000.0]}, "depth_km", 1000.0),
        ({"coordinates": [-122.7, 38.8, -15.0]}, "depth_km", -15.0),
        ({"mag": -2.0}, "mag", -2.0),
        ({"mag": 10.0}, "mag", 10.0),
        ({"mag": -1.6}, "mag", -1.6),
        ({"mag": -0.01}, "mag", -0.01),
        ({"tz": -1200}, "tz", -1200),
        ({"tz": 1200}, "tz", 1200),
        ({"tsunami": 1}, "tsunami", 1),
        ({"gap": 360}, "gap", 360.0),
        ({"cdi": 12.0}, "cdi", 12.0),
        ({"mmi": 0.0}, "mmi", 0.0),
    ],
)
def test_range_boundaries_are_accepted(
    override: dict[str, Any], name: str, value: float, events_of
) -> None:
    assert column(events_of(feature(**override)), name) == [value]


# --- types ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "name", "value"),
    [
        ({"mag": "2.5"}, "mag", 2.5),
        ({"mag": "-1.6"}, "mag", -1.6),
        ({"felt": 3.0}, "felt", 3),
        ({"sig": 97.0}, "sig", 97),
        ({"tz": -480.0}, "tz", -480),
        ({"gap": 35}, "gap", 35.0),
        ({"time": float(TIME_MS)}, "time", dt.datetime(2019, 12, 14, 6, 51, 7, 580000, UTC)),
    ],
)
def test_lenient_numbers_are_converted(
    override: dict[str, Any], name: str, value: Any, events_of
) -> None:
    events = events_of(feature(**override))
    assert column(events, name) == [value]
    assert events.schema.field(name).type == RECORD_SCHEMA.field(name).type


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"mag": "big"}, "Expected `float | null`, got `str` - at `$.properties.mag`"),
        ({"felt": 3.5}, "Expected `int | null`, got `float` - at `$.properties.felt`"),
        ({"felt": True}, "Expected `int | null`, got `bool` - at `$.properties.felt`"),
        ({"place": 5}, "Expected `str | null`, got `int` - at `$.properties.place`"),
        ({"time": 1576306267580.5}, "Expected `int`, got `float` - at `$.properties.time`"),
        ({"time": "yesterday"}, "Expected `int`, got `str` - at `$.properties.time`"),
    ],
    ids=["mag-big", "felt-3.5", "felt-true", "place-int", "time-fraction", "time-word"],
)
def test_wrong_types_reject_that_record(override: dict[str, Any], reason: str) -> None:
    bad = feature("us7000bad", **override)
    cleaned = clean(bad, feature("us7000ok1"))
    assert column(cleaned.events, "id") == ["us7000ok1"]
    assert cleaned.rejects.to_pylist() == [
        {
            "partition": "2019-12-14",
            "id": "us7000bad",
            "reason": reason,
            "raw_json": json.dumps(bad),
        }
    ]


def test_non_string_id_is_rejected_and_not_reported_as_an_id() -> None:
    cleaned = clean(feature(12345), feature("ok"))  # type: ignore[arg-type]
    assert column(cleaned.events, "id") == ["ok"]
    assert cleaned.rejects.select(["id", "reason"]).to_pylist() == [
        {"id": None, "reason": "Expected `str`, got `int` - at `$.id`"}
    ]


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [("REVIEWED", "reviewed"), ("reviewed", "reviewed"), ("AUTOMATIC", "automatic"),
     ("Deleted", "deleted"), (None, None)],
)  # fmt: skip
def test_status_lower_cased(sent: str | None, expected: str | None, events_of) -> None:
    assert column(events_of(feature(status=sent)), "status") == [expected]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [("Ml", "ml"), ("ML", "ml"), ("Mww", "mww"), ("md", "md"), (None, None)],
)
def test_mag_type_lower_cased(sent: str | None, expected: str | None, events_of) -> None:
    assert column(events_of(feature(magType=sent)), "mag_type") == [expected]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("quarry", "quarry blast"),
        ("quarry_blast", "quarry blast"),
        ("quarry blast", "quarry blast"),
        ("Quarry", "quarry blast"),
        ("QUARRY_BLAST", "quarry blast"),
        ("earthquake", "earthquake"),
        ("Earthquake", "earthquake"),
        ("mining explosion", "mining explosion"),
        ("mining_explosion", "mining explosion"),
        ("mine collapse", "mine collapse"),
        ("explosion", "explosion"),
        (None, None),
    ],
)
def test_event_type_normalised(sent: str | None, expected: str | None, events_of) -> None:
    assert column(events_of(feature(type=sent)), "event_type") == [expected]


def test_event_type_normalised_column_wise(events_of) -> None:
    events = events_of(
        *(feature(str(i), type=t) for i, t in enumerate(["quarry", "earthquake", None, "Quarry"]))
    )
    assert_frame_equal(
        pl.from_arrow(events.select(["id", "event_type"])),
        pl.DataFrame(
            {
                "id": ["0", "1", "2", "3"],
                "event_type": ["quarry blast", "earthquake", None, "quarry blast"],
            }
        ),
    )


@pytest.mark.parametrize(
    ("override", "name", "value"),
    [
        ({"mag": 2.5099999999999998}, "mag", 2.51),
        ({"mag": 2.509999990463257}, "mag", 2.51),
        ({"mag": 1.2300000190734863}, "mag", 1.23),
        ({"mag": -1.600000023841858}, "mag", -1.6),
        ({"mag": 0.30000000000000004}, "mag", 0.3),
        ({"dmin": 0.00418000016361475}, "dmin", 0.00418),
        ({"rms": 0.20999999344348907}, "rms", 0.21),
        ({"gap": 35.00000001}, "gap", 35.0),
        ({"cdi": 3.799999952316284}, "cdi", 3.8),
        ({"mmi": 4.564000129699707}, "mmi", 4.564),
        ({"coordinates": [-155.28050231933594, 19.4, 1.4]}, "longitude", -155.2805),
        ({"coordinates": [-122.7, 19.407169342041016, 1.4]}, "latitude", 19.40717),
        ({"coordinates": [-122.7, 19.4, 10.039999961853027]}, "depth_km", 10.04),
        ({"coordinates": [-122.7908325, 38.8056679, 1.43]}, "longitude", -122.79083),
    ],
    ids=["mag-17-digits", "mag-f32", "mag-f32-b", "mag-f32-neg", "mag-f64-sum", "dmin-f32",
         "rms-f32", "gap", "cdi-f32", "mmi-f32", "lon-f32", "lat-f32", "depth-f32", "lon-7dp"],
)  # fmt: skip
def test_float_artefacts_rounded_to_published_precision(
    override: dict[str, Any], name: str, value: float, events_of
) -> None:
    assert column(events_of(feature(**override)), name) == [value]


def test_17_digit_spelling_is_the_same_double() -> None:
    """`2.5099999999999998` is how a 17-digit printer spells the double 2.51 itself."""
    assert float("2.5099999999999998") == 2.51


@pytest.mark.parametrize(
    ("sent", "expected"),
    [(-1.5999999999999999, -1.6), (1.5999999999999999, 1.6), (-1.9100000000000001, -1.91)],
)
def test_one_ulp_artefact_rounded_away(sent: float, expected: float) -> None:
    assert sent != expected
    assert column(clean(feature(mag=sent)).events, "mag") == [expected]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (",ak1,us2,", ["ak1", "us2"]),
        (",nc73314571,", ["nc73314571"]),
        ("ak1", ["ak1"]),
        ("ak1,us2", ["ak1", "us2"]),
        ("", []),
        (",", []),
        (",,", []),
        (None, None),
    ],
)
@pytest.mark.parametrize("prop", ["ids", "sources", "types"])
def test_comma_lists_split(
    prop: str, sent: str | None, expected: list[str] | None, events_of
) -> None:
    events = events_of(feature(**{prop: sent}))
    assert events.schema.field(prop).type == pa.list_(pa.string())
    assert column(events, prop) == [expected]


def test_comma_lists_split_column_wise(events_of) -> None:
    events = events_of(feature("a", ids=",ak1,us2,"), feature("b", ids=""), feature("c", ids=None))
    expected = pa.chunked_array([[["ak1", "us2"], [], None]], pa.list_(pa.string()))
    assert events.column("ids").combine_chunks().equals(expected.combine_chunks())


# --- time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (TIME_MS, dt.datetime(2019, 12, 14, 6, 51, 7, 580000, tzinfo=UTC)),
        (0, dt.datetime(1970, 1, 1, tzinfo=UTC)),
        (-1, dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (-2208988800000, dt.datetime(1900, 1, 1, tzinfo=UTC)),
        (1759141374001, dt.datetime(2025, 9, 29, 10, 22, 54, 1000, tzinfo=UTC)),
    ],
)
def test_time_and_updated_are_utc_timestamps_of_the_epoch_ms(
    ms: int, expected: dt.datetime, events_of
) -> None:
    events = events_of(feature(time=ms, updated=ms + 1))
    for name, want_ms in (("time", ms), ("updated", ms + 1)):
        assert events.schema.field(name).type == pa.timestamp("ms", tz="UTC")
        assert events.column(name).cast(pa.int64()).to_pylist() == [want_ms]
    assert column(events, "time") == [expected]
    assert column(events, "updated") == [expected + dt.timedelta(milliseconds=1)]


def test_time_as_polars_datetime(events_of) -> None:
    frame = pl.from_arrow(events_of(feature(time=TIME_MS, updated=UPDATED_MS)))
    assert_frame_equal(
        frame.select("time", "updated"),
        pl.DataFrame(
            {"time": [TIME_MS], "updated": [UPDATED_MS]},
            schema={"time": pl.Int64, "updated": pl.Int64},
        ).select(pl.all().cast(pl.Datetime("ms", "UTC"))),
    )


# --- the answer as a whole -----------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 43, 1000])
def test_features_win_over_metadata_count(count: int) -> None:
    cleaned = clean(feature("a"), feature("b"), count=count)
    assert column(cleaned.events, "id") == ["a", "b"]
    assert cleaned.rejects.num_rows == 0


def test_features_keep_their_order_and_duplicates() -> None:
    """Deduplication is the load's job; clean keeps every feature it was sent."""
    cleaned = clean(feature("b"), feature("a"), feature("b", updated=UPDATED_MS + 5))
    assert column(cleaned.events, "id") == ["b", "a", "b"]


def test_empty_feature_collection_is_valid_and_empty() -> None:
    cleaned = clean_body(b'{"type":"FeatureCollection","features":[]}', "p")
    assert cleaned.events.equals(RECORD_SCHEMA.empty_table())
    assert cleaned.rejects.equals(REJECTS_SCHEMA.empty_table())
    assert cleaned.received == 0


def test_empty_answer_with_metadata_and_no_bbox() -> None:
    cleaned = clean(count=0)
    assert (cleaned.events.num_rows, cleaned.rejects.num_rows) == (0, 0)
    assert cleaned.events.schema == RECORD_SCHEMA


def test_pretty_printed_and_non_ascii_body(events_of) -> None:
    events = events_of(feature(place="7 km WSW of Guánica, Puerto Rico"))
    assert column(events, "place") == ["7 km WSW of Guánica, Puerto Rico"]
    cleaned = clean_body(body(feature(place="Guánica"), indent=2, ensure_ascii=False), "p")
    assert column(cleaned.events, "place") == ["Guánica"]


# --- bad bodies ----------------------------------------------------------------------------


def test_empty_body() -> None:
    with pytest.raises(BadBody) as info:
        clean_body(b"", "p")
    assert str(info.value) == (
        "empty body (0 bytes) where a GeoJSON FeatureCollection was expected"
    )


@pytest.mark.parametrize("cut", [1, 2, 10, 100, 500])
def test_truncated_body(cut: int) -> None:
    whole = body(feature("a"), feature("b"))
    part = whole[:-cut]
    with pytest.raises(BadBody) as info:
        clean_body(part, "p")
    message = str(info.value)
    assert message.startswith(f"invalid JSON after {len(part):,} bytes (")
    assert message.endswith("): truncated or corrupt body")
    assert "truncated" in message


def test_truncated_body_exact_message() -> None:
    part = b'{"type":"FeatureCollection","features":[{"type":"Feature","id":"a'
    with pytest.raises(BadBody) as info:
        clean_body(part, "p")
    assert str(info.value) == (
        "invalid JSON after 65 bytes (Input data was truncated): truncated or corrupt body"
    )


def test_trailing_garbage_is_a_bad_body() -> None:
    with pytest.raises(BadBody, match=r"^invalid JSON after .* bytes \(JSON is malformed"):
        clean_body(body(feature()) + b"}", "p")


def test_latin1_body_names_byte_and_offset() -> None:
    text = json.dumps(
        {"type": "FeatureCollection", "features": [feature(place="Ménétréol, France")]},
        ensure_ascii=False,
    )
    offset = text.index("é")  # every character before it is ASCII: one byte each
    with pytest.raises(BadBody) as info:
        clean_body(text.encode("latin-1"), "p")
    assert str(info.value) == f"body is not UTF-8: byte 0xe9 at offset {offset:,}"


def test_latin1_body_offset_with_thousands_separator() -> None:
    padding = feature("a", place="x" * 2000)
    text = json.dumps(
        {"type": "FeatureCollection", "features": [padding, feature("b", place="ÉVORA")]},
        ensure_ascii=False,
    )
    offset = text.index("É")
    assert offset > 1000
    with pytest.raises(BadBody) as info:
        clean_body(text.encode("latin-1"), "p")
    assert str(info.value) == f"body is not UTF-8: byte 0xc9 at offset {offset:,}"
    assert "," in f"{offset:,}"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"Feature"}',
        b"[]",
        b"null",
        b'"FeatureCollection"',
        b'{"type":"FeatureCollection"}',
        b'{"type":"FeatureCollection","features":null}',
        b'{"features":[]}',
        b'{"type":"Feature","features":[]}',
    ],
)
def test_not_a_feature_collection(raw: bytes) -> None:
    with pytest.raises(BadBody, match=r"^not a GeoJSON FeatureCollection"):
        clean_body(raw, "p")


def test_not_a_feature_collection_exact_messages() -> None:
    with pytest.raises(BadBody) as info:
        clean_body(b'{"type":"Feature"}', "p")
    assert str(info.value) == (
        "not a GeoJSON FeatureCollection (Invalid enum value 'Feature' - at `$.type`)"
    )
    with pytest.raises(BadBody) as info:
        clean_body(b"[]", "p")
    assert str(info.value) == "not a GeoJSON FeatureCollection (Expected `object`, got `array`)"


# --- known bugs: a bad body that also holds a rejectable feature ----------------------------
# clean_body first tries the all-valid fast path; a ValidationError there (one bad record) sends
# it to a second decode whose DecodeError / UnicodeDecodeError is not turned into BadBody.


def test_truncated_body_after_a_rejected_feature_is_a_bad_body() -> None:
    part = body(feature("a", mag=11.0), feature("b"))[:-10]
    with pytest.raises(BadBody, match="truncated"):
        clean_body(part, "p")


def test_latin1_body_after_a_rejected_feature_is_a_bad_body() -> None:
    text = json.dumps(
        {
            "type": "FeatureCollection",
            "features": [feature("a", mag=11.0), feature("b", place="é")],
        },
        ensure_ascii=False,
    )
    offset = text.index("é")
    with pytest.raises(BadBody) as info:
        clean_body(text.encode("latin-1"), "p")
    assert str(info.value) == f"body is not UTF-8: byte 0xe9 at offset {offset:,}"


@pytest.mark.parametrize(
    "features",
    [
        [feature("a", mag=11.0, place="é"), feature("b")],  # inside a rejected feature
        [feature("a", comment="é")],  # inside a key the schema does not read
    ],
    ids=["in-rejected-feature", "in-unread-key"],
)
def test_latin1_anywhere_in_the_body_is_a_bad_body(features: list[dict[str, Any]]) -> None:
    raw = json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False)
    with pytest.raises(BadBody, match=r"^body is not UTF-8: byte 0xe9 at offset "):
        clean_body(raw.encode("latin-1"), "p")


# --- known bug: integers wider than their Arrow column -------------------------------------


@pytest.mark.parametrize(
    "override",
    [{"felt": 2**31}, {"sig": 2**31}, {"nst": 2**40}, {"time": 2**63}, {"updated": 2**64}],
    ids=["felt", "sig", "nst", "time", "updated"],
)
def test_int_too_wide_for_its_column_rejects_that_record(override: dict[str, Any]) -> None:
    cleaned = clean(feature("big", **override), feature("ok"))
    assert column(cleaned.events, "id") == ["ok"]
    assert column(cleaned.rejects, "id") == ["big"]
