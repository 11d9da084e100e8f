"""Extract: one partition (time window) from the FDSN service into typed Arrow tables.

A partition is fetched with ``limit`` set to the service's search limit, so an over-full window
can never trigger the "exceeds search limit" 400. A page that comes back as large as the limit
may have been truncated silently, so it is never taken as complete: the window is halved and
each half fetched again, until every page holds fewer events than the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from flyte.io import DataFrame

from pipelines.clean import Cleaned, clean_body
from pipelines.envs import worker
from pipelines.errors import BadBody, QuakecatError
from pipelines.fdsn.client import ClientSettings, FdsnClient, FetchStats, client_for
from pipelines.plan import Window, partition_grid, service_time


@dataclass(frozen=True)
class FetchRequest:
    client: ClientSettings
    min_magnitude: float | None = None


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


def _params(window: Window, min_magnitude: float | None) -> dict[str, str]:
    params = {"starttime": service_time(window.start), "endtime": service_time(window.end)}
    if min_magnitude is not None:
        params["minmagnitude"] = repr(min_magnitude)
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
) -> Cleaned:
    pending, pages = [partition], []
    while pending:
        window = pending.pop()
        params = {
            **_params(window, min_magnitude),
            "orderby": "time-asc",
            "limit": str(max_allowed),
        }
        page = client.get(
            "query", params, lambda body, key=partition.key: clean_body(body, key), stats
        )
        if page.received >= max_allowed:
            stats.splits += 1
            try:
                first, second = window.halves()
            except ValueError as exc:
                raise QuakecatError(f"{exc}: more than {max_allowed} events in it") from None
            pending += [second, first]
            continue
        pages.append(page)
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
def plan(window: Window, request: FetchRequest) -> Plan:
    return plan_window(client_for(request.client), window, request.min_magnitude)


@worker.task
def extract(
    partition: Window, request: FetchRequest, max_allowed: int
) -> tuple[DataFrame, pa.Table, FetchStats]:
    """Events go on as a reference (Parquet in the run's raw data), so the driver never holds
    a partition's rows; rejects are few and travel inline."""
    stats = FetchStats()
    cleaned = fetch_partition(
        client_for(request.client), partition, request.min_magnitude, max_allowed, stats
    )
    return DataFrame.from_df(cleaned.events), cleaned.rejects, stats
