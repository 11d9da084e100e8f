"""The CPU path: parse + clean, transform and load on bodies already received, on one core."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.bench.runs import BenchError, pooled_session, request_url
from pipelines.fdsn.fake import FakeFDSN, LoggedRequest

UTC = dt.UTC
CPU_RUNS = 2  # the CPU path is timed this many times; the fastest counts (the box is shared)


class _Replay:
    """Stands in for ``FdsnClient`` in ``fetch_partition``: answers from received bodies."""

    base_url = "replay"

    def __init__(self, bodies: dict[tuple[str, str], bytes]):
        self.bodies = bodies

    def get(self, endpoint, params, decode, stats):
        body = self.bodies[(params["starttime"], params["endtime"])]
        stats.requests += 1
        stats.bytes_received += len(body)
        return decode(body)


def received_bodies(
    service: FakeFDSN, log: Sequence[LoggedRequest], concurrency: int
) -> dict[tuple[str, str], bytes]:
    """Every query answer of ``log`` again, fetched at full speed (outside any timer)."""
    queries = [r for r in log if r.path == "query"]
    latency, rate = service.latency_s, service.rate_bytes_per_s
    service.latency_s, service.rate_bytes_per_s = 0.0, None
    try:
        with pooled_session(concurrency) as session, ThreadPoolExecutor(concurrency) as pool:

            def get(request: LoggedRequest) -> bytes:
                response = session.get(request_url(service.base_url, request), timeout=(10, 600))
                response.raise_for_status()
                return response.content

            bodies = list(pool.map(get, queries))
    finally:
        service.latency_s, service.rate_bytes_per_s = latency, rate
    keys = [(r.params["starttime"], r.params["endtime"]) for r in queries]
    return dict(zip(keys, bodies, strict=True))


@contextlib.contextmanager
def one_cpu() -> Iterator[int | None]:
    """Pin every thread of this process (and so every thread they start) to one CPU."""
    if not hasattr(os, "sched_setaffinity") or not Path("/proc/self/task").is_dir():
        yield None
        return
    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)

    def pin(cpus: set[int]) -> None:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(tid), cpus)

    pin({cpu})
    try:
        yield cpu
    finally:
        pin(allowed)


def cpu_path(
    bodies: dict[tuple[str, str], bytes],
    start: dt.datetime,
    end: dt.datetime,
    max_allowed: int,
    base_url: str,
) -> dict[str, float | int]:
    """One timed pass: extract's parse + clean (with its splits), transform, load."""
    from pipelines.extract import fetch_partition
    from pipelines.fdsn.client import FetchStats
    from pipelines.load import RunRecord, write_duckdb
    from pipelines.plan import Window, partition_grid
    from pipelines.transform import derive
    from pipelines.version import CODE_VERSION

    window = Window(start, end)
    client = _Replay(bodies)
    with tempfile.TemporaryDirectory(prefix="quakecat-bench-cpu-") as scratch:
        gc.collect()
        began = time.perf_counter()
        stats = FetchStats()
        partitions = partition_grid(window)
        cleaned = [fetch_partition(client, p, None, max_allowed, stats) for p in partitions]
        extracted = time.perf_counter()
        # As the transform task hands its output on: one Parquet file per partition.
        events = [Path(scratch) / f"partition-{n:03d}.parquet" for n in range(len(cleaned))]
        for c, path in zip(cleaned, events, strict=True):
            pq.write_table(derive(c.events), path)
        transformed = time.perf_counter()
        record = RunRecord(
            run_id="bench-cpu",
            started_at=dt.datetime.now(UTC),
            window=window,
            base_url=base_url,
            min_magnitude=None,
            partitions=len(partitions),
            stats=stats,
            code_version=CODE_VERSION,
            max_allowed=max_allowed,
        )
        counts = write_duckdb(
            Path(scratch) / "cpu.duckdb", events, [c.rejects for c in cleaned], record
        )
        loaded = time.perf_counter()
    return {
        "wall_s": loaded - began,
        "extract_s": extracted - began,
        "transform_s": transformed - extracted,
        "load_s": loaded - transformed,
        "events": counts.loaded,
        "bodies": stats.requests,
        "bytes": stats.bytes_received,
    }


def measure_cpu(
    service: FakeFDSN,
    log: Sequence[LoggedRequest],
    start: dt.datetime,
    end: dt.datetime,
    concurrency: int,
    expected: int,
) -> dict[str, Any]:
    bodies = received_bodies(service, log, concurrency)
    runs = []
    with one_cpu() as cpu:
        for _ in range(CPU_RUNS):
            runs.append(cpu_path(bodies, start, end, service.max_allowed, service.base_url))
    best = min(runs, key=lambda r: r["wall_s"])
    if best["events"] != expected:
        raise BenchError(f"CPU path loaded {best['events']:,} events; expected {expected:,}")
    return {
        **best,
        "events_per_s": best["events"] / best["wall_s"],
        "runs_wall_s": [r["wall_s"] for r in runs],
        "pinned_cpu": cpu,
    }
