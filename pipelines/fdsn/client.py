"""The one HTTP client for FDSN event services: timeouts, retries, politeness, body checks.

Every extract task of a run shares one client per process, so the politeness budget (requests
in flight, requests per five minutes) holds across all partitions, as the USGS operators ask.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import IncompleteRead, MaxRetryError, NameResolutionError
from urllib3.util.retry import Retry

from pipelines.errors import BadBody, QuakecatError, UsageError
from pipelines.task_fields import default
from pipelines.version import USER_AGENT

T = TypeVar("T")
log = logging.getLogger(__name__)

USGS_BASE_URL = "https://earthquake.usgs.gov/fdsnws/event/1"
CHECK_BASE_URL = (
    f"check --base-url: it must be the root of an FDSN event service, such as {USGS_BASE_URL}"
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# An explicit "no data" answer (FDSN nodata=204) is an empty collection, not a broken body.
_EMPTY_COLLECTION = b'{"type":"FeatureCollection","features":[]}'


@dataclass(frozen=True)
class ClientSettings:
    base_url: str = default(USGS_BASE_URL)
    connect_timeout_s: float = default(10.0)
    # Local Flyte does not enforce task timeouts: this is the only guard against a hung answer.
    read_timeout_s: float = default(120.0)
    max_attempts: int = default(6)
    backoff_s: float = default(1.0)
    # Caps every single wait, Retry-After included, so the total wait is <= attempts x this.
    max_backoff_s: float = default(60.0)
    max_in_flight: int = default(4)
    max_per_5min: int = default(500)
    max_body_bytes: int = default(256 * 1024 * 1024)


def _now_ms() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class FetchStats:
    # When the fetch happened: a cached extract hands back the stats of the run that fetched it.
    # Milliseconds, as every timestamp the database stores (the archive matches on it).
    fetched_at: dt.datetime = field(default_factory=_now_ms)
    requests: int = default(0)
    retries: int = default(0)
    splits: int = default(0)
    bytes_received: int = default(0)
    events: int = default(0)

    def add(self, other: FetchStats) -> None:
        self.events += other.events
        self.requests += other.requests
        self.retries += other.retries
        self.splits += other.splits
        self.bytes_received += other.bytes_received


def validate_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--base-url must be an http(s) URL such as {USGS_BASE_URL}, got {url!r}")
    return url.rstrip("/")


class _Policy(Retry):
    """urllib3's retry policy with two house rules: every retry waits at least ``backoff_factor``
    (also after ``Retry-After: 0``), and no wait exceeds ``backoff_max`` (a server asking for an
    hour does not stall a run for an hour)."""

    def get_backoff_time(self) -> float:
        return min(self.backoff_max, max(self.backoff_factor, super().get_backoff_time()))

    def get_retry_after(self, response) -> float | None:
        asked = super().get_retry_after(response)
        return None if asked is None else min(asked, self.backoff_max)

    def wait_s(self, response=None) -> float:
        """What ``sleep(response)`` would wait, worked out beforehand so it can be announced:
        the Retry-After asked for (a 0 falls back to the backoff), else the backoff."""
        if self.respect_retry_after_header and response is not None:
            asked = self.get_retry_after(response)
            if asked:
                return asked
        return max(0.0, self.get_backoff_time())


class PolitenessBudget:
    """At most ``max_in_flight`` requests at once and ``max_per_window`` starts per window."""

    def __init__(self, max_in_flight: int, max_per_window: int, window_s: float = 300.0):
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._starts: collections.deque[float] = collections.deque()
        self._max_per_window = max_per_window
        self._window_s = window_s
        self._lock = threading.Lock()
        self._announced_until = 0.0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._slots:
            self._wait_for_rate()
            yield

    def _wait_for_rate(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._starts and self._starts[0] <= now - self._window_s:
                    self._starts.popleft()
                if len(self._starts) < self._max_per_window:
                    self._starts.append(now)
                    return
                wait = self._starts[0] + self._window_s - now
                # Said once per hold-up, not by every thread that waits in it: a long backfill
                # can stand still here for minutes, which would look like a hang. Once the
                # budget is spent, starts free up one at a time: those short waits go unsaid.
                announce = wait >= 1.0 and now >= self._announced_until
                if announce:
                    self._announced_until = now + wait
            if announce:
                log.warning(
                    "%d requests started in the last %s s, as many as --max-per-5min allows;"
                    " the next starts in %s s",
                    self._max_per_window, _seconds(self._window_s), _seconds(wait),
                )  # fmt: skip
            time.sleep(wait)


class FdsnClient:
    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.base_url = validate_base_url(settings.base_url)
        self._budget = PolitenessBudget(settings.max_in_flight, settings.max_per_5min)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        # Size the pool to the budget so threads never queue inside urllib3 unseen.
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=settings.max_in_flight, max_retries=0
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._policy = _Policy(
            total=settings.max_attempts - 1,
            backoff_factor=settings.backoff_s,
            backoff_max=settings.max_backoff_s,
            backoff_jitter=settings.backoff_s,
            status_forcelist=RETRY_STATUSES,
            respect_retry_after_header=True,
            raise_on_status=False,
        )

    def get(
        self, endpoint: str, params: dict[str, str], decode: Callable[[bytes], T], stats: FetchStats
    ) -> T:
        """GET ``{base}/{endpoint}`` and decode it, retrying transport, status and body faults."""
        url = f"{self.base_url}/{endpoint}"
        params = {"format": "geojson", **params}
        policy = self._policy
        while True:
            response = None
            with self._budget.slot():
                stats.requests += 1
                try:
                    response = self._session.get(
                        url,
                        params=params,
                        timeout=(self.settings.connect_timeout_s, self.settings.read_timeout_s),
                        stream=True,
                    )
                    body = self._read(response, url)
                    stats.bytes_received += len(body)
                    problem: Exception | None = None
                except requests.RequestException as exc:
                    problem = exc
            retry_after_source = None
            if problem is None and response is not None:
                status = response.status_code
                if status in RETRY_STATUSES:
                    problem = QuakecatError(f"HTTP {status}")
                    retry_after_source = response.raw
                elif status == 204:
                    return decode(_EMPTY_COLLECTION)
                elif _is_web_page(response):
                    # A site's, a portal's or a proxy's page, not the service: asking again
                    # cannot help.
                    raise QuakecatError(
                        f"{response.url} answered HTTP {status} with a web page"
                        f"{_page_title(body)}, not FDSN GeoJSON; {CHECK_BASE_URL}"
                    )
                elif status == 200:
                    try:
                        return decode(body)
                    except BadBody as exc:
                        problem = exc
                else:
                    hint = f"; {CHECK_BASE_URL}" if status == 404 else ""
                    raise QuakecatError(
                        f"{response.url} answered HTTP {status}: {_service_message(body)}{hint}"
                    )
            try:
                if retry_after_source is not None:
                    policy = policy.increment("GET", url, response=retry_after_source)
                else:
                    policy = policy.increment("GET", url, error=problem)
            except MaxRetryError:
                raise QuakecatError(
                    f"{url} failed after {_attempts(self.settings.max_attempts)}; "
                    f"last error: {_describe(problem)}. {_advice(problem)}"
                ) from None
            stats.retries += 1
            wait = policy.wait_s(retry_after_source)
            # A retry can wait a minute (a Retry-After, or the backoff after a few failures):
            # said as it happens, the run is seen waiting, not hanging.
            log.warning(
                "%s%s: %s; retrying in %s s (attempt %d of %d)",
                url, _window_of(params), _describe(problem), _seconds(wait),
                len(policy.history) + 1, self.settings.max_attempts,
            )  # fmt: skip
            time.sleep(wait)

    def _read(self, response: requests.Response, url: str) -> bytes:
        cap = self.settings.max_body_bytes
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise QuakecatError(_too_large(url, cap))
        chunks, size = [], 0
        with response:
            for chunk in response.iter_content(chunk_size=1 << 20):
                size += len(chunk)
                if size > cap:
                    raise QuakecatError(_too_large(url, cap))
                chunks.append(chunk)
        body = b"".join(chunks)
        if declared is not None and declared.isdigit() and len(body) < int(declared):
            raise requests.exceptions.ChunkedEncodingError(
                f"body truncated: {len(body):,} of {int(declared):,} bytes"
            )
        return body


def _is_web_page(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/html"


def _page_title(body: bytes) -> str:
    found = re.search(rb"<title[^>]*>(.*?)</title>", body[:4096], re.IGNORECASE | re.DOTALL)
    title = " ".join(found.group(1).decode("utf-8", "replace").split())[:80] if found else ""
    return f' ("{title}")' if title else ""


def _too_large(url: str, cap: int) -> str:
    return (
        f"{url} sent more than {cap:,} bytes; refusing it. Narrow the window or raise --max-body-mb"
    )


def _service_message(body: bytes) -> str:
    """USGS errors read "Error 400: Bad Request", a blank line, then the reason: keep both."""
    lines = [line.strip() for line in body.decode("utf-8", "replace").splitlines() if line.strip()]
    return ": ".join(lines[:2])[:300] or "(empty body)"


def _window_of(params: dict[str, str]) -> str:
    """Which request of a run it was: the window it asked for (a partition, or what is left
    of one after a full page)."""
    if "starttime" not in params:
        return ""
    return f" ({params['starttime']} to {params.get('endtime', '...')})"


def _seconds(s: float) -> str:
    return f"{s:.0f}" if s >= 10 else f"{s:.2g}"


def _attempts(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"


def _describe(problem: Exception | None) -> str:
    if isinstance(problem, requests.exceptions.Timeout):
        return "timed out"
    if _unresolved(problem):
        return "could not resolve the host name"
    cut = _cut_short(problem)
    if cut is not None:
        whole = cut.partial + cut.expected
        return f"the connection closed {cut.partial:,} bytes into a {whole:,}-byte answer"
    if isinstance(problem, requests.exceptions.ConnectionError) and not isinstance(
        problem, requests.exceptions.ChunkedEncodingError
    ):
        return "could not connect"
    return str(problem) if problem else "unknown"


def _advice(problem: Exception | None) -> str:
    if _unresolved(problem):
        return "Check --base-url and this machine's network"
    return "Check the service or try again later"


def _cut_short(problem: Exception | None) -> IncompleteRead | None:
    """The answer's bytes as urllib3 counted them when the connection closed before its end."""
    if not isinstance(problem, requests.exceptions.ChunkedEncodingError):
        return None
    inner = problem.args[0] if problem.args else None
    return next((a for a in getattr(inner, "args", ()) if isinstance(a, IncompleteRead)), None)


def _unresolved(problem: Exception | None) -> bool:
    """No address for the host: a mistyped --base-url, or no network (or DNS) here."""
    failure = problem.args[0] if isinstance(problem, requests.ConnectionError) else None
    return isinstance(getattr(failure, "reason", None), NameResolutionError)


@functools.cache
def client_for(settings: ClientSettings) -> FdsnClient:
    """One client per settings per process: every partition of a run shares its budget."""
    return FdsnClient(settings)
