"""A one-file HTML report of a quakecat database: summary numbers and three charts.

The page must open offline, years later, from a mail attachment or an air-gapped share, so
nothing is fetched: the Vega / Vega-Lite / vega-embed JavaScript comes inline from
``vl_convert.javascript_bundle`` and every chart's data is inlined in its spec. The map has
no coastlines: no well-kept package ships a world outline offline (vega_datasets and plotly
fetch theirs from a CDN), so it draws the globe's outline and a graticule, which Vega computes
in the browser, and the epicentres.

The charts are Vega-Lite documents written out as data. Altair builds the same documents, but
importing it and loading its schema took 0.3 s of every run, a fifth of a run that finds
nothing new to load; the Chromium test renders every chart, so a spec Vega-Lite rejects fails.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import duckdb
import vl_convert

from pipelines.files import partial_beside

# An archive of millions of events must stay a small page: the map shows the largest ones.
MAP_POINTS_LIMIT = 5_000

# The Vega-Lite version the specs are written for, and so the one the bundle must carry.
VEGA_LITE_VERSION = "6.4"
_VL_SCHEMA = f"https://vega.github.io/schema/vega-lite/v{VEGA_LITE_VERSION.split('.')[0]}.json"
# Vega-Lite measurement types.
_QUANTITY, _NOMINAL, _TIME = "quantitative", "nominal", "temporal"
# Plot area; the legends sit beside it and the page is 960 px wide.
_WIDTH = 700


# Named datasets of a chart: name -> rows (as objects, or as CSV text).
Datasets = dict[str, list[dict[str, Any]] | str]


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    """Fully fetched rows as dicts (DuckDB 2.x: fetch before the next statement)."""
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# Timestamps are formatted in SQL, in UTC whatever the connection's TimeZone, so the report
# neither depends on nor changes session settings (and needs no tz database in Python).
def _utc(column: str) -> str:
    return f"strftime({column} AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S')"


def _summary(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    events = _rows(
        con,
        f"SELECT count(*) AS n, {_utc('min(time)')} AS first, {_utc('max(time)')} AS last "
        "FROM events",
    )[0]
    runs = _rows(
        con,
        f"""SELECT count(*) AS n, coalesce(sum(events_rejected), 0) AS rejected,
                   {_utc("min(window_start)")} AS start, {_utc("max(window_end)")} AS "end"
            FROM etl_runs""",
    )[0]
    largest = _rows(
        con,
        f"""SELECT id, mag, mag_type, place, {_utc("time")} AS time FROM largest_events
            WHERE "rank" = 1""",
    )
    gr = _rows(
        con,
        "SELECT events, mc, a_value, b_value, b_stderr FROM gutenberg_richter WHERE scope = 'all'",
    )
    return {
        "events": events,
        "runs": runs,
        "largest": largest[0] if largest else None,
        "gr": gr[0] if gr else None,
    }


def _field(name: str, kind: str, **options: Any) -> dict[str, Any]:
    """One encoding channel: a field of the chart's data and its Vega-Lite measurement type."""
    return {"field": name, "type": kind, **options}


def _chart(spec: dict[str, Any], datasets: Datasets) -> dict[str, Any]:
    """A complete Vega-Lite document: the spec, its version and its named datasets."""
    return {"$schema": _VL_SCHEMA, **spec, "datasets": datasets}


def _daily_chart(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    rows = _rows(
        con,
        """SELECT strftime(date, '%Y-%m-%d') AS date,
                  coalesce(event_type, 'unknown') AS event_type, events
           FROM daily_summary ORDER BY date, event_type""",
    )
    spec = {
        "title": "Events per day (UTC), by event type",
        "width": _WIDTH,
        "height": 260,
        "data": {"name": "daily"},
        "mark": {"type": "bar"},
        "encoding": {
            # A time axis, not one label per day: an archive can span years of days.
            "x": _field("date", _TIME, timeUnit="utcyearmonthdate", title="date (UTC)"),
            "y": _field("events", _QUANTITY, aggregate="sum", title="events"),
            "color": _field("event_type", _NOMINAL, title="event type"),
            "tooltip": [
                _field("date", _NOMINAL),
                _field("event_type", _NOMINAL),
                _field("events", _QUANTITY),
            ],
        },
    }
    return _chart(spec, {"daily": rows})


def _magnitude_chart(con: duckdb.DuckDBPyConnection, gr: dict[str, Any] | None) -> dict[str, Any]:
    bins = _rows(con, "SELECT mag_bin, events, cumulative FROM magnitude_frequency ORDER BY 1")
    # Long form, one row per plotted point; an empty bin has no place on a log scale.
    points = [
        {"mag_bin": b["mag_bin"], "series": series, "count": b[column]}
        for b in bins
        for series, column in (("cumulative N(M >= bin)", "cumulative"), ("per 0.1 bin", "events"))
        if b[column] > 0
    ]
    layers: list[dict[str, Any]] = [
        {
            "data": {"name": "magnitude_bins"},
            "mark": {"type": "point", "filled": True},
            "encoding": {
                "x": _field("mag_bin", _QUANTITY, title="magnitude (0.1 bins, lower edge)"),
                "y": _field("count", _QUANTITY, title="events", scale={"type": "log"}),
                "color": _field(
                    "series", _NOMINAL, title=None, legend={"orient": "bottom", "labelLimit": 0}
                ),
                "tooltip": [
                    _field("series", _NOMINAL),
                    _field("mag_bin", _QUANTITY),
                    _field("count", _QUANTITY),
                ],
            },
        }
    ]
    datasets = {"magnitude_bins": points}
    if gr is not None:
        # log10 N = a - b M is straight on a log axis, so its two ends draw it exactly: from
        # Mc (a bin, so never above the top bin) to the top bin.
        top = bins[-1]["mag_bin"]
        label = f"G-R fit: log10 N = {gr['a_value']:.3f} - {gr['b_value']:.3f} M (M >= Mc)"
        datasets["gr_fit"] = [
            {"mag_bin": m, "count": 10 ** (gr["a_value"] - gr["b_value"] * m), "series": label}
            for m in (gr["mc"], top)
        ]
        layers.append(
            {
                "data": {"name": "gr_fit"},
                "mark": {"type": "line", "strokeDash": [6, 3]},
                "encoding": {
                    "x": _field("mag_bin", _QUANTITY),
                    "y": _field("count", _QUANTITY),
                    "color": _field("series", _NOMINAL, title=None),
                },
            }
        )
    spec = {
        "title": "Magnitude-frequency (log scale) and Gutenberg-Richter fit",
        "width": _WIDTH,
        "height": 320,
        "layer": layers,
    }
    return _chart(spec, datasets)


def _map_chart(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    # Largest first so the small ones are drawn on top and stay visible; ties as largest_events.
    # CSV rather than JSON objects: the points dominate the page and CSV halves their size
    # (field names once, not per row). An empty field is parsed as NULL by Vega. The csv module
    # writes what polars did, byte for byte, without polars' import (0.07 s of a re-run that
    # changed nothing, where nothing else needs it).
    cursor = con.execute(
        f"""SELECT id, mag, coalesce(mag, -2) AS size_mag, longitude, latitude, depth_km,
               coalesce(depth_class, 'unknown') AS depth_class, place, {_utc("time")} AS time
        FROM events ORDER BY mag DESC NULLS LAST, time, id LIMIT {MAP_POINTS_LIMIT}"""
    )
    points = io.StringIO()
    writer = csv.writer(points, lineterminator="\n")
    writer.writerow([column for column, *_ in cursor.description])
    writer.writerows(cursor.fetchall())
    depth_colours = {
        "domain": ["shallow", "intermediate", "deep", "unknown"],
        "range": ["#d62728", "#ff7f0e", "#1f77b4", "#7f7f7f"],
    }
    spec = {
        "title": "Epicentres (size: magnitude)",
        # Equal Earth is about twice as wide as it is tall.
        "width": _WIDTH,
        "height": _WIDTH // 2,
        "projection": {"type": "equalEarth"},
        "layer": [
            {
                "data": {"sphere": True},
                "mark": {"type": "geoshape", "fill": "#eef3f8", "stroke": "#8a99a8"},
            },
            {
                "data": {"graticule": {"step": [30, 30]}},
                "mark": {
                    "type": "geoshape",
                    "filled": False,
                    "stroke": "#c9d3dd",
                    "strokeWidth": 0.5,
                },
            },
            {
                "data": {"name": "epicentres", "format": {"type": "csv"}},
                "mark": {"type": "circle", "opacity": 0.6, "stroke": "#333", "strokeWidth": 0.3},
                "encoding": {
                    "longitude": _field("longitude", _QUANTITY),
                    "latitude": _field("latitude", _QUANTITY),
                    "size": _field(
                        "size_mag",
                        _QUANTITY,
                        title="magnitude",
                        scale={"type": "pow", "exponent": 2, "zero": False},
                    ),
                    "color": _field("depth_class", _NOMINAL, title="depth", scale=depth_colours),
                    "tooltip": [
                        _field("id", _NOMINAL),
                        _field("mag", _QUANTITY),
                        _field("place", _NOMINAL),
                        _field("time", _NOMINAL),
                        _field("depth_km", _QUANTITY),
                    ],
                },
            },
        ],
    }
    return _chart(spec, {"epicentres": points.getvalue()})


def _json_for_script(value: Any) -> str:
    """JSON that cannot close the <script> it sits in, whatever a place name holds."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _fmt_int(value: int) -> str:
    return f"{value:,}"


def _summary_html(summary: dict[str, Any]) -> str:
    events, runs, largest, gr = (summary[k] for k in ("events", "runs", "largest", "gr"))
    rows: list[tuple[str, str]] = [
        ("events", _fmt_int(events["n"])),
        ("window fetched", f"{runs['start']} to {runs['end']} UTC" if runs["n"] else "no runs"),
        (
            "first / last event",
            f"{events['first']} / {events['last']} UTC" if events["n"] else "no events",
        ),
        ("ETL runs", _fmt_int(runs["n"])),
        ("rejected features (all runs)", _fmt_int(runs["rejected"])),
    ]
    if largest is not None:
        mag_type = f" {largest['mag_type']}" if largest["mag_type"] else ""
        rows.append(
            (
                "largest event",
                f"M {largest['mag']:g}{mag_type}, {largest['place'] or 'unknown place'}, "
                f"{largest['time']} UTC ({largest['id']})",
            )
        )
    if gr is not None:
        rows += [
            ("b-value", f"{gr['b_value']:.3f} ± {gr['b_stderr']:.3f}"),
            ("a-value", f"{gr['a_value']:.3f}"),
            ("Mc (maximum curvature)", f"{gr['mc']:.1f} ({_fmt_int(gr['events'])} events >= Mc)"),
        ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{cells}</table>'


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>quakecat report</title>
<style>
  body {{ font-family: sans-serif; margin: 2em auto; max-width: 960px; color: #222; }}
  table.summary {{ border-collapse: collapse; margin-bottom: 1.5em; }}
  table.summary th {{ text-align: left; padding: 0.2em 1.5em 0.2em 0; font-weight: normal;
                      color: #555; }}
  .note {{ color: #555; font-size: 0.9em; }}
  .chart {{ margin: 1.5em 0; }}
</style>
<script>
{bundle}
</script>
</head>
<body>
<h1>quakecat report</h1>
{summary}
{body}
</body>
</html>
"""


def render_report(con: duckdb.DuckDBPyConnection) -> str:
    """The report as one self-contained HTML page (no network needed to open it)."""
    summary = _summary(con)
    n_events = summary["events"]["n"]
    if n_events == 0:
        return _PAGE.format(
            bundle="", summary=_summary_html(summary), body='<p class="note">No events.</p>'
        )
    gr = summary["gr"]
    has_mags = bool(_rows(con, "SELECT count(*) AS n FROM magnitude_frequency")[0]["n"])
    if not has_mags:
        mag_note = "No event has a magnitude."
    elif gr is None:
        mag_note = "Too few magnitudes at or above Mc for a Gutenberg-Richter fit."
    else:
        mag_note = "Dashed: the Gutenberg-Richter fit over the whole archive, drawn for M >= Mc."
    if n_events > MAP_POINTS_LIMIT:
        map_note = (
            f"Showing the {_fmt_int(MAP_POINTS_LIMIT)} largest of {_fmt_int(n_events)} events "
            f"(capped at {_fmt_int(MAP_POINTS_LIMIT)})."
        )
    else:
        map_note = f"All {_fmt_int(n_events)} events."
    # (element id, Vega-Lite spec or None for no chart, note shown under it)
    charts: list[tuple[str, dict[str, Any] | None, str]] = [
        ("daily", _daily_chart(con), ""),
        ("magnitudes", _magnitude_chart(con, gr) if has_mags else None, mag_note),
        (
            "map",
            _map_chart(con),
            map_note + " Globe outline and 30° graticule only: no coastlines are bundled.",
        ),
    ]
    parts, calls = [], []
    for name, spec, note in charts:
        if spec is not None:
            parts.append(f'<div class="chart" id="chart-{name}"></div>')
            calls.append(
                f"vegaEmbed('#chart-{name}', {_json_for_script(spec)}, "
                "{actions: false, renderer: 'svg'}).catch(console.error);"
            )
        if note:
            parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append("<script>\n" + "\n".join(calls) + "\n</script>")
    return _PAGE.format(
        # The bundle is code we trust, but "</script" inside it would still end the tag early.
        bundle=javascript_bundle().replace("</script", "<\\/script"),
        summary=_summary_html(summary),
        body="\n".join(parts),
    )


def javascript_bundle(cache_dir: Path | None = None) -> str:
    """Vega, Vega-Lite and vega-embed as one script, kept on disk per version.

    Building it takes vl-convert about a second, in every run; the bundle only changes with
    vl-convert's version and the Vega-Lite version of the specs.
    """
    cache_dir = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    cached = cache_dir / "quakecat" / f"vega-bundle-{vl_convert.__version__}-{VEGA_LITE_VERSION}.js"
    try:
        return cached.read_text(encoding="utf-8")
    except OSError:
        pass
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    try:
        with partial_beside(cached) as partial:
            partial.write_text(bundle, encoding="utf-8")
    except OSError:
        pass  # a read-only home only costs the second next time
    return bundle


def write_report(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Write the report to ``path`` atomically: a reader sees the old page or the new one."""
    page = render_report(con)
    with partial_beside(path) as partial:
        partial.write_text(page, encoding="utf-8")
