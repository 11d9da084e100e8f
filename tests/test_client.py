"""The HTTP client's house rules, against the fake service on 127.0.0.1."""

from __future__ import annotations

import logging
import re
import time

import pytest
from urllib3 import HTTPResponse

from pipelines.errors import QuakecatError, UsageError
from pipelines.extract import plan_window
from pipelines.fdsn.client import (
    USGS_BASE_URL,
    ClientSettings,
    FdsnClient,
    FetchStats,
    PolitenessBudget,
    _Policy,
    validate_base_url,
)
from pipelines.fdsn.fake import FakeFDSN, Faults
from pipelines.plan import Window
from pipelines.version import USER_AGENT
from tests.conftest import utc


def _policy(backoff: float = 0.5, cap: float = 4.0) -> _Policy:
    return _Policy(total=5, backoff_factor=backoff, backoff_max=cap, status_forcelist={429})


def _answer(retry_after: str) -> HTTPResponse:
    return HTTPResponse(status=429, headers={"Retry-After": retry_after})


def test_retry_after_zero_still_waits_the_minimum_backoff():
    policy = _policy().increment("GET", "/q", response=_answer("0"))
    assert not policy.sleep_for_retry(_answer("0"))  # so urllib3 falls back to the backoff
    assert policy.get_backoff_time() == 0.5


def test_retry_after_seconds_and_http_dates_are_honoured_up_to_the_cap():
    policy = _policy(cap=4.0)
    assert policy.get_retry_after(_answer("2")) == 2.0
    assert policy.get_retry_after(_answer("3600")) == 4.0
    assert policy.get_retry_after(_answer("Wed, 21 Oct 2099 07:28:00 GMT")) == 4.0


def test_the_announced_wait_is_the_retry_after_asked_for_else_the_backoff():
    policy = _policy(backoff=0.5, cap=4.0).increment("GET", "/q", response=_answer("2"))
    assert policy.wait_s(_answer("2")) == 2.0
    assert policy.wait_s(_answer("3600")) == 4.0
    assert policy.wait_s(_answer("0")) == 0.5  # as urllib3's sleep: a 0 falls back to it
    assert policy.wait_s() == 0.5


def test_backoff_doubles_and_is_capped():
    policy = _policy(backoff=0.5, cap=4.0)
    waits = []
    for _ in range(5):
        policy = policy.increment("GET", "/q", response=_answer("0"))
        waits.append(policy.get_backoff_time())
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize("url", ["ftp://host/fdsn", "earthquake.usgs.gov", "http://", "file:///x"])
def test_only_http_urls_are_accepted(url):
    with pytest.raises(UsageError, match="--base-url must be an http"):
        validate_base_url(url)


def test_an_answer_over_the_size_cap_is_refused(service: FakeFDSN):
    client = FdsnClient(ClientSettings(base_url=service.base_url, max_body_bytes=10_000))
    window = Window(utc(2024, 5, 1), utc(2024, 5, 2))
    with pytest.raises(QuakecatError, match=r"sent more than 10,000 bytes; refusing it"):
        client.get(
            "query", {"starttime": "2024-05-01", "endtime": "2024-05-02"}, bytes, FetchStats()
        )
    assert plan_window(client, window, None).max_allowed == 20_000  # small answers still pass


def test_a_non_retryable_status_fails_at_once_with_the_service_message(service: FakeFDSN):
    client = FdsnClient(ClientSettings(base_url=service.base_url))
    stats = FetchStats()
    with pytest.raises(QuakecatError, match=r"answered HTTP 400: .*minmagnitude"):
        client.get("query", {"minmagnitude": "big"}, bytes, stats)
    assert (stats.requests, stats.retries) == (1, 0)


def test_a_web_page_in_place_of_an_answer_fails_at_once_naming_the_option(service: FakeFDSN):
    service.set_faults(Faults(html_at=frozenset({1})))
    client = FdsnClient(ClientSettings(base_url=service.base_url))
    with pytest.raises(QuakecatError) as caught:
        plan_window(client, Window(utc(2024, 5, 1), utc(2024, 5, 2)), None)
    assert str(caught.value) == (
        f"{service.base_url}/count?format=geojson&starttime=2024-05-01T00%3A00%3A00.000"
        '&endtime=2024-05-02T00%3A00%3A00.000 answered HTTP 200 with a web page ("Sign in to'
        ' continue"), not FDSN GeoJSON; check --base-url: it must be the root of an FDSN event'
        f" service, such as {USGS_BASE_URL}"
    )
    assert [(r.path, r.status) for r in service.log] == [("count", 200)]


def test_a_service_path_that_is_not_there_names_the_option(service: FakeFDSN):
    client = FdsnClient(ClientSettings(base_url=service.base_url))
    with pytest.raises(QuakecatError) as caught:
        client.get("querry", {}, bytes, FetchStats())
    assert str(caught.value) == (
        f"{service.base_url}/querry?format=geojson answered HTTP 404: Error 404: Not Found: "
        "Not Found: querry; check --base-url: it must be the root of an FDSN event service, such"
        f" as {USGS_BASE_URL}"
    )


def test_a_transient_status_is_retried_even_as_a_web_page(service: FakeFDSN):
    service.set_faults(Faults(every_503=2))  # the fake's 503 is a load balancer's HTML page
    client = FdsnClient(ClientSettings(base_url=service.base_url, backoff_s=0.01))
    stats = FetchStats()
    for _ in range(2):
        client.get("count", {}, bytes, stats)
    assert [(r.path, r.status) for r in service.log] == [
        ("count", 200),
        ("count", 503),
        ("count", 200),
    ]
    assert (stats.requests, stats.retries) == (3, 1)


def test_a_host_without_an_address_is_named_as_such():
    # .invalid is reserved (RFC 2606): no resolver has an address for it.
    base = "http://no-such-host.invalid/fdsnws/event/1"
    client = FdsnClient(ClientSettings(base_url=base, max_attempts=1))
    with pytest.raises(QuakecatError) as caught:
        client.get("count", {}, bytes, FetchStats())
    assert str(caught.value) == (
        f"{base}/count failed after 1 attempt; last error: could not resolve the host name."
        " Check --base-url and this machine's network"
    )


def test_user_agent_names_quakecat_and_its_version():
    assert USER_AGENT.startswith("quakecat/0.1.0 ")


def test_the_rate_budget_holds_a_start_back_until_the_window_has_room(caplog):
    budget = PolitenessBudget(max_in_flight=4, max_per_window=2, window_s=1.2)
    began = time.monotonic()
    starts = []
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with budget.slot():
                starts.append(time.monotonic() - began)
    assert starts[1] < 0.5 <= 1.2 <= starts[2]
    # The hold-up is said, once: a long backfill can stand still here for minutes.
    (notice,) = [r.getMessage() for r in caplog.records]
    said = re.fullmatch(
        r"2 requests started in the last 1\.2 s, as many as --max-per-5min allows; the next"
        r" starts in (?P<wait>[\d.]+) s",
        notice,
    )
    assert said, notice
    # What was left of the window when the third start asked for a slot.
    assert 0.2 < float(said["wait"]) <= 1.2
