"""Transform: derived columns per partition, in polars (see schemas.events.DERIVED)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from flyte.io import DataFrame

from pipelines.envs import worker
from pipelines.frames import read_table
from schemas.events import EVENTS_SCHEMA

if TYPE_CHECKING:
    import polars as pl

# polars is imported by the first transform, not with the pipeline: that takes 0.07 s off the
# start of every run, where nothing else can happen yet, and puts it where the run is waiting
# for the service anyway.

MAG_CLASSES = ("micro", "minor", "light", "moderate", "strong", "major", "great")
MAG_BREAKS = (2.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def _bands(bands: list[tuple[pl.Expr, str]]) -> pl.Expr:
    """First matching band wins; a null input matches none and stays null."""
    import polars as pl

    (first, label), *rest = bands
    chain = pl.when(first).then(pl.lit(label))
    for condition, label in rest:
        chain = chain.when(condition).then(pl.lit(label))
    return chain


def derive(events: pa.Table) -> pa.Table:
    if not events.num_rows:
        # Nothing to derive, and no polars import (0.07 s) for it: a re-run's revisions are
        # often none.
        return EVENTS_SCHEMA.empty_table()
    import polars as pl

    mag, depth = pl.col("mag"), pl.col("depth_km")
    frame = pl.from_arrow(events).with_columns(
        date=pl.col("time").dt.date(),
        year=pl.col("time").dt.year(),
        hour=pl.col("time").dt.hour(),
        # Bands are closed below: 2.0 is minor, 8.0 is great.
        mag_class=_bands(
            [(mag < hi, label) for hi, label in zip(MAG_BREAKS, MAG_CLASSES, strict=False)]
            + [(mag >= MAG_BREAKS[-1], MAG_CLASSES[-1])]
        ),
        # 70 and 300 km are both intermediate.
        depth_class=_bands(
            [(depth < 70, "shallow"), (depth <= 300, "intermediate"), (depth > 300, "deep")]
        ),
        region=pl.col("place").str.split(", ").list.last(),
        is_earthquake=pl.col("event_type") == "earthquake",
        is_reviewed=pl.col("status") == "reviewed",
    )
    return frame.select(EVENTS_SCHEMA.names).to_arrow().cast(EVENTS_SCHEMA)


@worker.task
def transform(events: DataFrame) -> DataFrame:
    return DataFrame.from_df(derive(read_table(events)))
