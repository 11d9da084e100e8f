"""Raw FDSN GeoJSON bodies -> typed, validated Arrow tables plus explained rejects.

The wire types are generated from ``schemas.events.RECORD`` so that decoding, range checks and
the table layout can never drift apart. msgspec validates while it parses (in C), which is what
makes cleaning cheap enough to run at archive scale; the columnar normalisation after it is Arrow.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Literal, get_args, get_origin

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
    declared = column.wire_type if column.wire_type is not None else _PLAIN_WIRE_TYPES[column.arrow]
    if pa.types.is_integer(column.arrow) or pa.types.is_timestamp(column.arrow):
        # A value that would overflow its column rejects its record, not the whole answer.
        width = column.arrow.bit_width
        base, *metas = get_args(declared) if get_origin(declared) is Annotated else (declared,)
        ge = max([-(2 ** (width - 1))] + [m.ge for m in metas if m.ge is not None])
        le = min([2 ** (width - 1) - 1] + [m.le for m in metas if m.le is not None])
        return Annotated[base, msgspec.Meta(ge=ge, le=le)]
    return declared


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


def _wire_arrow(column: Column) -> pa.DataType:
    """The Arrow type a decoded value converts to before its column's own normalisation."""
    if column.arrow == STRING_LIST:
        return pa.string()  # still ',a,b,': split after conversion, in Arrow
    if pa.types.is_timestamp(column.arrow):
        return pa.int64()  # epoch ms as sent; the cast to a timestamp is free
    return column.arrow


_GEOMETRY_COLUMNS = ("longitude", "latitude", "depth_km")  # Geometry.coordinates, in order

# The shape of one (id, properties, coordinates) row tuple of _to_table.
_WIRE_ROW = pa.struct(
    [
        ("id", _wire_arrow(COLUMNS["id"])),
        ("properties", pa.struct([(c.wire, _wire_arrow(c)) for c in _PROPERTY_COLUMNS])),
        ("coordinates", pa.struct([(n, _wire_arrow(COLUMNS[n])) for n in _GEOMETRY_COLUMNS])),
    ]
)


def _wire_path(column: Column) -> list[int]:
    """Where ``column`` sits in a ``_WIRE_ROW``, as a ``pc.struct_field`` index path."""
    if column.name == "id":
        return [0]
    if column.wire is not None:
        return [1, _PROPERTY_COLUMNS.index(column)]
    return [2, _GEOMETRY_COLUMNS.index(column.name)]


_WIRE_PATHS = tuple((c, _wire_path(c)) for c in RECORD)


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
    # Everything built here is acyclic, so the cyclic GC can only waste time: a large body
    # allocates enough tracked tuples to set off full collections, each of which walks every
    # object in the process, so the cost grows with whatever else the worker has imported.
    # Reference counting still frees all of it; other code's cycles wait until the GC is back.
    with _gc_paused():
        features, rejects = _decode(body)
        return Cleaned(_to_table(features), _rejects_table(rejects, partition))


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Only undo our own switch: a caller that turned the GC off keeps it off.
        if was_enabled:
            gc.enable()


def _decode(body: bytes) -> tuple[list[Feature], list[tuple[object, str, bytes]]]:
    if not body:
        raise BadBody("empty body (0 bytes) where a GeoJSON FeatureCollection was expected")
    # msgspec never looks inside text it skips, so encoding is checked on the whole body.
    if not body.isascii():
        _check_utf8(body)
    try:
        # Fast path: every feature valid, one C-level pass.
        return _collection.decode(body).features, []
    except msgspec.ValidationError:
        pass  # a bad record, or a body that is no FeatureCollection: sorted out below
    except msgspec.DecodeError as exc:
        raise _bad_json(body, exc) from None
    try:
        raw = _raw_collection.decode(body)
    except msgspec.ValidationError as exc:
        raise BadBody(f"not a GeoJSON FeatureCollection ({exc})") from None
    except msgspec.DecodeError as exc:  # reached only past the first bad record
        raise _bad_json(body, exc) from None
    good: list[Feature] = []
    bad: list[tuple[object, str, bytes]] = []
    for item in raw.features:
        try:
            good.append(_feature.decode(item))
        except msgspec.ValidationError as exc:
            bad.append((_id_of(item), str(exc), bytes(item)))
    return good, bad


def _bad_json(body: bytes, exc: msgspec.DecodeError) -> BadBody:
    return BadBody(f"invalid JSON after {len(body):,} bytes ({exc}): truncated or corrupt body")


def _check_utf8(body: bytes) -> None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody(
            f"body is not UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start:,}"
        ) from None


def _id_of(raw: msgspec.Raw) -> str | None:
    try:
        found = _id_only.decode(raw).id
    except msgspec.MsgspecError:
        return None
    return found if isinstance(found, str) else None


def _to_table(features: list[Feature]) -> pa.Table:
    """The events table of ``features``, which it empties: each is freed once converted."""
    if not features:
        return RECORD_SCHEMA.empty_table()
    # One row tuple per feature, nested as the wire is, and one conversion of the lot: Arrow's
    # C++ converter turns tuples into struct fields directly, so no per-column Python lists are
    # built (transposing with zip(*rows) cost more than converting the values).
    nested = pa.array(_drain_rows(features), _WIRE_ROW, size=len(features))
    arrays = [_typed(column, pc.struct_field(nested, path)) for column, path in _WIRE_PATHS]
    return pa.Table.from_arrays(arrays, schema=RECORD_SCHEMA)


def _drain_rows(features: list[Feature]) -> Iterator[tuple]:
    # Popping hands each feature to the converter as the last reference to it, so its millions
    # of small objects are freed while still in cache rather than in one cold sweep at the end.
    features.reverse()
    pop = features.pop
    astuple = msgspec.structs.astuple
    for _ in range(len(features)):
        feature = pop()
        yield (feature.id, astuple(feature.properties), feature.geometry.coordinates)


def _typed(column: Column, array: pa.Array) -> pa.Array:
    if column.arrow == STRING_LIST:
        return _split_list(array)
    if pa.types.is_timestamp(column.arrow):
        return array.cast(column.arrow)
    if column.decimals is not None:
        # Scale, round, unscale: pc.round(x, d) leaves x alone when x * 10**d is already
        # integral in floating point, which keeps 1-ulp artefacts such as 1.5999999999999999.
        scale = 10.0**column.decimals
        array = pc.divide(pc.round(pc.multiply(array, scale)), scale)
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
    nothing = pc.equal(trimmed, "")
    if not pc.any(nothing).as_py():
        # USGS always lists at least one id, source and type, and patching in [] copies every
        # list, so pay for it only when some row needs it.
        return parts
    empty = pa.array([[]] * len(array), STRING_LIST)
    return pc.if_else(nothing, empty, parts)


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
