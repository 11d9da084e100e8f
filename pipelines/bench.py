"""quakecat bench: the ETL's wall time, throughput and memory against the offline fake service.

The fake FDSN service runs in this process on 127.0.0.1, holding a generated catalogue (a steady
daily rate plus an aftershock sequence every July, so one month exceeds the 20,000-event search
limit at the default rate) and answering with an injected latency and a per-answer transfer cap.
The pipeline itself runs as a child process, exactly as a user runs it, so its peak RSS is its own:

- cold:  ``python -m pipelines.cli etl`` into a new database;
- floor: the cold run's requests (the same URLs, in the same order, as many in flight) issued by
  a minimal client that only reads the bodies: the least any pipeline could take for them;
- warm:  the same command again into the cold database (an upsert; whatever the pipeline can
  reuse from its cache, it does not fetch again);
- cpu:   parse + clean, transform and load in this process on bodies already received, pinned to
  one CPU;
- scale: a cold run over a ten-year catalogue, with no latency and no transfer cap.

Every child runs in a scratch directory with a Flyte config of its own, so Flyte's local cache
(and quakecat's partition store) starts empty and is removed with the bench: the cold run is cold
however often the bench runs. Prints a table and writes every figure, the machine and the
versions to ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import pyarrow.parquet as pq
import requests

from pipelines.fdsn.fake import Catalogue, FakeFDSN, LoggedRequest, generate_catalogue

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path("data/bench.json")
UTC = dt.UTC
MIB = 2**20

# A year at 340 events a day plus one aftershock sequence is ~134,000 events, close to what the
# USGS all-magnitude catalogue holds in a year; the sequence puts July over the search limit.
BASE_PER_DAY = 340.0
QUICK_PER_DAY = 120.0
# Extra events per day after a mainshock on 4 July (the date of Ridgecrest, 2019), as
# (first day, end day, extra per day) at BASE_PER_DAY; scaled with the base rate.
AFTERSHOCKS = ((0, 1, 4000.0), (1, 3, 1500.0), (3, 7, 500.0), (7, 21, 100.0))
SEED = 2023

DEFAULT_START = dt.datetime(2023, 1, 1, tzinfo=UTC)
QUICK_START = dt.datetime(2023, 6, 1, tzinfo=UTC)
SCALE_START = dt.datetime(2014, 1, 1, tzinfo=UTC)
VERSIONED = ("quakecat", "flyte", "polars", "pyarrow", "duckdb", "msgspec", "requests")
CPU_RUNS = 2  # the CPU path is timed this many times; the fastest counts (the box is shared)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------- the catalogue


def bursts(start: dt.datetime, end: dt.datetime, per_day: float) -> list:
    """An aftershock sequence from 4 July of every year the window touches (clipped to it)."""
    scale = per_day / BASE_PER_DAY
    spans = []
    for year in range(start.year, end.year + 1):
        mainshock = dt.datetime(year, 7, 4, tzinfo=UTC)
        for first, last, extra in AFTERSHOCKS:
            day = dt.timedelta(days=1)
            spans.append((mainshock + first * day, mainshock + last * day, extra * scale))
    return spans


def build_catalogue(start: dt.datetime, end: dt.datetime, per_day: float) -> Catalogue:
    return generate_catalogue(
        start, end, per_day=per_day, seed=SEED, bursts=bursts(start, end, per_day)
    )


# --------------------------------------------------------------------------- child runs


@dataclass
class ChildRun:
    wall_s: float
    cpu_s: float  # user + system
    peak_rss_mb: float
    pipeline_s: float | None  # the "seconds" the command itself reports (after its imports)
    stdout: str


_SECONDS = re.compile(r"^seconds\s+([\d,.]+)\s*$", re.MULTILINE)


def flyte_home(scratch: Path) -> Path:
    """A working directory whose ``.flyte/config.yaml`` Flyte finds first, so that its local
    cache (and quakecat's partition store beside it) belongs to this bench alone: the cold run
    starts with none, the warm run sees what the cold run left, and nothing outlives the bench."""
    home = scratch / "flyte-home"
    (home / ".flyte").mkdir(parents=True, exist_ok=True)
    ours = PROJECT_ROOT / ".flyte" / "config.yaml"
    config = ours.read_text() if ours.is_file() else "task:\n  project: quakecat\n"
    (home / ".flyte" / "config.yaml").write_text(config)
    return home


def run_etl(
    base_url: str,
    start: dt.datetime,
    end: dt.datetime,
    out: Path,
    concurrency: int,
    home: Path,
) -> ChildRun:
    """``quakecat etl`` as a child process run in ``home``, with its own peak RSS.

    The peak is the child's ``VmHWM``, polled until it exits: ``ru_maxrss`` would not do, since
    Linux carries the forking parent's high-water mark (this process holds the catalogue) over
    ``exec`` into the child's figure."""
    command = [
        sys.executable, "-m", "pipelines.cli", "etl",
        "--start", start.isoformat(), "--end", end.isoformat(),
        "--base-url", base_url, "--out", str(out),
        "--max-in-flight", str(concurrency),
        # The service is local: USGS's request-rate budget would only add waits to long runs.
        "--max-per-5min", "1000000",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        began = time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=home, env=_child_env())
        peak_kib = 0
        while True:
            # wait4 reports this child's own CPU time (RUSAGE_CHILDREN would add up every child).
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, _high_water_kib(child.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        out_text = stdout.read().decode("utf-8", "replace")
        err_text = stderr.read().decode("utf-8", "replace")
    if child.returncode != 0:
        raise BenchError(
            f"{' '.join(command[1:5])} exited {child.returncode}: {err_text.strip()[-2000:]}"
        )
    found = _SECONDS.search(out_text)
    return ChildRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=peak_kib / 1024,
        pipeline_s=float(found.group(1).replace(",", "")) if found else None,
        stdout=out_text,
    )


def _high_water_kib(pid: int) -> int:
    """The pipeline process's peak resident memory so far (0 before its exec, or once gone).

    Between fork and exec the child is still a copy of this process, catalogue and all.
    """
    try:
        if b"pipelines.cli" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return 0
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def _child_env() -> dict[str, str]:
    """This process's environment, with the working tree first on the import path (the child
    runs outside it, in its own Flyte home)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def last_run(path: Path) -> dict[str, Any]:
    """The newest ``etl_runs`` row of ``path``, and how many events the file holds."""
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute(
            "SELECT * FROM etl_runs ORDER BY finished_at DESC, started_at DESC LIMIT 1"
        )
        names = [d[0] for d in cursor.description]
        row = dict(zip(names, cursor.fetchone(), strict=True))
        row["events_in_file"] = con.execute("SELECT count(*) FROM events").fetchone()[0]
    return row


def _served(log: Sequence[LoggedRequest]) -> tuple[int, int]:
    return len(log), sum(r.bytes_sent for r in log)


# etl_runs columns copied into the figures when this version of the pipeline has them.
_RUN_COLUMNS = ("partitions", "partitions_cached", "retries", "splits", "revised_events")


def measure_run(
    service: FakeFDSN,
    start: dt.datetime,
    end: dt.datetime,
    out: Path,
    concurrency: int,
    expected: int,
    label: str,
    home: Path,
) -> tuple[dict[str, Any], list[LoggedRequest]]:
    fresh = not out.exists()
    service.reset_log()
    child = run_etl(service.base_url, start, end, out, concurrency, home)
    log = sorted(service.log, key=lambda r: r.n)
    requests_served, bytes_served = _served(log)
    row = last_run(out)
    # The file must hold exactly the window's events. A fresh run loads them all; a run into an
    # existing file may load fewer (partitions it can reuse), which is what it is there for.
    if row["events_in_file"] != expected or (fresh and row["events_loaded"] != expected):
        raise BenchError(
            f"{label} run loaded {row['events_loaded']:,} events and the file holds "
            f"{row['events_in_file']:,}; the service holds {expected:,}"
        )
    if row["requests"] != requests_served:
        raise BenchError(
            f"{label} run counted {row['requests']} requests; the service saw {requests_served}"
        )
    figures = {
        "wall_s": child.wall_s,
        "pipeline_s": child.pipeline_s,
        "cpu_s": child.cpu_s,
        "events": row["events_in_file"],  # the window's events, now in the file
        "events_loaded": row["events_loaded"],
        "expected_events": expected,
        "events_per_s": row["events_in_file"] / child.wall_s,
        "requests": requests_served,
        "bytes": bytes_served,
        "bytes_received": row["bytes_received"],
        "peak_rss_mb": child.peak_rss_mb,
        "database_mb": out.stat().st_size / MIB,
        **{k: row[k] for k in _RUN_COLUMNS if k in row},
    }
    return figures, log


# --------------------------------------------------------------------------- the fetch floor


def _url(base_url: str, request: LoggedRequest) -> str:
    return f"{base_url}/{request.path}?{urlencode(request.params)}"


def _session(concurrency: int) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=concurrency)
    session.mount("http://", adapter)
    return session


def fetch_floor(service: FakeFDSN, log: Sequence[LoggedRequest], concurrency: int) -> dict:
    """Replay ``log``'s URLs in order, ``concurrency`` at a time, only reading the bodies."""
    urls = [_url(service.base_url, r) for r in log]
    service.reset_log()

    def read(url: str) -> int:
        with session.get(url, stream=True, timeout=(10, 600)) as response:
            response.raise_for_status()
            return sum(len(chunk) for chunk in response.iter_content(chunk_size=MIB))

    with _session(concurrency) as session, ThreadPoolExecutor(concurrency) as pool:
        began = time.perf_counter()
        received = sum(pool.map(read, urls))
        wall = time.perf_counter() - began
    requests_served, bytes_served = _served(service.log)
    return {
        "wall_s": wall,
        "requests": requests_served,
        "bytes": bytes_served,
        "bytes_received": received,
        "concurrency": concurrency,
    }


# --------------------------------------------------------------------------- the CPU path


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
        with _session(concurrency) as session, ThreadPoolExecutor(concurrency) as pool:

            def get(request: LoggedRequest) -> bytes:
                response = session.get(_url(service.base_url, request), timeout=(10, 600))
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


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": platform.processor() or None,
        "memory_gib": None,
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)  # kB -> GiB
                break
    return info


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["git_commit"] = found["git_dirty"] = None  # the code measured, when run from a clone
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(PROJECT_ROOT)]
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, timeout=10)
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, timeout=10
        )
        if commit.returncode == 0 and status.returncode == 0:
            found["git_commit"] = commit.stdout.decode().strip()
            found["git_dirty"] = bool(status.stdout.strip())
    return found


# --------------------------------------------------------------------------- the command


def _days(days: int) -> dt.timedelta:
    return dt.timedelta(days=days)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quakecat bench", description=__doc__.splitlines()[0].split(": ", 1)[1]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes: 60 days and a 1-year scale run at {QUICK_PER_DAY:g} events/day",
    )
    parser.add_argument("--start", help="first day of the catalogue window (default 2023-01-01)")
    parser.add_argument("--days", type=int, help="days in the window (default 365; quick 60)")
    parser.add_argument(
        "--per-day",
        type=float,
        help=f"base events per day, before the July aftershocks (default {BASE_PER_DAY:g})",
    )
    parser.add_argument(
        "--scale-years", type=float, help="years in the scale run (default 10; quick 1)"
    )
    parser.add_argument("--skip-scale", action="store_true", help="leave out the scale run")
    parser.add_argument(
        "--rounds",
        type=int,
        help="cold, floor and warm runs, each figure the median round's (default 3; quick 1)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=100.0, help="per-request latency (default 100)"
    )
    parser.add_argument(
        "--rate-mbps",
        type=float,
        default=50.0,
        help="per-answer transfer cap in megabits per second; 0 for none (default 50)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight, pipeline and floor"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    return parser


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.start:
        try:
            start = dt.datetime.fromisoformat(args.start)
        except ValueError:
            raise BenchError(f"--start {args.start!r} is not a date such as 2023-01-01") from None
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    else:
        start = QUICK_START if args.quick else DEFAULT_START
    days = args.days if args.days is not None else (60 if args.quick else 365)
    per_day = args.per_day if args.per_day is not None else (
        QUICK_PER_DAY if args.quick else BASE_PER_DAY
    )  # fmt: skip
    scale_years = args.scale_years if args.scale_years is not None else (1 if args.quick else 10)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    for name, value in (
        ("--days", days),
        ("--concurrency", args.concurrency),
        ("--rounds", rounds),
    ):
        if value < 1:
            raise BenchError(f"{name} must be >= 1, got {value}")
    if per_day <= 0 or scale_years <= 0 or args.latency_ms < 0 or args.rate_mbps < 0:
        raise BenchError("--per-day and --scale-years must be > 0; latency and rate >= 0")
    scale_days = max(1, round(scale_years * 365.25))
    return {
        "quick": args.quick,
        "start": start,
        "end": start + _days(days),
        "days": days,
        "per_day": per_day,
        "latency_ms": args.latency_ms,
        "rate_mbps": args.rate_mbps or None,
        "concurrency": args.concurrency,
        "rounds": rounds,
        "scale": None
        if args.skip_scale
        else {
            "years": scale_years,
            "start": SCALE_START,
            "end": SCALE_START + _days(scale_days),
            "days": scale_days,
            "per_day": per_day,
            "latency_ms": 0.0,
            "rate_mbps": None,
        },
    }


def _median(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median wall time (the lower one of an even count), and every round's.

    The machine is shared: one round alone moved by a tenth of a second between runs of the
    same code. The median keeps every figure of one real run together, unlike a mean."""
    ranked = sorted(figures, key=lambda f: f["wall_s"])
    return {**ranked[(len(ranked) - 1) // 2], "rounds_wall_s": [f["wall_s"] for f in figures]}


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(settings: dict[str, Any]) -> dict[str, Any]:
    began = time.perf_counter()
    start, end, concurrency = settings["start"], settings["end"], settings["concurrency"]
    rate = settings["rate_mbps"]
    report: dict[str, Any] = {"generated_at": dt.datetime.now(UTC).isoformat(timespec="seconds")}

    t0 = time.perf_counter()
    catalogue = build_catalogue(start, end, settings["per_day"])
    expected = catalogue.count(start, end)
    _say(f"catalogue: {expected:,} events in {time.perf_counter() - t0:.1f} s")
    service = FakeFDSN(
        catalogue,
        latency_s=settings["latency_ms"] / 1000,
        rate_bytes_per_s=rate * 1e6 / 8 if rate else None,
    )
    rounds: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    with service:
        for n in range(1, settings["rounds"] + 1):
            # Each round from nothing: a new database, and a Flyte cache of its own.
            with tempfile.TemporaryDirectory(prefix="quakecat-bench-") as scratch:
                out, home = Path(scratch) / "cold.duckdb", flyte_home(Path(scratch))
                _say(f"round {n}/{settings['rounds']}: cold run")
                cold, log = measure_run(
                    service, start, end, out, concurrency, expected, "cold", home
                )
                _say(f"round {n}/{settings['rounds']}: fetch floor")
                floor = fetch_floor(service, log, concurrency)
                _say(f"round {n}/{settings['rounds']}: warm run")
                warm, _ = measure_run(service, start, end, out, concurrency, expected, "warm", home)
            rounds.append((cold, floor, warm))
        cold, floor, warm = (_median([r[phase] for r in rounds]) for phase in range(3))
        _say(f"CPU path ({CPU_RUNS} runs on one core)")
        cpu = measure_cpu(service, log, start, end, concurrency, expected)
        max_allowed = service.max_allowed
    del catalogue, service, log
    gc.collect()

    scale = None
    if settings["scale"] is not None:
        s = settings["scale"]
        t0 = time.perf_counter()
        big = build_catalogue(s["start"], s["end"], s["per_day"])
        generated_s = time.perf_counter() - t0
        big_expected = big.count(s["start"], s["end"])
        _say(f"scale catalogue: {big_expected:,} events in {generated_s:.1f} s; scale run")
        with (
            tempfile.TemporaryDirectory(prefix="quakecat-bench-") as scratch,
            FakeFDSN(big) as fake,
        ):
            out = Path(scratch) / "scale.duckdb"
            home = flyte_home(Path(scratch))
            scale, _ = measure_run(
                fake, s["start"], s["end"], out, concurrency, big_expected, "scale", home
            )
        scale.update(
            years=s["years"],
            window_start=s["start"].isoformat(),
            window_end=s["end"].isoformat(),
            per_day=s["per_day"],
            latency_ms=s["latency_ms"],
            rate_mbps=s["rate_mbps"],
            generate_s=generated_s,
        )
        del big
        gc.collect()

    report.update(
        settings={
            **{k: v for k, v in settings.items() if k not in ("start", "end", "scale")},
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "max_allowed": max_allowed,
            "cpu_runs": CPU_RUNS,
        },
        cold=cold,
        floor=floor,
        warm=warm,
        cpu=cpu,
        scale=scale,
        cold_over_floor=cold["wall_s"] / floor["wall_s"],
        warm_over_cold=warm["wall_s"] / cold["wall_s"],
        requests_per_100k_events=cold["requests"] / cold["events"] * 100_000,
        machine={
            **machine(),
            "bench_process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        versions=versions(),
        total_s=time.perf_counter() - began,
    )
    return report


def _row(name: str, r: dict[str, Any] | None, note: str = "") -> str:
    if r is None:
        return f"{name:<6} {'skipped':>8}"

    def num(key: str, width: int, spec: str, scale: float = 1.0) -> str:
        value = r.get(key)
        return "-".rjust(width) if value is None else format(value / scale, f"{width}{spec}")

    return (
        f"{name:<6} {num('wall_s', 8, '.2f')} {num('events', 11, ',.0f')}"
        f" {num('events_per_s', 10, ',.0f')} {num('requests', 9, ',.0f')}"
        f" {num('bytes', 9, ',.1f', MIB)} {num('peak_rss_mb', 12, ',.0f')}  {note}"
    ).rstrip()


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    rate = f"{s['rate_mbps']:g} Mbit/s per answer" if s["rate_mbps"] else "no transfer cap"
    cold, warm, cpu, scale = report["cold"], report["warm"], report["cpu"], report["scale"]
    lines = [
        f"quakecat bench  {s['window_start'][:10]} -> {s['window_end'][:10]} ({s['days']} days, "
        f"{cold['expected_events']:,} events), latency {s['latency_ms']:g} ms, {rate}, "
        f"{s['concurrency']} in flight; cold, floor and warm: the median of {s['rounds']} "
        f"round{'' if s['rounds'] == 1 else 's'}",
        f"{'phase':<6} {'wall s':>8} {'events':>11} {'events/s':>10} {'requests':>9} "
        f"{'MiB':>9} {'peak RSS MiB':>12}",
        _row(
            "cold",
            cold,
            f"child process; pipeline's own {cold['pipeline_s']} s; file "
            f"{cold['database_mb']:.1f} MiB",
        ),
        _row("floor", report["floor"], "same URLs, only reading bodies"),
        _row("warm", warm, f"into the cold database; pipeline's own {warm['pipeline_s']} s"),
        _row(
            "cpu",
            cpu,
            f"1 core, in-process, best of {len(cpu['runs_wall_s'])}: extract "
            f"{cpu['extract_s']:.2f} s, transform {cpu['transform_s']:.2f} s, load "
            f"{cpu['load_s']:.2f} s",
        ),
    ]
    if scale is None:
        lines.append(_row("scale", None))
    else:
        lines.append(
            _row(
                "scale",
                scale,
                f"{scale['years']:g} year{'' if scale['years'] == 1 else 's'}, latency 0 and no "
                f"transfer cap (to keep the bench short); file {scale['database_mb']:.0f} MiB",
            )
        )
    lines.append(
        f"cold/floor {report['cold_over_floor']:.2f}   warm/cold {report['warm_over_cold']:.2f}"
        f"   requests per 100k events (cold) {report['requests_per_100k_events']:.1f}"
        f"   total {report['total_s']:.0f} s"
    )
    m = report["machine"]
    lines.append(
        f"machine: {m['usable_cores']} cores, {m['memory_gib']} GiB, {m['cpu_model']}; "
        f"bench process peak RSS {m['bench_process_peak_rss_mb']:,.0f} MiB"
    )
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {value!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(_settings(args))
    except BenchError as exc:
        print(f"quakecat bench: error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
