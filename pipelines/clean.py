"""Raw FDSN GeoJSON bodies -> typed, validated Arrow tables plus explained rejects.

The wire types are generated from ``schemas.events.RECORD`` so that decoding, range checks and
the table layout can never drift apart. msgspec validates while it parses (in C), which is what
makes cleaning cheap enough to run at archive scale; the columnar normalisation after it is Arrow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import BadBody
from schemas.events import COLUMNS, EVENT_TYPE_ALIASES, RECORD, RECORD_SCHEMA, STRING_LIST, Column
from schemas.tables import REJECTED_EVENTS

# The reject rows a partition produces; the load adds the run id.
REJECTS_SCHEMA = REJECTED_EVENTS.schema.remove(REJECTED_EVENTS.schema.get_field_index("run_id"))

_PLAIN_WIRE_TYPES = {pa.string(): str, pa.float64(): float}


def _wire_type(column: Column) -> object:
    return column.wire_type if column.wire_type is not None else _PLAIN_WIRE_TYPES[column.arrow]


_PROPERTY_COLUMNS = tuple(c for c in RECORD if c.wire is not None)

Properties = msgspec.defstruct(
    "Properties",
    [
        (c.wire, _wire_type(c)) if not c.nullable else (c.wire, _wire_type(c) | None, None)
        for c in _PROPERTY_COLUMNS
    ],
    kw_only=True,
    gc=False,
)


class Geometry(msgspec.Struct, gc=False):
    coordinates: tuple[
        _wire_type(COLUMNS["longitude"]),  # type: ignore[valid-type]
        _wire_type(COLUMNS["latitude"]),  # type: ignore[valid-type]
        _wire_type(COLUMNS["depth_km"]) | None,  # type: ignore[operator]
    ]


class Feature(msgspec.Struct, gc=False):
    id: str
    properties: Properties  # type: ignore[valid-type]
    geometry: Geometry


class _Collection(msgspec.Struct):
    type: Literal["FeatureCollection"]
    features: list[Feature]


class _RawCollection(msgspec.Struct):
    type: Literal["FeatureCollection"]
    features: list[msgspec.Raw]


class _IdOnly(msgspec.Struct):
    id: object = None


# strict=False: a number sent as a string ("2.5") is converted, and an integral float (3.0) is an
# int; anything inexact still fails validation, which rejects that one record.
_collection = msgspec.json.Decoder(_Collection, strict=False)
_raw_collection = msgspec.json.Decoder(_RawCollection)
_feature = msgspec.json.Decoder(Feature, strict=False)
_id_only = msgspec.json.Decoder(_IdOnly)


@dataclass(frozen=True)
class Cleaned:
    """One answer, cleaned. ``received`` counts every feature sent, accepted or not."""

    events: pa.Table
    rejects: pa.Table

    @property
    def received(self) -> int:
        return self.events.num_rows + self.rejects.num_rows


def clean_body(body: bytes, partition: str) -> Cleaned:
    """Parse and clean one FDSN GeoJSON answer; raise ``BadBody`` if it is not a whole one."""
    features, rejects = _decode(body)
    return Cleaned(_to_table(features), _rejects_table(rejects, partition))


def _decode(body: bytes) -> tuple[list[Feature], list[tuple[object, str, bytes]]]:
    if not body:
        raise BadBody("empty body (0 bytes) where a GeoJSON FeatureCollection was expected")
    try:
        # Fast path: every feature valid, one C-level pass.
        return _collection.decode(body).features, []
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError as exc:
        raise _bad_json(body, exc) from None
    except UnicodeDecodeError:
        raise _bad_utf8(body) from None
    try:
        raw = _raw_collection.decode(body)
    except msgspec.ValidationError as exc:
        raise BadBody(f"not a GeoJSON FeatureCollection ({exc})") from None
    good: list[Feature] = []
    bad: list[tuple[object, str, bytes]] = []
    for item in raw.features:
        try:
            good.append(_feature.decode(item))
        except msgspec.ValidationError as exc:
            bad.append((_id_of(item), str(exc), bytes(item)))
    return good, bad


def _bad_json(body: bytes, exc: msgspec.DecodeError) -> BadBody:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return _bad_utf8(body)
    return BadBody(f"invalid JSON after {len(body):,} bytes ({exc}): truncated or corrupt body")


def _bad_utf8(body: bytes) -> BadBody:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadBody(f"body is not UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start:,}")
    return BadBody("body is not UTF-8")


def _id_of(raw: msgspec.Raw) -> str | None:
    try:
        found = _id_only.decode(raw).id
    except msgspec.MsgspecError:
        return None
    return found if isinstance(found, str) else None


def _to_table(features: list[Feature]) -> pa.Table:
    if not features:
        return RECORD_SCHEMA.empty_table()
    props = [msgspec.structs.astuple(f.properties) for f in features]
    by_wire = dict(zip(Properties.__struct_fields__, zip(*props, strict=True), strict=True))
    coords = dict(
        zip(
            ("longitude", "latitude", "depth_km"),
            zip(*(f.geometry.coordinates for f in features), strict=True),
            strict=True,
        )
    )
    arrays = []
    for column in RECORD:
        if column.name == "id":
            values = [f.id for f in features]
        elif column.wire is not None:
            values = by_wire.get(column.wire, ())
        else:
            values = coords.get(column.name, ())
        arrays.append(_typed(column, values))
    return pa.Table.from_arrays(arrays, schema=RECORD_SCHEMA)


def _typed(column: Column, values) -> pa.Array:
    if column.arrow == STRING_LIST:
        return _split_list(pa.array(values, pa.string()))
    if pa.types.is_timestamp(column.arrow):
        return pa.array(values, pa.int64()).cast(column.arrow)
    array = pa.array(values, column.arrow)
    if column.decimals is not None:
        array = pc.round(array, column.decimals)
    return _NORMALISE.get(column.name, _same)(array)


def _same(array: pa.Array) -> pa.Array:
    return array


def _event_type(array: pa.Array) -> pa.Array:
    spelled = pc.replace_substring(pc.utf8_lower(array), "_", " ")
    for alias, canonical in EVENT_TYPE_ALIASES.items():
        spelled = pc.if_else(pc.equal(spelled, alias), canonical, spelled)
    return spelled


_NORMALISE = {"status": pc.utf8_lower, "mag_type": pc.utf8_lower, "event_type": _event_type}


def _split_list(array: pa.Array) -> pa.Array:
    """',a,b,' -> ['a', 'b']; '' and ',,' -> []; null stays null."""
    trimmed = pc.utf8_trim(array, ",")
    parts = pc.split_pattern(trimmed, ",")
    empty = pa.array([[]] * len(array), STRING_LIST)
    return pc.if_else(pc.equal(trimmed, ""), empty, parts)


def _rejects_table(rejects: list[tuple[object, str, bytes]], partition: str) -> pa.Table:
    ids, reasons, raws = zip(*rejects, strict=True) if rejects else ((), (), ())
    return pa.Table.from_pydict(
        {
            "partition": [partition] * len(rejects),
            "id": list(ids),
            "reason": list(reasons),
            "raw_json": [r.decode("utf-8", "replace") for r in raws],
        },
        schema=REJECTS_SCHEMA,
    )
