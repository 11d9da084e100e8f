"""Analytics: materialised tables derived from ``events`` in the same DuckDB database.

Each model below is one table, documented next to its SQL with grain, key and invariants
(jaffle-shop style). ``materialise(con)`` drops and recreates all of them, in
``ANALYTICS_TABLES`` order, inside one transaction: readers see the old set or the new set.

Conventions shared by every model:

* Row order is deterministic (an ``ORDER BY`` on the key, with explicit tie-breaks wherever
  a row is picked), so two runs over the same ``events`` give the same rows in the same order.
* A NULL group (``event_type`` or ``region`` unknown) is kept as a group of its own and sorts
  last; it is never silently dropped, so counts add up to ``count(*)`` of ``events``.
* Magnitudes are binned at 0.1 by an integer bin index, ``floor(mag * 10 + 1e-9)``: the
  epsilon puts float noise just below an edge (``0.7 - 0.4 == 0.29999999999999993``) in the
  bin above, and is far below the 0.01 precision USGS publishes. A bin's magnitude is
  ``index / 10`` as a DOUBLE (its lower edge, the double nearest to e.g. 2.3).
* Means and variances of ``mag`` are computed from whole hundredths (``mag`` is kept to 0.01,
  see ``schemas.events``) in integer arithmetic, so they are exact and do not depend on the
  order rows were loaded in: a run that loads its partitions in another order, or a SQLite
  archive rebuilt in DuckDB, gives the same value to the last bit.
* Identifiers and constants below are spelled into SQL text; values (thresholds, labels) are
  bound as parameters, and nothing read from the data is ever formatted into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from pipelines.transform import MAG_CLASSES
from schemas.tables import EVENTS, duckdb_comments

SOURCE = EVENTS.name

MAG_BIN_WIDTH = 0.1
# Integer index of the 0.1 bin that holds ``mag``; robust against float error (see above).
_BIN_INDEX = "CAST(floor(mag * 10 + 1e-9) AS BIGINT)"


def _mean_mag(mag: str) -> str:
    """SQL for the exact mean of ``mag`` (see above); NULL when no row has one."""
    return f"CAST(sum(CAST(round({mag} * 100) AS BIGINT)) AS DOUBLE) / count({mag}) / 100"


def _var_samp_mag(mag: str) -> str:
    """SQL for the exact sample variance of ``mag``: (n sum(c^2) - sum(c)^2) / (n (n - 1))
    over whole hundredths c, summed as integers; NULL for fewer than two."""
    cents = f"CAST(round({mag} * 100) AS HUGEINT)"
    return (
        f"CAST(count({mag}) * sum({cents} * {cents}) - sum({cents}) * sum({cents}) AS DOUBLE)"
        f" / nullif(count({mag}) * (count({mag}) - 1), 0) / 10000"
    )


GR_MIN_REGION_EVENTS = 50
GR_MIN_EVENTS_ABOVE_MC = 2
LARGEST_EVENTS_LIMIT = 100

DAILY_SUMMARY = "daily_summary"
REGION_SUMMARY = "region_summary"
MAGNITUDE_FREQUENCY = "magnitude_frequency"
GUTENBERG_RICHTER = "gutenberg_richter"
LARGEST_EVENTS = "largest_events"


@dataclass(frozen=True)
class Model:
    """One materialised table: ``CREATE TABLE name AS <sql>`` with ``params`` bound."""

    name: str
    grain: str
    key: tuple[str, ...]
    invariants: tuple[str, ...]
    sql: str
    params: tuple[object, ...] = ()


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
for _name in MAG_CLASSES:
    # Class labels double as column names of daily_summary; they come from code, not data.
    assert _IDENTIFIER.fullmatch(_name), _name


# --------------------------------------------------------------------------------------------
# daily_summary
#   Grain: one row per UTC date and event type present in `events`.
#   Key: (date, event_type); event_type may be NULL and then is a group of its own.
#   Columns: date, event_type, events, min_mag, avg_mag, max_mag, max_depth_km, and one count
#   per magnitude class (micro, minor, light, moderate, strong, major, great).
#   Invariants:
#     * sum(events) == (SELECT count(*) FROM events).
#     * per row, micro + ... + great == events - (events with NULL mag); each class count >= 0.
#     * min_mag <= avg_mag <= max_mag; all three NULL when every event of the row lacks mag.
#   Order: date, then event_type (NULL last).
# --------------------------------------------------------------------------------------------
_CLASS_COUNTS = ",\n       ".join(
    f'count(*) FILTER (WHERE mag_class = ?) AS "{name}"' for name in MAG_CLASSES
)
DAILY_SUMMARY_MODEL = Model(
    name=DAILY_SUMMARY,
    grain="one row per (UTC date, event_type)",
    key=("date", "event_type"),
    invariants=(
        "sum(events) == count(*) of events",
        "sum of the mag_class counts == events with a non-NULL mag",
    ),
    sql=f"""
SELECT date,
       event_type,
       count(*) AS events,
       min(mag) AS min_mag,
       {_mean_mag("mag")} AS avg_mag,
       max(mag) AS max_mag,
       max(depth_km) AS max_depth_km,
       {_CLASS_COUNTS}
FROM {SOURCE}
GROUP BY date, event_type
ORDER BY date, event_type NULLS LAST
""",
    params=MAG_CLASSES,
)


# --------------------------------------------------------------------------------------------
# region_summary
#   Grain: one row per region (the text after the last ', ' of place).
#   Key: region; NULL (no place) is a row of its own, sorted last.
#   Columns: region, events, largest_id, largest_mag, largest_time, first_time, last_time.
#   "Largest" is the event with the highest mag; ties go to the earliest time, then the
#   smallest id. An event with NULL mag is never the largest unless every event of the region
#   lacks mag, in which case it is the earliest of them and largest_mag is NULL.
#   Invariants:
#     * sum(events) == count(*) of events.
#     * first_time <= largest_time <= last_time; largest_id is an id of that region.
# --------------------------------------------------------------------------------------------
REGION_SUMMARY_MODEL = Model(
    name=REGION_SUMMARY,
    grain="one row per region (NULL region included)",
    key=("region",),
    invariants=(
        "sum(events) == count(*) of events",
        "first_time <= largest_time <= last_time",
    ),
    sql=f"""
WITH regions AS (
    -- One pass, no sort: the largest is the smallest of a key that orders as the grain says.
    SELECT region,
           count(*) AS events,
           arg_min(
               {{'id': id, 'mag': mag, 'time': time}},
               {{'no_mag': mag IS NULL, 'minus_mag': coalesce(-mag, 0), 'time': time, 'id': id}}
           ) AS largest,
           min(time) AS first_time,
           max(time) AS last_time
    FROM {SOURCE}
    GROUP BY region
)
SELECT region,
       events,
       largest.id AS largest_id,
       largest.mag AS largest_mag,
       largest.time AS largest_time,
       first_time,
       last_time
FROM regions
ORDER BY region NULLS LAST
""",
)


# --------------------------------------------------------------------------------------------
# magnitude_frequency
#   Grain: one row per 0.1 magnitude bin, over the whole window, from the lowest to the
#   highest bin holding an event; empty bins in between are rows with events = 0, so the
#   cumulative curve (Gutenberg-Richter, log10 N(>= M)) is continuous.
#   Key: mag_bin (DOUBLE, the bin's lower edge: floor(mag * 10) / 10, float-robust).
#   Columns: mag_bin, events (in the bin), cumulative (events with mag >= mag_bin).
#   Events with NULL mag are excluded; no events with a mag means no rows.
#   Invariants:
#     * sum(events) == count(mag) of events; cumulative of the first bin == count(mag).
#     * cumulative is non-increasing; cumulative of the last bin == its events > 0.
#     * consecutive mag_bin differ by 0.1 (as bin indices, by exactly 1).
# --------------------------------------------------------------------------------------------
MAGNITUDE_FREQUENCY_MODEL = Model(
    name=MAGNITUDE_FREQUENCY,
    grain="one row per 0.1 magnitude bin between the lowest and highest non-empty bin",
    key=("mag_bin",),
    invariants=(
        "sum(events) == count(mag) of events",
        "cumulative(bin) == sum(events of bins >= bin); no gaps between bins",
    ),
    sql=f"""
WITH binned AS (
    SELECT {_BIN_INDEX} AS bin, count(*) AS events
    FROM {SOURCE}
    WHERE mag IS NOT NULL
    GROUP BY bin
), bins AS (
    SELECT unnest(range(min(bin), max(bin) + 1)) AS bin FROM binned
), filled AS (
    SELECT b.bin, coalesce(n.events, 0) AS events
    FROM bins AS b
    LEFT JOIN binned AS n ON n.bin = b.bin
)
SELECT CAST(bin AS DOUBLE) / 10 AS mag_bin,
       events,
       CAST(sum(events) OVER (ORDER BY bin DESC ROWS UNBOUNDED PRECEDING) AS BIGINT)
           AS cumulative
FROM filled
ORDER BY bin
""",
)


# --------------------------------------------------------------------------------------------
# gutenberg_richter
#   Grain: one row per scope: ('all', NULL) over the whole window, and ('region', region) for
#   each non-NULL region with >= 50 events that have a mag. A scope with fewer than 2 events
#   at or above its Mc has no row (rather than a NaN or infinite b).
#   Key: (scope, region).
#   Columns:
#     scope     'all' | 'region'
#     region    NULL for 'all'
#     events    n, the events with mag >= mc (by bin index, so float error cannot drop one)
#     mc        magnitude of completeness, maximum-curvature method: the 0.1 bin with the
#               most events (non-cumulative); ties go to the lowest bin; no correction added
#     b_value   Aki (1965) maximum likelihood with Utsu's bin correction:
#               b = log10(e) / (mean(M >= mc) - (mc - 0.05))
#     b_stderr  Shi & Bolt (1982): 2.3 * b^2 * sqrt(sum((M - mean)^2) / (n (n - 1)))
#     a_value   log10(n) + b * mc
#   Invariants: events >= 2; b_value > 0 (every M >= mc > mc - 0.05); b_stderr >= 0.
#   Order: the 'all' row first, then regions alphabetically.
# --------------------------------------------------------------------------------------------
GUTENBERG_RICHTER_MODEL = Model(
    name=GUTENBERG_RICHTER,
    grain="one row for the whole window and one per region with enough magnitudes",
    key=("scope", "region"),
    invariants=(
        "events >= 2",
        "a_value == log10(events) + b_value * mc",
    ),
    sql=f"""
WITH mags AS (
    SELECT region, mag, {_BIN_INDEX} AS bin
    FROM {SOURCE}
    WHERE mag IS NOT NULL
), regions AS (
    SELECT region FROM mags WHERE region IS NOT NULL GROUP BY region HAVING count(*) >= ?
), scoped AS (
    SELECT 'all' AS scope, CAST(NULL AS VARCHAR) AS region, mag, bin FROM mags
    UNION ALL
    SELECT 'region' AS scope, region, mag, bin FROM mags WHERE region IN (FROM regions)
), completeness AS (
    SELECT scope, region, bin AS mc_bin
    FROM (SELECT scope, region, bin, count(*) AS events FROM scoped GROUP BY ALL)
    QUALIFY row_number() OVER (PARTITION BY scope, region ORDER BY events DESC, bin) = 1
), complete AS (
    SELECT s.scope,
           s.region,
           CAST(c.mc_bin AS DOUBLE) / 10 AS mc,
           count(*) AS n,
           {_mean_mag("s.mag")} AS mean_mag,
           {_var_samp_mag("s.mag")} AS var_mag
    FROM scoped AS s
    JOIN completeness AS c ON c.scope = s.scope AND c.region IS NOT DISTINCT FROM s.region
    WHERE s.bin >= c.mc_bin
    GROUP BY s.scope, s.region, c.mc_bin
    HAVING count(*) >= ?
), fitted AS (
    SELECT *, (1 / ln(10)) / (mean_mag - (mc - ?)) AS b_value FROM complete
)
SELECT scope,
       region,
       n AS events,
       mc,
       b_value,
       2.3 * b_value * b_value * sqrt(var_mag / n) AS b_stderr,
       log10(n) + b_value * mc AS a_value
FROM fitted
ORDER BY scope, region NULLS FIRST
""",
    params=(GR_MIN_REGION_EVENTS, GR_MIN_EVENTS_ABOVE_MC, MAG_BIN_WIDTH / 2),
)


# --------------------------------------------------------------------------------------------
# largest_events
#   Grain: one row per event, for the 100 events with the highest mag (fewer when the window
#   holds fewer events with a mag). NULL mag is excluded.
#   Key: rank (1, 2, ...; dense, no gaps); id is unique too.
#   Ties on mag go to the earlier time, then the smaller id.
#   Columns: rank, id, mag, mag_type, place, time, depth_km, alert, tsunami.
#   Invariants: mag non-increasing with rank; rank 1 == region_summary's largest overall.
# --------------------------------------------------------------------------------------------
LARGEST_EVENTS_MODEL = Model(
    name=LARGEST_EVENTS,
    grain="one row per event among the 100 largest by mag",
    key=("rank",),
    invariants=("rank is 1..n without gaps", "mag is non-increasing with rank"),
    sql=f"""
SELECT row_number() OVER (ORDER BY mag DESC, time, id) AS "rank", *
FROM (
    -- ORDER BY ... LIMIT keeps only the top rows while it scans; a window would sort them all.
    SELECT id, mag, mag_type, place, time, depth_km, alert, tsunami
    FROM {SOURCE}
    WHERE mag IS NOT NULL
    ORDER BY mag DESC, time, id
    LIMIT ?
)
ORDER BY "rank"
""",
    params=(LARGEST_EVENTS_LIMIT,),
)


MODELS: tuple[Model, ...] = (
    DAILY_SUMMARY_MODEL,
    REGION_SUMMARY_MODEL,
    MAGNITUDE_FREQUENCY_MODEL,
    GUTENBERG_RICHTER_MODEL,
    LARGEST_EVENTS_MODEL,
)
ANALYTICS_TABLES: tuple[str, ...] = tuple(m.name for m in MODELS)


def materialise(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every table of ``ANALYTICS_TABLES`` from ``events``, atomically.

    Runs in its own transaction, so it must not be called while one is open on ``con``.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        for model in MODELS:
            con.execute(f'DROP TABLE IF EXISTS "{model.name}"')
            con.execute(f'CREATE TABLE "{model.name}" AS {model.sql}', list(model.params))
            for comment in duckdb_comments(
                model.name, model.grain, model.key, invariants=model.invariants
            ):
                con.execute(comment)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
