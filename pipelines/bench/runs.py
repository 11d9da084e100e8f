"""Child runs of the pipeline, as a user runs it, and the fetch floor under them."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import requests

from pipelines.fdsn.fake import FakeFDSN, LoggedRequest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20


class BenchError(Exception):
    pass


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


def request_url(base_url: str, request: LoggedRequest) -> str:
    return f"{base_url}/{request.path}?{urlencode(request.params)}"


def pooled_session(concurrency: int) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=concurrency)
    session.mount("http://", adapter)
    return session


def fetch_floor(service: FakeFDSN, log: Sequence[LoggedRequest], concurrency: int) -> dict:
    """Replay ``log``'s URLs in order, ``concurrency`` at a time, only reading the bodies."""
    urls = [request_url(service.base_url, r) for r in log]
    service.reset_log()

    def read(url: str) -> int:
        with session.get(url, stream=True, timeout=(10, 600)) as response:
            response.raise_for_status()
            return sum(len(chunk) for chunk in response.iter_content(chunk_size=MIB))

    with pooled_session(concurrency) as session, ThreadPoolExecutor(concurrency) as pool:
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
