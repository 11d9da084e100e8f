"""The top-level task: plan, fan out extract and transform per partition, load once."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

import flyte
from flyte.io import File

from pipelines.envs import driver
from pipelines.extract import FetchRequest, extract, plan
from pipelines.fdsn.client import FetchStats
from pipelines.load import RunRecord, load
from pipelines.plan import Window
from pipelines.transform import transform
from pipelines.version import CODE_VERSION


@dataclass
class RunSummary:
    run_id: str
    window_start: dt.datetime
    window_end: dt.datetime
    partitions: int
    expected_events: int
    events_received: int
    events_loaded: int
    events_rejected: int
    events_total: int
    requests: int
    retries: int
    splits: int
    bytes_received: int


@driver.task
async def etl(
    start: dt.datetime,
    end: dt.datetime,
    request: FetchRequest,
    previous: File | None = None,
    fmt: str = "duckdb",
) -> tuple[File, File, RunSummary]:
    """Fetch [start, end) into a new database, or into a copy of ``previous`` (an upsert).

    ``fmt`` is the file's format, duckdb or sqlite (``previous`` is in the same format).
    Returns the database, its HTML report, and the run's summary.
    """
    started_at = dt.datetime.now(dt.UTC)
    window = Window(start, end)
    survey = await plan.aio(window, request)
    stats = FetchStats()
    stats.add(survey.stats)

    # Each sync task call takes a thread of its own; the client's budget bounds the requests,
    # this bounds the threads (and the partitions held in memory at once).
    gate = asyncio.Semaphore(request.client.max_in_flight)

    async def extract_one(partition: Window):
        async with gate:
            return await extract.aio(partition, request, survey.max_allowed)

    with flyte.group("extract"):
        extracted = await asyncio.gather(*(extract_one(p) for p in survey.partitions))
    with flyte.group("transform"):
        events = await asyncio.gather(*(transform.aio(e) for e, _, _ in extracted))
    for _, _, partition_stats in extracted:
        stats.add(partition_stats)

    run_id = flyte.ctx().action.run_name
    record = RunRecord(
        run_id=run_id,
        started_at=started_at,
        window=window,
        base_url=request.client.base_url,
        min_magnitude=request.min_magnitude,
        partitions=len(survey.partitions),
        stats=stats,
        code_version=CODE_VERSION,
    )
    database, report, counts = await load.aio(
        list(events), [r for _, r, _ in extracted], record, previous, fmt
    )
    return (
        database,
        report,
        RunSummary(
            run_id=run_id,
            window_start=window.start,
            window_end=window.end,
            partitions=len(survey.partitions),
            expected_events=survey.expected_events,
            events_received=counts.received,
            events_loaded=counts.loaded,
            events_rejected=counts.rejected,
            events_total=counts.total,
            requests=stats.requests,
            retries=stats.retries,
            splits=stats.splits,
            bytes_received=stats.bytes_received,
        ),
    )
