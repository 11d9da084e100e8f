"""The HTML report: each chart's data as embedded in the page, self-containment, a real browser."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipelines import report
from pipelines.clean import REJECTS_SCHEMA
from pipelines.load import write_duckdb
from pipelines.plan import Window
from pipelines.report import render_report, write_report
from pipelines.transform import derive
from schemas.events import RECORD_SCHEMA
from tests.conftest import parquet_files, run_record

UTC = dt.UTC
CHROMIUM = Path("/usr/bin/chromium")


def at(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, tzinfo=UTC)


def event(id_: str, time: dt.datetime, mag: float | None, lon: float, lat: float, **extra: Any):
    row = dict.fromkeys(RECORD_SCHEMA.names)
    row.update(id=id_, time=time, updated=time, mag=mag, longitude=lon, latitude=lat)
    row.update({"depth_km": 10.0, "event_type": "earthquake", **extra})
    return row


# Eleven events over two days (none on 2 May), two event types, one NULL magnitude.
EVENTS = [
    event("ev01", at(1, 1), 1.0, -155.28, 19.41, place="5 km S of Volcano, Hawaii"),
    event("ev02", at(1, 2), 1.0, -116.79, 33.49, place="Anza, CA"),
    event("ev03", at(1, 3), 1.1, 141.2, 38.3, place="Japan"),
    event("ev04", at(1, 4), 1.1, 14.43, 40.82, place="Italy"),
    event("ev05", at(1, 5), 1.5, -70.9, -33.4, place="Chile"),
    event("qb01", at(1, 6), 1.2, -87.6, 41.8, place="Illinois", event_type="quarry blast"),
    event("ev06", at(3, 1), 2.0, 174.8, -41.3, place="New Zealand"),
    event("ev07", at(3, 2), 2.5, 28.9, 41.0, place="Turkey"),
    event("ev08", at(3, 3), 3.2, -21.9, 64.1, place="Iceland", mag_type="ml"),
    event("ev09", at(3, 4), 6.4, 95.3, 3.3, place="off the coast of Sumatra", mag_type="mww"),
    event("ev10", at(3, 5), None, 0.5, 51.5, place="England"),
]
DAILY = {
    ("2024-05-01", "earthquake"): 5,
    ("2024-05-01", "quarry blast"): 1,
    ("2024-05-03", "earthquake"): 5,
}


def reject(id_: str) -> pa.Table:
    row = dict.fromkeys(REJECTS_SCHEMA.names)
    row.update(partition="2024-05-01/2024-05-02", id=id_, reason="bad", raw_json="{}")
    return pa.Table.from_pylist([row], schema=REJECTS_SCHEMA)


def database(path: Path, rows: list[dict[str, Any]], rejects: int = 0) -> Path:
    events = [derive(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA))] if rows else []
    files = parquet_files(events, path.with_name(f"{path.stem}-parts"))
    write_duckdb(
        path,
        files,
        [reject(f"bad{i}") for i in range(rejects)],
        run_record("run-1", Window(at(1), at(4)), partitions=3),
    )
    return path


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    path = database(tmp_path / "quakes.duckdb", EVENTS, rejects=2)
    with duckdb.connect(str(path), read_only=True) as connection:
        yield connection


@pytest.fixture
def page(con: duckdb.DuckDBPyConnection) -> str:
    return render_report(con)


def specs(page: str) -> dict[str, dict[str, Any]]:
    """The Vega-Lite spec of each chart, as the page hands it to vegaEmbed."""
    found = re.findall(r"vegaEmbed\('#chart-(\w+)', (.*?), \{actions: false", page)
    return {name: json.loads(spec) for name, spec in found}


def datasets(spec: dict[str, Any]) -> list[Any]:
    """Every inline dataset of a spec, in layer order."""
    layers = spec.get("layer", [spec])
    return [spec["datasets"][layer["data"]["name"]] for layer in layers if "name" in layer["data"]]


def gr_row(con: duckdb.DuckDBPyConnection) -> tuple[float, float, float, float]:
    return con.execute(
        "SELECT a_value, b_value, b_stderr, mc FROM gutenberg_richter WHERE scope = 'all'"
    ).fetchall()[0]


def test_daily_chart_holds_the_counts_per_day_and_type(page: str) -> None:
    (rows,) = datasets(specs(page)["daily"])
    assert {(r["date"], r["event_type"]): r["events"] for r in rows} == DAILY


def test_magnitude_chart_holds_every_bin_and_the_fitted_line(
    page: str, con: duckdb.DuckDBPyConnection
) -> None:
    points, line = datasets(specs(page)["magnitudes"])
    bins = con.execute("SELECT mag_bin, events, cumulative FROM magnitude_frequency").fetchall()
    expected = {(m, "cumulative N(M >= bin)", c) for m, _, c in bins} | {
        (m, "per 0.1 bin", n) for m, n, _ in bins if n > 0
    }
    assert {(p["mag_bin"], p["series"], p["count"]) for p in points} == expected
    # Empty bins (e.g. 1.3, 1.4) are left out of the per-bin series: log scale.
    assert (1.3, "per 0.1 bin", 0) not in {(p["mag_bin"], p["series"], p["count"]) for p in points}
    a, b, _, mc = gr_row(con)
    assert [p["mag_bin"] for p in line] == [mc, 6.4]
    for p in line:
        assert p["count"] == pytest.approx(10 ** (a - b * p["mag_bin"]))
    assert f"log10 N = {a:.3f} - {b:.3f} M" in line[0]["series"]


def test_map_plots_each_event_at_its_epicentre(page: str) -> None:
    (points,) = datasets(specs(page)["map"])
    rows = list(csv.DictReader(io.StringIO(points)))
    got = {r["id"]: (float(r["longitude"]), float(r["latitude"]), r["mag"]) for r in rows}
    assert got == {
        e["id"]: (e["longitude"], e["latitude"], "" if e["mag"] is None else str(e["mag"]))
        for e in EVENTS
    }
    assert rows[0]["id"] == "ev09"  # largest first, so small ones are drawn on top
    assert "All 11 events." in page


def test_map_keeps_the_largest_events_when_capped(
    con: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "MAP_POINTS_LIMIT", 3)
    page = render_report(con)
    (points,) = datasets(specs(page)["map"])
    assert [r["id"] for r in csv.DictReader(io.StringIO(points))] == ["ev09", "ev08", "ev07"]
    assert "Showing the 3 largest of 11 events (capped at 3)." in page


def test_summary_numbers(page: str, con: duckdb.DuckDBPyConnection) -> None:
    _, b, stderr, mc = gr_row(con)
    for label, value in [
        ("events", "11"),
        ("window fetched", "2024-05-01 00:00:00 to 2024-05-04 00:00:00 UTC"),
        ("first / last event", "2024-05-01 01:00:00 / 2024-05-03 05:00:00 UTC"),
        ("ETL runs", "1"),
        ("rejected features (all runs)", "2"),
        ("largest event", "M 6.4 mww, off the coast of Sumatra, 2024-05-03 04:00:00 UTC (ev09)"),
        ("b-value", f"{b:.3f} ± {stderr:.3f}"),
        ("Mc (maximum curvature)", f"{mc:.1f} ("),
    ]:
        assert re.search(f"<th>{re.escape(label)}</th><td>{re.escape(value)}", page), label


def test_page_is_self_contained(page: str) -> None:
    # Two inline scripts (the libraries in <head>, the charts in <body>), none with a src.
    assert re.findall(r"<script\b[^>]*>", page, re.IGNORECASE) == ["<script>", "<script>"]
    libraries, charts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    assert "vegaEmbed" in libraries
    assert charts.count("vegaEmbed(") == 3
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.DOTALL)
    assert not re.search(r"\b(src|href)\s*=|<link\b|@import|url\(", markup, re.IGNORECASE)
    assert not re.search(r"cdn\.|unpkg|jsdelivr|googleapis", page, re.IGNORECASE)
    # Every chart's data is inline: no spec names a URL to load.
    for spec in specs(page).values():
        assert '"url"' not in json.dumps(spec)


def test_text_from_the_data_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    nasty = "</script><script>alert(1)</script> & <b>"
    path = database(tmp_path / "q.duckdb", [event("x1", at(1), 5.0, 1.0, 2.0, place=nasty)])
    with duckdb.connect(str(path), read_only=True) as con:
        page = render_report(con)
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page  # the summary, escaped
    (points,) = datasets(specs(page)["map"])
    assert nasty in points  # the chart still gets the real text


def test_empty_database_renders_a_note(tmp_path: Path) -> None:
    path = database(tmp_path / "empty.duckdb", [])
    with duckdb.connect(str(path), read_only=True) as con:
        page = render_report(con)
    assert "No events." in page
    assert "<th>events</th><td>0</td>" in page
    assert "vegaEmbed" not in page


def test_events_without_magnitudes_still_render(tmp_path: Path) -> None:
    rows = [event("n1", at(1), None, 1.0, 2.0), event("n2", at(2), None, 3.0, 4.0)]
    path = database(tmp_path / "nomag.duckdb", rows)
    with duckdb.connect(str(path), read_only=True) as con:
        page = render_report(con)
    assert set(specs(page)) == {"daily", "map"}
    assert "No event has a magnitude." in page


def test_write_report_replaces_the_file_atomically(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "site" / "report.html"
    out.parent.mkdir()
    write_report(con, out)
    assert out.read_text(encoding="utf-8") == render_report(con)
    assert out.stat().st_mode & 0o777 == 0o644

    def broken(_: duckdb.DuckDBPyConnection) -> str:
        raise RuntimeError("render failed")

    before = out.read_text(encoding="utf-8")
    monkeypatch.setattr(report, "render_report", broken)
    with pytest.raises(RuntimeError):
        write_report(con, out)
    assert out.read_text(encoding="utf-8") == before
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def chromium(url: str, profile: Path) -> tuple[str, list[str]]:
    """Open ``url`` in headless Chromium: (the DOM after scripts ran, console lines)."""
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            # Without these Chromium phones home, which this closed network refuses.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # Chromium logs every console message (log, warn, error, uncaught) as a CONSOLE line.
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_page_renders_in_chromium_without_console_errors(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # The probe proves the console check can fail: a page that throws is caught.
    probe = tmp_path / "probe.html"
    probe.write_text("<script>console.error('probe'); notDefined();</script>", encoding="utf-8")
    _, console = chromium(probe.as_uri(), tmp_path / "profile-probe")
    assert any("probe" in line for line in console)
    assert any("notDefined" in line for line in console)

    page = tmp_path / "report.html"
    write_report(con, page)
    dom, console = chromium(page.as_uri(), tmp_path / "profile")
    assert console == []
    # vega-embed replaced each empty chart <div> with an <svg> holding the marks it drew.
    for name in ("daily", "magnitudes", "map"):
        chart = re.search(rf'<div[^>]*id="chart-{name}".*?</svg>', dom, re.DOTALL)
        assert chart, name
        assert "<svg" in chart.group(0), name
    assert dom.count('aria-roledescription="bar"') == len(DAILY)
    assert re.search(r'class="mark-line role-mark', dom)  # the G-R line
    assert re.search(r'class="mark-shape role-mark', dom)  # the globe and graticule
    assert dom.count('aria-roledescription="circle"') == len(EVENTS)  # one per epicentre


def test_the_javascript_bundle_is_built_once_and_kept_per_version(tmp_path: Path) -> None:
    from pipelines.report import javascript_bundle

    built = javascript_bundle(cache_dir=tmp_path)
    (kept,) = (tmp_path / "quakecat").glob("vega-bundle-*.js")
    assert kept.read_text(encoding="utf-8") == built
    assert "vegaEmbed" in built
    kept.write_text("// the cached copy", encoding="utf-8")
    assert javascript_bundle(cache_dir=tmp_path) == "// the cached copy"
    assert [p.name for p in (tmp_path / "quakecat").iterdir()] == [kept.name]
