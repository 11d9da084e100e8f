"""Extract: one partition (time window) from the FDSN service into typed Arrow tables.

A partition is fetched in time order with ``limit`` set to the service's search limit, so an
over-full window can never trigger the "exceeds search limit" 400. A page that comes back as
large as the limit may have been truncated silently, so it is never taken as complete: the
window is split at the page's last event and the rest fetched again, until a page holds fewer
events than the limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass

import flyte
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from flyte.io import DataFrame

from pipelines.clean import Cleaned, clean_body
from pipelines.envs import worker
from pipelines.errors import BadBody, QuakecatError
from pipelines.fdsn.client import ClientSettings, FdsnClient, FetchStats, client_for
from pipelines.plan import Window, partition_grid, service_time
from pipelines.task_fields import default
from schemas.events import SCHEMA_VERSION


@dataclass(frozen=True)
class FetchRequest:
    client: ClientSettings
    min_magnitude: float | None = default(None)


@dataclass(frozen=True)
class Source:
    """What a partition's content depends on: the cache key of an extract, with its window.

    Client settings (timeouts, politeness) change how we fetch, not what: they stay out.
    """

    base_url: str
    min_magnitude: float | None
    schema_version: int = default(SCHEMA_VERSION)

    @classmethod
    def of(cls, request: FetchRequest) -> Source:
        return cls(request.client.base_url, request.min_magnitude)


@dataclass
class Plan:
    partitions: list[Window]
    max_allowed: int
    expected_events: int
    stats: FetchStats


class _CountAnswer(msgspec.Struct):
    count: int
    maxAllowed: int = 20_000


_count_answer = msgspec.json.Decoder(_CountAnswer)


def _decode_count(body: bytes) -> _CountAnswer:
    try:
        return _count_answer.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise BadBody(f"not a count answer ({exc})") from None


def _params(
    window: Window, min_magnitude: float | None, updated_after: dt.datetime | None = None
) -> dict[str, str]:
    params = {"starttime": service_time(window.start), "endtime": service_time(window.end)}
    if min_magnitude is not None:
        params["minmagnitude"] = repr(min_magnitude)
    if updated_after is not None:
        params["updatedafter"] = service_time(updated_after)
    return params


def plan_window(client: FdsnClient, window: Window, min_magnitude: float | None) -> Plan:
    """One count for the whole window teaches the search limit; the grid needs nothing else."""
    stats = FetchStats()
    answer = client.get("count", _params(window, min_magnitude), _decode_count, stats)
    if answer.maxAllowed < 1:
        raise QuakecatError(
            f"{client.base_url}/count reported a search limit of {answer.maxAllowed}"
        )
    return Plan(partition_grid(window), answer.maxAllowed, answer.count, stats)


def fetch_partition(
    client: FdsnClient,
    partition: Window,
    min_magnitude: float | None,
    max_allowed: int,
    stats: FetchStats,
    updated_after: dt.datetime | None = None,
) -> Cleaned:
    cursor, pages = partition.start, []
    while True:
        params = {
            **_params(Window(cursor, partition.end), min_magnitude, updated_after),
            "orderby": "time-asc",
            "limit": str(max_allowed),
        }
        page = client.get(
            "query", params, lambda body, key=partition.key: clean_body(body, key), stats
        )
        if page.received < max_allowed:
            pages.append(page)
            break
        # A page as large as the limit may have been cut short silently. In time order it holds
        # every event before its last event's millisecond: keep those and carry on from that
        # millisecond, so nothing fetched is thrown away and nothing is lost.
        stats.splits += 1
        times = page.events["time"]
        last = pc.max(times)
        if not last.is_valid or last.as_py() <= cursor:
            raise QuakecatError(
                f"{partition.key}: more than {max_allowed} events from {service_time(cursor)}"
                " on could not be told apart by time; lower the window or ask the operators"
            )
        pages.append(Cleaned(page.events.filter(pc.less(times, last)), page.rejects))
        cursor = last.as_py()
    events = pa.concat_tables([p.events for p in pages])
    # The service's endtime is inclusive; the window's end is not. An event on the boundary
    # belongs to the next partition, which fetches it too.
    inside = pc.and_(
        pc.greater_equal(
            events["time"], pa.scalar(partition.start, events.schema.field("time").type)
        ),
        pc.less(events["time"], pa.scalar(partition.end, events.schema.field("time").type)),
    )
    return Cleaned(events.filter(inside), pa.concat_tables([p.rejects for p in pages]))


@worker.task
def plan(window: Window, request: FetchRequest, known_max_allowed: int | None = None) -> Plan:
    """The partition grid, and the search limit: counted, unless the archive already knows it."""
    if known_max_allowed is not None:
        return Plan(partition_grid(window), known_max_allowed, -1, FetchStats())
    return plan_window(client_for(request.client), window, request.min_magnitude)


@worker.task(cache=flyte.Cache("auto", ignored_inputs=("client", "max_allowed", "store")))
def extract(
    partition: Window,
    source: Source,
    generation: str,
    client: ClientSettings,
    max_allowed: int,
    store: str = "",
    updated_after: dt.datetime | None = None,
) -> tuple[DataFrame, DataFrame, FetchStats]:
    """One partition, cached by Flyte on (window, source, generation, updated_after).

    ``generation`` is "settled" for a window that can no longer change, so its entry is reused
    by every later run; otherwise it names the archive's last successful run, so a run that is
    interrupted and started again reuses what it had already fetched, and nothing more. Events
    go on as a reference (Parquet under ``store`` when set, else the run's raw data), so the
    driver never holds a partition's rows. A cache entry only points at its outputs, so both
    tables live in the store, which outlives the run.
    """
    stats = FetchStats()
    cleaned = fetch_partition(
        client_for(client), partition, source.min_magnitude, max_allowed, stats, updated_after
    )
    stats.events = cleaned.received
    place = stored_at(store, generation, partition, source)
    events = DataFrame.from_df(cleaned.events, uri=place and f"{place}/events")
    rejects = DataFrame.from_df(cleaned.rejects, uri=place and f"{place}/rejects")
    return events, rejects, stats


SETTLED = "settled"


def stored_at(store: str, generation: str, partition: Window, source: Source) -> str | None:
    """A place for a partition's events that outlives the run (and so its cache entry).

    Named by the partition and, after it, by this write alone: two runs that miss the cache for
    the same partition at once (two archives filled side by side) each write their own files,
    where one folder for both had a task read the other's half-written Parquet.
    """
    if not store:
        return None
    digest = hashlib.sha256(repr((partition.key, source)).encode()).hexdigest()[:24]
    return f"{store}/{generation}/{digest}-{uuid.uuid4().hex[:12]}"
