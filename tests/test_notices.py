"""Notices: the pipeline's warnings as lines of the CLI's own, or in the task log."""

from __future__ import annotations

import io
import logging

import pytest

from pipelines.notices import shown_on
from tests.conftest import Terminal

# A module of the pipeline logs under its own name, as pipelines.fdsn.client does.
client_log = logging.getLogger("pipelines.fdsn.client")


def test_a_notice_is_a_line_of_its_own_over_the_progress_line_on_a_terminal():
    screen, piped = Terminal(), io.StringIO()
    screen.write("\rpartitions 1/3 (0 cached)  events 10 ")
    for stream in (screen, piped):
        with shown_on(stream):
            client_log.warning("%s: HTTP 503; retrying in %s s", "http://x/query", "1")
    assert screen.getvalue() == (
        "\rpartitions 1/3 (0 cached)  events 10 \r\x1b[Kquakecat: http://x/query: HTTP 503;"
        " retrying in 1 s\n"
    )
    assert piped.getvalue() == "quakecat: http://x/query: HTTP 503; retrying in 1 s\n"


def test_a_notice_is_shown_whatever_level_flyte_left_the_root_logger_at():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)  # what flyte.init does in a quiet local run
    try:
        stream = io.StringIO()
        with shown_on(stream):
            client_log.info("not a notice")
            client_log.warning("a notice")
    finally:
        root.setLevel(level)
    assert stream.getvalue() == "quakecat: a notice\n"


def test_outside_a_local_run_notices_reach_the_root_logger(caplog: pytest.LogCaptureFixture):
    # On a cluster nothing is installed: the task's log gets the records, as any library's.
    stream = io.StringIO()
    with shown_on(stream):
        pass
    with caplog.at_level(logging.WARNING):
        client_log.warning("after the run")
    assert stream.getvalue() == ""
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("pipelines.fdsn.client", "WARNING", "after the run")
    ]
