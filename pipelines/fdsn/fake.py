"""An offline twin of the USGS FDSN event service, for tests and local runs.

A real HTTP server on 127.0.0.1 serving a deterministic generated catalogue with the
USGS geojson wire format, the 20,000-event limit, and a schedule of injected faults
(503, 429, truncated, zero-byte, slow, latin-1 and web-page bodies), so that the pipeline's
retry and validation paths can be exercised without the internet. A per-request latency
and a per-answer transfer rate cap make it behave like a distant service for benchmarks.
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

BASE_PATH = "/fdsnws/event/1"
API_VERSION = "1.14.1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_LN10 = math.log(10)
_PARAMS = frozenset(
    {"format", "starttime", "endtime", "minmagnitude", "orderby", "limit", "offset", "updatedafter"}
)

# (town, region, lon, lat, net, tz minutes, weight). Weights mimic the real mix, where
# Alaska and California dominate an all-magnitude catalogue; a few names are non-ASCII
# but latin-1 encodable so the latin-1 fault yields genuinely invalid UTF-8.
_SITES = (
    ("Anchorage", "Alaska", -149.9, 61.2, "ak", -540, 12),
    ("Petersville", "Alaska", -150.8, 62.5, "ak", -540, 8),
    ("Akutan", "Alaska", -165.8, 54.1, "ak", -540, 4),
    ("Ridgecrest", "CA", -117.67, 35.62, "ci", -480, 10),
    ("Ocotillo Wells", "CA", -116.13, 33.14, "ci", -480, 5),
    ("The Geysers", "CA", -122.8, 38.8, "nc", -480, 8),
    ("Mammoth Lakes", "CA", -118.97, 37.65, "nc", -480, 4),
    ("Pahala", "Hawaii", -155.48, 19.2, "hv", -600, 6),
    ("Maple Valley", "Washington", -122.0, 47.4, "uw", -480, 3),
    ("Magna", "Utah", -112.1, 40.7, "uu", -420, 2),
    ("Stanley", "Idaho", -114.9, 44.2, "mb", -420, 2),
    ("Pawnee", "Oklahoma", -96.8, 36.34, "ok", -360, 3),
    ("Mentone", "Texas", -103.6, 31.7, "tx", -360, 3),
    ("Ponce", "Puerto Rico", -66.6, 18.0, "pr", -240, 3),
    ("Concepción", "Chile", -73.05, -36.83, "us", -240, 2),
    ("Zürich", "Switzerland", 8.54, 47.37, "us", 60, 1),
    ("Reykjavík", "Iceland", -21.9, 64.1, "us", 0, 1),
    ("Iwaki", "Japan", 140.9, 37.05, "us", 540, 3),
    ("Hualien City", "Taiwan", 121.6, 23.97, "us", 480, 2),
    ("Tobelo", "Indonesia", 128.0, 1.7, "us", 540, 3),
    ("Gulf of Alaska", None, -146.0, 57.5, "ak", -540, 1),
    ("Mid-Atlantic Ridge", None, -30.0, 10.0, "us", 0, 1),
    ("south of the Fiji Islands", None, 179.0, -24.0, "us", 720, 1),
    ("Kermadec Islands region", None, -177.5, -30.0, "us", 720, 1),
    ("Ñuble, Chile", None, -72.0, -36.6, "us", -240, 1),
)
_SITE_PICKS = tuple(s for s in _SITES for _ in range(s[6]))
_DIRS = ("N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW")
_CODE_PREFIX = {"nc": "7", "ci": "4", "hv": "7", "uw": "6", "uu": "8", "mb": "8", "ok": "2"}
_TYPES_LOCAL = (",origin,phase-data,", ",focal-mechanism,nearby-cities,origin,phase-data,")
_TYPES_US = (",origin,phase-data,", ",dyfi,losspager,moment-tensor,origin,phase-data,shakemap,")


def _ms(dt: datetime) -> int:
    """Epoch ms of dt; naive datetimes are UTC, as in the FDSN spec."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def _b36(i: int, width: int) -> str:
    digits = ""
    while i:
        i, r = divmod(i, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    return digits.rjust(width, "0")


def _code(net: str, i: int) -> str:
    # Derived from the event's serial number i, so every (net, code) pair, and every id, is unique.
    if net == "us":
        return "7000" + _b36(i, 4)
    if net == "ak":
        return "0" + _b36(i, 7)
    return _CODE_PREFIX.get(net, "0") + f"{i:07d}"


def _num(x: float) -> float | int:
    # USGS writes integral values without a decimal point ("mag":4, depth 14), so parsers
    # must accept ints where floats are expected.
    return int(x) if x == int(x) else x


@dataclass(frozen=True)
class FakeEvent:
    id: str
    time_ms: int
    updated_ms: int
    mag: float | None
    lon: float
    lat: float
    depth: float
    raw: bytes  # the feature, serialised once in USGS wire format


@dataclass(frozen=True)
class Catalogue:
    events: tuple[FakeEvent, ...]  # sorted by time_ms
    _times: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_times", [e.time_ms for e in self.events])

    def select(
        self, start_ms: int, end_ms: int, min_magnitude: float | None = None
    ) -> list[FakeEvent]:
        lo, hi = bisect_left(self._times, start_ms), bisect_left(self._times, end_ms)
        chosen = self.events[lo:hi]
        if min_magnitude is None:
            return list(chosen)
        return [e for e in chosen if e.mag is not None and e.mag >= min_magnitude]

    def count(self, start: datetime, end: datetime, min_magnitude: float | None = None) -> int:
        return len(self.select(_ms(start), _ms(end), min_magnitude))

    def features(
        self, start: datetime, end: datetime, min_magnitude: float | None = None
    ) -> list[dict]:
        return [
            msgspec.json.decode(e.raw) for e in self.select(_ms(start), _ms(end), min_magnitude)
        ]


def _draw(rng: random.Random, mean: float) -> int:
    # A normal approximation of Poisson: cheap, deterministic, and close enough for volume.
    return max(0, round(rng.gauss(mean, math.sqrt(mean)))) if mean > 0 else 0


def _make_event(rng: random.Random, i: int, t: int) -> FakeEvent:
    r = rng.random  # only r() and expovariate below: rng.choice is several times slower
    town, region, lon0, lat0, net, tz, _ = _SITE_PICKS[int(r() * len(_SITE_PICKS))]
    if net == "us":
        mag = 3.8 + r() * 0.4 + rng.expovariate(_LN10)  # teleseismic completeness ~M4
        mag_type = "mww" if mag >= 5.5 else "mb"
        depth = 10.0 if r() < 0.5 else min(700.0, rng.expovariate(1 / 80))
        other = ("ak", "pt", "at", "nc")[int(r() * 4)]
    else:
        mag = -1.0 + r() * 2.5 + rng.expovariate(_LN10)  # local networks see down to ~M-1
        mag_type = "md" if net in ("nc", "hv") and r() < 0.7 else ("Ml" if r() < 0.03 else "ml")
        depth = -3.0 + r() * 30.0 if r() < 0.95 else r() * 150.0
        other = "us"
    mag = round(min(mag, 8.6), 2)
    lon = round(max(-180.0, min(180.0, lon0 + r() - 0.5)), 4)
    lat = round(max(-90.0, min(90.0, lat0 + r() - 0.5)), 4)
    depth = round(depth, 2)
    code = _code(net, i)
    pid = net + code
    ids = [pid]
    if r() < 0.1:  # associated with a second network's solution
        ids.append(other + _code(other, i))
    ids.sort()
    u = r()
    mag_out = None if u < 0.01 else mag
    if u > 0.995:
        place = None
    elif region is None:
        place = town
    else:
        place = f"{int(r() * 80) + 1} km {_DIRS[int(r() * len(_DIRS))]} of {town}, {region}"
    felt = cdi = mmi = alert = None
    if mag >= 3.5 and r() < 0.3:
        felt = int(rng.expovariate(1 / (5 * 2 ** (mag - 3)))) + 1
        cdi = round(min(9.0, mag * 0.9), 1)
        mmi = round(min(9.9, mag * 0.95), 3) if mag >= 4.5 else None
        alert = ("green" if mag < 7 else "yellow") if mag >= 5.5 else None
    if r() < 0.12:  # older or automatic solutions often lack the quality metrics
        nst = dmin = rms = gap = None
    else:
        nst, dmin = int(r() * 120) + 3, round(rng.expovariate(4.0), 4)
        rms, gap = round(r() * 1.2, 2), _num(round(r() * 300, 1))
    x = r()
    etype = (
        "earthquake" if x < 0.96 else ("quarry blast", "explosion", "ice quake")[int(x * 100) % 3]
    )
    updated = t + int(rng.expovariate(1 / 86_400_000) * 3)  # revisions trail by ~days
    mag_txt = "?" if mag_out is None else f"{mag:.1f}"
    props = {
        "mag": None if mag_out is None else _num(mag_out),
        "place": place,
        "time": t,
        "updated": updated,
        "tz": tz if r() < 0.1 else None,
        "url": f"https://earthquake.usgs.gov/earthquakes/eventpage/{pid}",
        "detail": f"https://earthquake.usgs.gov/fdsnws/event/1/query?eventid={pid}&format=geojson",
        "felt": felt,
        "cdi": cdi,
        "mmi": mmi,
        "alert": alert,
        "status": "reviewed" if r() < 0.7 else "automatic",
        "tsunami": 1 if mag >= 6.5 and r() < 0.5 else 0,
        "sig": None if mag_out is None else max(0, int(mag * 100 * abs(mag) / 6.5)),
        "net": net,
        "code": code,
        "ids": "," + ",".join(ids) + ",",
        "sources": "," + ",".join(s[:2] for s in ids) + ",",
        "types": (_TYPES_US if net == "us" else _TYPES_LOCAL)[r() < 0.3],
        "nst": nst,
        "dmin": dmin,
        "rms": rms,
        "gap": gap,
        "magType": mag_type,
        "type": etype,
        "title": f"M {mag_txt} - {place or ''}",
    }
    feature = {
        "type": "Feature",
        "properties": props,
        "geometry": {"type": "Point", "coordinates": [_num(lon), _num(lat), _num(depth)]},
        "id": pid,
    }
    raw = msgspec.json.encode(feature)
    return FakeEvent(pid, t, updated, mag_out, lon, lat, depth, raw)


def generate_catalogue(
    start: datetime,
    end: datetime,
    *,
    per_day: float = 360.0,
    seed: int = 7,
    bursts: Sequence[tuple[datetime, datetime, float]] = (),
) -> Catalogue:
    """A deterministic catalogue over [start, end); bursts add extra_per_day inside their range."""
    rng = random.Random(seed)
    lo_ms, hi_ms = _ms(start), _ms(end)
    spans = [(lo_ms, hi_ms, per_day)] + [(_ms(s), _ms(e), extra) for s, e, extra in bursts]
    times: list[int] = []
    day = lo_ms - lo_ms % _DAY_MS
    while day < hi_ms:
        for s, e, rate in spans:
            a, b = max(day, s, lo_ms), min(day + _DAY_MS, e, hi_ms)
            if a < b:
                times.extend(
                    rng.randrange(a, b) for _ in range(_draw(rng, rate * (b - a) / _DAY_MS))
                )
        day += _DAY_MS
    times.sort()
    return Catalogue(tuple(_make_event(rng, i, t) for i, t in enumerate(times, 1)))


@dataclass
class Faults:
    every_503: int = 0
    every_429: int = 0
    retry_after: str = "1"
    every_truncated: int = 0
    zero_byte_at: frozenset[int] = frozenset()
    slow_at: frozenset[int] = frozenset()
    slow_s: float = 5.0
    latin1_at: frozenset[int] = frozenset()
    # A web page in place of the answer (200, text/html), as a captive portal or a proxy's
    # sign-in page serves.
    html_at: frozenset[int] = frozenset()
    fail_all_status: int = 0

    def pick(self, n: int) -> str | None:
        """The one fault for request n, in the documented priority order."""
        if self.fail_all_status:
            return "fail_all"
        for name, hit in (
            ("503", self.every_503 and n % self.every_503 == 0),
            ("429", self.every_429 and n % self.every_429 == 0),
            ("zero", n in self.zero_byte_at),
            ("truncated", self.every_truncated and n % self.every_truncated == 0),
            ("slow", n in self.slow_at),
            ("latin1", n in self.latin1_at),
            ("html", n in self.html_at),
        ):
            if hit:
                return name
        return None


@dataclass(frozen=True)
class LoggedRequest:
    n: int  # arrival order among query/count requests; 0 for any other path
    path: str
    params: dict[str, str]
    status: int
    bytes_sent: int
    in_flight: int


class _BadRequest(Exception):
    pass


def _param(params: dict[str, str], key: str, parse: Callable[[str], Any]) -> Any:
    if key not in params:
        return None
    try:
        return parse(params[key])
    except ValueError:
        raise _BadRequest(f"Bad Request: Invalid {key} value '{params[key]}'") from None


def _parse_time(value: str) -> int:
    return _ms(datetime.fromisoformat(value))


def _usgs_text(status: int, message: str) -> bytes:
    submitted = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        f"Error {status}: {HTTPStatus(status).phrase}\n{message}\n"
        f"Usage details are available from https://earthquake.usgs.gov/fdsnws/event/1\n"
        f"Request Submitted: {submitted}\nService version: {API_VERSION}\n"
    ).encode()


_HTML = "text/html; charset=utf-8"


def _web_page(title: str) -> bytes:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><title>{title}</title></head>\n'
        f"<body><h1>{title}</h1></body>\n</html>\n"
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    fake: FakeFDSN

    def handle_error(self, request, client_address) -> None:
        # Clients that time out or hang up mid-answer are expected under fault injection;
        # anything else is a bug in the fake and should be loud.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.fake._serve(self)


class FakeFDSN:
    def __init__(
        self,
        catalogue: Catalogue,
        *,
        max_allowed: int = 20000,
        latency_s: float = 0.0,
        rate_bytes_per_s: float | None = None,
        faults: Faults | None = None,
        no_data_status: int = 200,
    ) -> None:
        if rate_bytes_per_s is not None and rate_bytes_per_s <= 0:
            raise ValueError(f"rate_bytes_per_s must be > 0 or None, got {rate_bytes_per_s}")
        self.catalogue = catalogue
        self.max_allowed = max_allowed
        self.latency_s = latency_s
        # Each answer's body goes out at no more than this many bytes per second (per
        # connection, like a server that streams as it renders); None sends it at once.
        self.rate_bytes_per_s = rate_bytes_per_s
        self.faults = faults or Faults()
        # How a query that matches nothing is answered: USGS sends 200 and an empty collection,
        # the FDSN specification's default is 204 with no body.
        self.no_data_status = no_data_status
        self.base_url = ""
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._n = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeFDSN:
        if self._server is None:
            self._server = _Server(("127.0.0.1", 0), _Handler)
            self._server.fake = self
            host, port = self._server.server_address[:2]
            self.base_url = f"http://{host}:{port}{BASE_PATH}"
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> FakeFDSN:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def arrivals(self) -> int:
        """Query and count requests received so far, answered or not (the log has answers)."""
        return self._n

    def requests_to(self, path: str) -> list[LoggedRequest]:
        with self._lock:
            return sorted((r for r in self.log if r.path == path), key=lambda r: r.n)

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()
            self._max_in_flight = 0

    def _serve(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        path = (
            url.path.removeprefix(BASE_PATH + "/") if url.path.startswith(BASE_PATH) else url.path
        )
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        counted = path in ("query", "count")
        with self._lock:
            n = self._n = self._n + counted
            self._in_flight += 1
            in_flight = self._in_flight
            self._max_in_flight = max(self._max_in_flight, in_flight)
            fault = self.faults.pick(n) if counted else None
            faults = self.faults
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            status, ctype, body, headers = self._answer(path, params, h.path, fault, faults)
            sent = len(body) // 2 if fault == "truncated" else len(body)
            with self._lock:
                # Logged before the bytes go out, so a client never sees an unlogged answer.
                self.log.append(
                    LoggedRequest(n if counted else 0, path, params, status, sent, in_flight)
                )
            h.send_response(status)
            if status != 204:  # which has no body to describe
                h.send_header("Content-Type", ctype)
                h.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                h.send_header(k, v)
            if fault == "truncated":
                h.send_header("Connection", "close")
                h.close_connection = True
            h.end_headers()
            self._send_body(h, memoryview(body)[:sent])
        except ConnectionError:
            h.close_connection = True
        finally:
            with self._lock:
                self._in_flight -= 1

    def _send_body(self, h: _Handler, body: memoryview) -> None:
        rate = self.rate_bytes_per_s
        if rate is None:
            h.wfile.write(body)
            h.wfile.flush()
            return
        # Paced against a deadline, not by a sleep per chunk, so write time does not add up: the
        # bytes up to k leave no earlier than k / rate seconds after the headers, and the last
        # byte no earlier than len(body) / rate.
        chunk = max(4096, int(rate / 100))  # ~10 ms of transfer per write
        began = time.monotonic()
        for at in range(0, len(body), chunk):
            part = body[at : at + chunk]
            wait = began + (at + len(part)) / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            h.wfile.write(part)
        h.wfile.flush()

    def _answer(
        self, path: str, params: dict[str, str], raw_url: str, fault: str | None, faults: Faults
    ) -> tuple[int, str, bytes, dict[str, str]]:
        text = "text/plain; charset=utf-8"
        if fault == "fail_all":
            status = faults.fail_all_status
            return status, text, _usgs_text(status, "Service unavailable (fake outage)"), {}
        if fault == "503":
            # From the load balancer in front of the service, as a web page.
            return 503, _HTML, _web_page("503 Service Temporarily Unavailable"), {}
        if fault == "429":
            body = _usgs_text(429, "Too many requests")
            return 429, text, body, {"Retry-After": faults.retry_after}
        if fault == "zero":
            return 200, "application/json", b"", {}
        if fault == "html":
            return 200, _HTML, _web_page("Sign in to continue"), {}
        if fault == "slow":
            time.sleep(faults.slow_s)
        if not raw_url.startswith(BASE_PATH + "/"):
            # Outside the service: the web site around it, whose pages are HTML.
            return 404, _HTML, _web_page("Page Not Found"), {}
        if path not in ("query", "count"):
            return 404, text, _usgs_text(404, f"Not Found: {path}"), {}
        try:
            status, body = self._respond(path, params, raw_url)
        except _BadRequest as e:
            return 400, text, _usgs_text(400, str(e)), {}
        if status != 200:
            return status, text, body, {}
        if fault == "latin1":
            body = body.decode().encode("latin-1", errors="replace")
        return 200, "application/json", body, {}

    def _respond(self, path: str, params: dict[str, str], raw_url: str) -> tuple[int, bytes]:
        unknown = sorted(set(params) - _PARAMS)
        if unknown:
            raise _BadRequest(f"Bad Request: Invalid parameter {unknown[0]}")
        if params.get("format") != "geojson":
            raise _BadRequest("Bad Request: format must be geojson in this fake")
        start, end, updated_after = (
            _param(params, k, _parse_time) for k in ("starttime", "endtime", "updatedafter")
        )
        min_mag = _param(params, "minmagnitude", float)
        limit, offset = _param(params, "limit", int), _param(params, "offset", int)
        orderby = params.get("orderby", "time")
        if orderby not in ("time", "time-asc"):
            raise _BadRequest(f"Bad Request: orderby {orderby} is not supported in this fake")
        if (limit is not None and limit < 1) or (offset is not None and offset < 1):
            raise _BadRequest("Bad Request: limit and offset must be positive")
        events = self.catalogue.select(
            -(2**62) if start is None else start, 2**62 if end is None else end, min_mag
        )
        if updated_after is not None:
            events = [e for e in events if e.updated_ms > updated_after]
        if path == "count":
            return 200, msgspec.json.encode({"count": len(events), "maxAllowed": self.max_allowed})
        if len(events) > self.max_allowed and (limit is None or limit > self.max_allowed):
            msg = (
                f"{len(events)} matching events exceeds search limit of {self.max_allowed}. "
                "Modify the search to match fewer events."
            )
            return 400, _usgs_text(400, msg)
        if orderby == "time":
            events.reverse()
        first = (offset or 1) - 1
        events = events[first : first + limit] if limit is not None else events[first:]
        # Like USGS, limit and offset appear in the metadata only when the request gave them.
        given = {k: v for k, v in (("limit", limit), ("offset", offset)) if v is not None}
        meta = {
            "generated": int(time.time() * 1000),
            "url": self.base_url.removesuffix(BASE_PATH) + raw_url,
            "title": "USGS Earthquakes",
            "status": 200,
            "api": API_VERSION,
            **given,
            "count": len(events),
        }
        head = b'{"type":"FeatureCollection","metadata":' + msgspec.json.encode(meta)
        if not events:
            if self.no_data_status == 204:
                return 204, b""
            return 200, head + b',"features":[]}'  # the real empty answer has no bbox key
        cols = list(zip(*((e.lon, e.lat, e.depth) for e in events), strict=True))
        bbox = msgspec.json.encode([_num(min(c)) for c in cols] + [_num(max(c)) for c in cols])
        features = b",\n".join(e.raw for e in events)
        return 200, head + b',"features":[' + features + b'],"bbox":' + bbox + b"}"
