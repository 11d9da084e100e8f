"""The top-level task: plan, fan out extract and transform per partition, load once."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field

import flyte
from flyte.io import DataFrame, File

from pipelines.archive import (
    ArchiveState,
    archive_format,
    check_archive_format,
    read_archive,
    scheduled_archive,
    write_archive,
)
from pipelines.envs import driver
from pipelines.errors import UsageError
from pipelines.extract import SETTLED, FetchRequest, Source, extract, plan
from pipelines.fdsn.client import ClientSettings, FetchStats
from pipelines.files import discard_local
from pipelines.load import ExtractRef, RunRecord, load, stage
from pipelines.plan import Window, check_window
from pipelines.progress import Progress
from pipelines.schedule import daily_trigger, kickoff_window_end
from pipelines.task_fields import default
from pipelines.transform import transform
from pipelines.version import CODE_VERSION

# A scheduled run fetches this many days before its kickoff: a week of overlap with the runs
# before it, so that a missed or failed day is filled in by the next one.
SCHEDULED_DAYS = 7


@dataclass
class Incremental:
    """What a run knows about the archive it adds to (all empty for a new archive)."""

    # Partitions that end at or before this are settled: cached for every later run.
    settle_before: dt.datetime | None = default(None)
    # Keys the cache of unsettled partitions: the same until a run of the archive succeeds, so
    # that only a restart of an interrupted run reuses them.
    generation: str = default("unsettled")
    # The service's search limit, when the archive has learned it (saves the count request).
    max_allowed: int | None = default(None)
    # Where partition outputs that must outlive the run are kept ("" = the run's raw data).
    store: str = default("")
    # Extracts the archive has already taken in: handed back by the cache, they are skipped.
    held: list[ExtractRef] = field(default_factory=list)


@dataclass
class Processed:
    """One partition through extract and transform (``events`` is None when skipped)."""

    events: DataFrame | None
    rejects: DataFrame
    stats: FetchStats
    ref: ExtractRef


class Stager:
    """Adds finished partitions to a working copy of the archive while others still fetch, so
    that the load at the end has one batch left to add, not the whole run.

    One stage at a time, each building on the copy the one before made; partitions that finish
    meanwhile wait and go together in the next. The last partitions are left to the load: a
    stage would only put a task and a copy of the file between them and the load.
    """

    def __init__(self, run_id: str, previous: File | None, fmt: str):
        self.run_id = run_id
        self.archive, self.fmt = previous, fmt
        self.waiting: list[Processed] = []
        self.staged = 0
        self._running: asyncio.Task[None] | None = None
        self._closed = False

    def add(self, result: Processed) -> None:
        self.waiting.append(result)
        if self._running is not None and self._running.done():
            self._running.result()  # a stage that failed fails the run, here and now
        if not self._closed and (self._running is None or self._running.done()):
            self._running = asyncio.create_task(self._drain())

    def fetching_done(self) -> None:
        """From now on, what waits is the load's."""
        self._closed = True

    async def _drain(self) -> None:
        while self.waiting and not self._closed:
            batch, self.waiting = self.waiting, []
            consumed = self.archive
            with flyte.group("stage"):
                self.archive = await stage.aio(
                    [r.events for r in batch], [r.rejects for r in batch], self.run_id,
                    consumed, self.fmt,
                )  # fmt: skip
            # What this stage read, if only this run has it: the working copy an earlier stage
            # made (the first reads the archive) and the derived partitions (the rejects may be
            # the partition cache's).
            if self.staged:
                discard_local(consumed.path)
            for result in batch:
                discard_local(result.events.uri)
            self.fmt = "duckdb"
            self.staged += len(batch)

    async def close(self) -> tuple[list[Processed], File | None, str]:
        """Wait for the stage under way; what still waits, and the file to load it into."""
        self.fetching_done()
        if self._running is not None:
            await self._running
        return self.waiting, self.archive, self.fmt

    def abandon(self) -> None:
        if self._running is not None:
            self._running.cancel()


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
    partitions_cached: int
    # Partitions added to the database while others were still fetching.
    partitions_staged: int
    revised_events: int
    max_allowed: int
    requests: int
    retries: int
    splits: int
    bytes_received: int


# Read when deploying: the archive the schedule's runs add to.
SCHEDULED_ARCHIVE = scheduled_archive()


@driver.task(
    triggers=[
        daily_trigger(
            archive=SCHEDULED_ARCHIVE,
            fmt=archive_format(SCHEDULED_ARCHIVE) or "duckdb",
        )
    ]
)
async def etl(
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    request: FetchRequest | None = None,
    previous: File | None = None,
    fmt: str = "duckdb",
    incremental: Incremental | None = None,
    progress: bool = False,
    run_ts: dt.datetime | None = None,
    days: int = SCHEDULED_DAYS,
    archive: str = "",
) -> tuple[File, File, RunSummary]:
    """Fetch [start, end) into a new database, or into a copy of ``previous`` (an upsert).

    On the schedule only ``run_ts`` is given (the trigger's kickoff time): the window is the
    ``days`` days before it, from the USGS service. ``fmt`` is the file's format, duckdb or
    sqlite (``previous`` is in the same format). Returns the database, its HTML report, and
    the run's summary. On a cluster, ``archive`` (a storage URI) is the database to add to: read
    when the run starts (there is none yet on the first run) and replaced by the run's database
    at the end, as ``--out`` is by a local run.
    """
    started_at = dt.datetime.now(dt.UTC)
    request = request or FetchRequest(client=ClientSettings())
    state = ArchiveState()
    if archive:
        if previous is not None:
            raise UsageError("etl: give previous or archive, not both (an archive is read as one)")
        check_archive_format(archive, fmt)
        state = await read_archive.aio(archive, fmt, request.client.base_url)
        previous = File(path=archive) if state.seen else None
    incremental = incremental or Incremental(max_allowed=state.max_allowed, held=state.held)
    end = end or kickoff_window_end(run_ts or started_at)
    window = check_window(start or end - dt.timedelta(days=days), end)
    survey = await plan.aio(window, request, incremental.max_allowed)
    stats = FetchStats()
    stats.add(survey.stats)
    source = Source.of(request)
    settled = incremental.settle_before
    board = Progress(len(survey.partitions), enabled=progress)
    board.start()

    # Each sync task call takes a thread of its own; the client's budget bounds the requests,
    # this bounds the threads (and the partitions held in memory at once). Twice the requests:
    # while one partition is parsed, stored and transformed, the next one is already fetching
    # (with a gate of one per request, every slot sat idle through its partition's processing).
    gate = asyncio.Semaphore(2 * request.client.max_in_flight)

    held = {ref.key for ref in incremental.held}
    run_id = flyte.ctx().action.run_name
    stager = Stager(run_id, previous, fmt)
    pending = len(survey.partitions)

    async def process(partition: Window, generation: str, since: dt.datetime | None = None):
        # Extract and transform back to back under one gate, which bounds the partitions in
        # memory at once; transforms overlap other partitions' fetches.
        fetch = extract.override(cache="disable") if since else extract
        store = "" if since else incremental.store
        async with gate:
            with flyte.group("extract"):
                frame, rejects, fetched = await fetch.aio(
                    partition, source, generation, request.client, survey.max_allowed, store,
                    since,
                )  # fmt: skip
            ref = ExtractRef(frame.uri or "", fetched.fetched_at, partition.key)
            if ref.key in held:
                # The archive took this very extract in already (or something newer since).
                return Processed(None, rejects, fetched, ref)
            with flyte.group("transform"):
                derived = await transform.aio(frame)
        return Processed(derived, rejects, fetched, ref)

    def from_cache(fetched: FetchStats) -> bool:
        # A cached extract hands back the stats of the run that fetched it.
        return fetched.fetched_at < started_at

    async def partition_done(partition: Window) -> Processed:
        nonlocal pending
        generation = SETTLED if settled and partition.end <= settled else incremental.generation
        result = await process(partition, generation)
        board.advance(result.stats, cached=from_cache(result.stats))
        pending -= 1
        if not pending:
            stager.fetching_done()
        if result.events is not None:
            stager.add(result)
        return result

    try:
        processed = list(await asyncio.gather(*(partition_done(p) for p in survey.partitions)))
    except BaseException:
        stager.abandon()
        raise
    board.finish()
    # What is left can take seconds on a long backfill, with nothing on the line to count.
    board.say("fetched; storing what is left, then the analytics and the report")
    reused = [
        (partition, result.stats.fetched_at)
        for partition, result in zip(survey.partitions, processed, strict=True)
        if from_cache(result.stats)
    ]
    revisions: list[Processed] = []
    if reused:
        # A partition from the cache misses what the service revised since it was fetched: one
        # `updatedafter` query over the reused span brings that.
        span = Window(min(p.start for p, _ in reused), max(p.end for p, _ in reused))
        revisions.append(await process(span, "revisions", min(fetched for _, fetched in reused)))
    for result in processed + revisions:
        if not from_cache(result.stats):
            stats.add(result.stats)
    cached = len(reused)
    revised = sum(result.stats.events for result in revisions)
    loading, working, working_fmt = await stager.close()

    record = RunRecord(
        run_id=run_id,
        started_at=started_at,
        window=window,
        base_url=request.client.base_url,
        min_magnitude=request.min_magnitude,
        partitions=len(survey.partitions),
        partitions_cached=cached,
        revised_events=revised,
        max_allowed=survey.max_allowed,
        stats=stats,
        code_version=CODE_VERSION,
        extracts=[result.ref for result in processed if result.events is not None],
    )
    # The revisions load after the partitions: on a tie of `updated` the later arrival wins.
    loading += revisions
    database, report, counts = await load.aio(
        [r.events for r in loading], [r.rejects for r in loading], record, working, fmt,
        working_fmt,
    )  # fmt: skip
    if stager.staged:
        discard_local(working.path)  # the last working copy, now in the database
    for result in loading:
        discard_local(result.events.uri)
    if archive:
        # Last: only a run whose outputs are all in place replaces the archive.
        await write_archive.aio(database, archive, state.seen)
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
            partitions_cached=cached,
            partitions_staged=stager.staged,
            revised_events=revised,
            max_allowed=survey.max_allowed,
            requests=stats.requests,
            retries=stats.retries,
            splits=stats.splits,
            bytes_received=stats.bytes_received,
        ),
    )
