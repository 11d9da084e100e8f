"""Throughput of ``pipelines.clean.clean_body``, in events per second on one core.

Not a test (pytest collects ``test_*.py`` only); run it by hand:

    uv run python tests/bench_clean.py [--runs 5] [--repeat 25] [--days 280]

Two bodies, both FeatureCollections of about 100k features:
- real: the 4,312 features of the 2019 CONUS FDSN answer in ../shared/data/usgs-real, repeated,
  so the mix of nulls, float artefacts and string lengths is the service's own;
- fake: a catalogue from ``pipelines.fdsn.fake.generate_catalogue``, the same wire format the
  offline service sends.
The best of N runs is reported, because the machine is shared and only the fastest run is free
of other processes' noise.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.clean import clean_body  # noqa: E402
from pipelines.fdsn.fake import generate_catalogue  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "usgs-real" / "fdsn_query_2019_conus_m2.5.geojson"


class _Features(msgspec.Struct):
    features: list[msgspec.Raw]


def _collection(features: list[bytes]) -> bytes:
    return b'{"type":"FeatureCollection","features":[' + b",".join(features) + b"]}"


def real_body(repeat: int) -> bytes | None:
    if not REAL.exists():
        return None
    collection = msgspec.json.decode(REAL.read_bytes(), type=_Features)
    raw = [bytes(f) for f in collection.features]
    return _collection(raw * repeat)


def fake_body(days: int) -> bytes:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    catalogue = generate_catalogue(start, start + timedelta(days=days))
    return _collection([e.raw for e in catalogue.events])


def bench(name: str, body: bytes, runs: int) -> float:
    cleaned = clean_body(body, "bench")  # warm-up, and the event count
    events = cleaned.received
    del cleaned
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        clean_body(body, "bench")
        best = min(best, time.perf_counter() - start)
    rate = events / best
    print(
        f"{name:5} {events:>8,} events  {len(body) / 1e6:6.1f} MB  "
        f"best {best * 1e3:7.1f} ms  {rate:>10,.0f} events/s"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per body (best is shown)")
    parser.add_argument("--repeat", type=int, default=25, help="copies of the real features")
    parser.add_argument("--days", type=int, default=280, help="days of fake catalogue (~360/day)")
    args = parser.parse_args()
    real = real_body(args.repeat)
    if real is None:
        print(f"real: skipped, {REAL} not found")
    else:
        bench("real", real, args.runs)
    bench("fake", fake_body(args.days), args.runs)


if __name__ == "__main__":
    main()
