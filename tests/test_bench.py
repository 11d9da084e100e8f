"""quakecat bench end to end, at tiny sizes: every figure is present and the counts agree."""

from __future__ import annotations

import json
import math

import pytest

from pipelines.bench import build_catalogue, main
from tests.conftest import utc

pytestmark = pytest.mark.slow


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_quick_bench_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "--quick", "--days", "3", "--per-day", "40", "--scale-years", "0.02",
            "--latency-ms", "2", "--rate-mbps", "400", "--rounds", "2", "--json", str(out),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    for phase in ("cold", "floor", "warm", "cpu", "scale"):
        assert phase in printed

    start, end = utc(2023, 6, 1), utc(2023, 6, 4)
    expected = build_catalogue(start, end, 40).count(start, end)
    assert expected > 0
    cold, floor, warm, cpu, scale = (report[k] for k in ("cold", "floor", "warm", "cpu", "scale"))
    assert cold["events"] == cold["events_loaded"] == cold["expected_events"] == expected
    assert warm["events"] == warm["expected_events"] == cold["events"]
    assert cpu["events"] == cold["events"]
    # The floor replays the cold run's requests one for one.
    assert cold["requests"] == floor["requests"] > 0 and warm["requests"] > 0
    assert cold["bytes"] == cold["bytes_received"] == floor["bytes"] == floor["bytes_received"]
    for phase in (cold, warm, scale):
        for key in ("wall_s", "events", "peak_rss_mb", "cpu_s", "database_mb"):
            assert _positive(phase[key]), (key, phase)
    for phase in (cold, scale):  # a warm run may reuse cached partitions and fetch nothing
        assert _positive(phase["requests"]) and _positive(phase["bytes"]), phase
    assert warm["requests"] >= 0 and warm["bytes"] >= 0
    assert _positive(floor["wall_s"]) and _positive(cpu["wall_s"])
    # Each of cold, floor and warm is its median round: of two, the faster one.
    for phase in (cold, floor, warm):
        assert len(phase["rounds_wall_s"]) == 2 and phase["wall_s"] == min(phase["rounds_wall_s"])
    assert report["settings"]["rounds"] == 2 and "median of 2 rounds" in printed
    assert _positive(cpu["events_per_s"]) and cpu["bodies"] == 3
    assert scale["events"] == scale["expected_events"] > 0 and scale["latency_ms"] == 0
    for ratio in ("cold_over_floor", "warm_over_cold", "requests_per_100k_events"):
        assert _positive(report[ratio]), ratio
    assert report["requests_per_100k_events"] == pytest.approx(4 / expected * 100_000)

    machine, versions = report["machine"], report["versions"]
    assert machine["cores"] >= 1 and machine["memory_gib"] > 0 and machine["cpu_model"]
    for name in ("python", "quakecat", "flyte", "polars", "pyarrow", "duckdb", "msgspec"):
        assert versions[name], name


def test_skip_scale_and_bad_sizes(tmp_path, capsys):
    assert main(["--quick", "--days", "0", "--json", str(tmp_path / "b.json")]) == 1
    assert "--days must be >= 1" in capsys.readouterr().err
    assert main(["--quick", "--rounds", "0", "--json", str(tmp_path / "b.json")]) == 1
    assert "--rounds must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
