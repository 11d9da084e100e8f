"""The event record, declared once.

Grain: one row per seismic event. Key: ``id``, the USGS *preferred* event id.
Every other representation derives from ``RECORD`` below: the Arrow schema that crosses task
boundaries, the msgspec wire types that decode and validate the GeoJSON, and the SQL table.

Null contract: a value the service sent as null (or left out, as old answers do with ``title``)
stays null; nothing invents a 0 or an empty string for an unknown measurement. A record missing a
required field, or holding a value outside its range, is rejected with a reason, never loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import pyarrow as pa

# Bumped whenever a column, type, null rule or normalisation changes: caches key on it.
SCHEMA_VERSION = 2

UTC_MS = pa.timestamp("ms", tz="UTC")
STRING_LIST = pa.list_(pa.string())


@dataclass(frozen=True)
class Column:
    """One column: its name, Arrow type, null rule, meaning, and where it comes from on the wire."""

    name: str
    arrow: pa.DataType
    nullable: bool
    doc: str
    # The USGS GeoJSON property name, or None for geometry and derived columns.
    wire: str | None = None
    # Decoding type on the wire, with range limits; None means "same as the Arrow type suggests".
    wire_type: Any = None
    # USGS publishes these to a fixed precision; float32 artefacts past it are rounded away.
    decimals: int | None = None
    normalise: str = ""


def _rng(lo: float, hi: float) -> msgspec.Meta:
    return msgspec.Meta(ge=lo, le=hi)


# Order matters: it is the column order of the `events` table.
RECORD: tuple[Column, ...] = (
    Column("id", pa.string(), False, "USGS preferred event id (the key: unique)."),
    Column(
        "mag",
        pa.float64(),
        True,
        "Magnitude, in the scale named by mag_type.",
        "mag",
        Annotated[float, _rng(-2.0, 10.0)],
        2,
    ),
    Column("place", pa.string(), True, "Named geographic region near the event.", "place"),
    Column("time", UTC_MS, False, "Origin time, UTC.", "time", int),
    Column("updated", UTC_MS, False, "When the event was last revised, UTC.", "updated", int),
    Column(
        "tz",
        pa.int16(),
        True,
        "Offset from UTC in minutes at the epicentre.",
        "tz",
        Annotated[int, _rng(-1200, 1200)],
    ),
    Column("url", pa.string(), True, "Event page at the source.", "url"),
    Column("detail", pa.string(), True, "GeoJSON detail feed of the event.", "detail"),
    Column(
        "felt",
        pa.int32(),
        True,
        "Number of felt reports submitted.",
        "felt",
        Annotated[int, msgspec.Meta(ge=0)],
    ),
    Column(
        "cdi",
        pa.float64(),
        True,
        "Maximum reported intensity (Did You Feel It?).",
        "cdi",
        Annotated[float, _rng(0, 12)],
        1,
    ),
    Column(
        "mmi",
        pa.float64(),
        True,
        "Maximum estimated instrumental intensity (ShakeMap).",
        "mmi",
        Annotated[float, _rng(0, 12)],
        3,
    ),
    Column("alert", pa.string(), True, "PAGER alert level: green, yellow, orange, red.", "alert"),
    Column(
        "status",
        pa.string(),
        True,
        "Review status: automatic, reviewed, deleted.",
        "status",
        normalise="lower-cased (old answers send REVIEWED)",
    ),
    Column(
        "tsunami",
        pa.int8(),
        True,
        "1 if a tsunami message exists for oceanic events, else 0.",
        "tsunami",
        Annotated[int, _rng(0, 1)],
    ),
    Column(
        "sig",
        pa.int32(),
        True,
        "Significance, 0 to about 1000+.",
        "sig",
        Annotated[int, msgspec.Meta(ge=0)],
    ),
    Column("net", pa.string(), True, "Id of the contributing network.", "net"),
    Column("code", pa.string(), True, "Event code assigned by the network.", "code"),
    Column(
        "ids",
        STRING_LIST,
        True,
        "Every id the event has had, preferred id included.",
        "ids",
        str,
        normalise="',a,b,' split into a list",
    ),
    Column(
        "sources",
        STRING_LIST,
        True,
        "Networks that contributed.",
        "sources",
        str,
        normalise="',a,b,' split into a list",
    ),
    Column(
        "types",
        STRING_LIST,
        True,
        "Product types associated with the event.",
        "types",
        str,
        normalise="',a,b,' split into a list",
    ),
    Column(
        "nst",
        pa.int32(),
        True,
        "Number of stations used to locate the event.",
        "nst",
        Annotated[int, msgspec.Meta(ge=0)],
    ),
    Column(
        "dmin",
        pa.float64(),
        True,
        "Horizontal distance to the nearest station, degrees.",
        "dmin",
        Annotated[float, msgspec.Meta(ge=0)],
        6,
    ),
    Column(
        "rms",
        pa.float64(),
        True,
        "Root-mean-square travel-time residual, seconds.",
        "rms",
        Annotated[float, msgspec.Meta(ge=0)],
        4,
    ),
    Column(
        "gap",
        pa.float64(),
        True,
        "Largest azimuthal gap between stations, degrees.",
        "gap",
        Annotated[float, _rng(0, 360)],
        2,
    ),
    Column(
        "mag_type",
        pa.string(),
        True,
        "Magnitude scale (ml, md, mww, ...).",
        "magType",
        str,
        normalise="lower-cased",
    ),
    Column(
        "event_type",
        pa.string(),
        True,
        "Kind of event (USGS `type`).",
        "type",
        str,
        normalise="lower-cased, '_' as ' ', and quarry / quarry_blast as 'quarry blast'",
    ),
    Column("title", pa.string(), True, "Human-readable title (absent before API 1.0.13).", "title"),
    Column(
        "longitude",
        pa.float64(),
        False,
        "Epicentre longitude, degrees.",
        wire_type=Annotated[float, _rng(-180.0, 180.0)],
        decimals=5,
    ),
    Column(
        "latitude",
        pa.float64(),
        False,
        "Epicentre latitude, degrees.",
        wire_type=Annotated[float, _rng(-90.0, 90.0)],
        decimals=5,
    ),
    Column(
        "depth_km",
        pa.float64(),
        True,
        "Hypocentre depth, km (negative above sea level).",
        wire_type=Annotated[float, _rng(-15.0, 1000.0)],
        decimals=3,
    ),
)

COLUMNS: dict[str, Column] = {c.name: c for c in RECORD}
REQUIRED: tuple[str, ...] = tuple(c.name for c in RECORD if not c.nullable)

RECORD_SCHEMA = pa.schema([pa.field(c.name, c.arrow, nullable=c.nullable) for c in RECORD])

# Canonical spelling for the event types that USGS has spelled several ways over the years.
EVENT_TYPE_ALIASES: dict[str, str] = {"quarry": "quarry blast"}

# Columns the transform derives per event, for slicing without SQL gymnastics.
DERIVED: tuple[Column, ...] = (
    Column("date", pa.date32(), False, "UTC calendar date of `time`: what users slice by."),
    Column("year", pa.int16(), False, "UTC year of `time`."),
    Column("hour", pa.int8(), False, "UTC hour of `time`, 0-23."),
    Column(
        "mag_class",
        pa.string(),
        True,
        "micro < 2 <= minor < 4 <= light < 5 <= moderate < 6 <= strong < 7 <= major < 8 <= great;"
        " NULL when mag is NULL.",
    ),
    Column(
        "depth_class",
        pa.string(),
        True,
        "shallow < 70 km <= intermediate <= 300 km < deep; NULL when depth_km is NULL.",
    ),
    Column(
        "region",
        pa.string(),
        True,
        "`place` after its last ', ' (the whole place when it has none); NULL when place is NULL.",
    ),
    Column("is_earthquake", pa.bool_(), True, "event_type = 'earthquake'."),
    Column("is_reviewed", pa.bool_(), True, "status = 'reviewed'."),
)

EVENT_COLUMNS: tuple[Column, ...] = RECORD + DERIVED
EVENTS_SCHEMA = pa.schema([pa.field(c.name, c.arrow, nullable=c.nullable) for c in EVENT_COLUMNS])
