"""The progress line: drawn on a terminal, silent elsewhere."""

from __future__ import annotations

import io

from pipelines.fdsn.client import FetchStats
from pipelines.progress import Progress
from tests.conftest import Terminal


def test_progress_redraws_one_line_per_partition_on_a_terminal():
    screen = Terminal()
    board = Progress(3, enabled=True, stream=screen)
    board.start()
    board.advance(FetchStats(requests=2, retries=1, events=10, bytes_received=2**20), cached=False)
    board.advance(FetchStats(requests=9, events=99), cached=True)
    board.finish()
    lines = screen.getvalue().split("\r")[1:]
    assert [line.split("  ")[:4] for line in lines] == [
        ["partitions 0/3 (0 cached)", "events 0", "requests 0", "retries 0"],
        ["partitions 1/3 (0 cached)", "events 10", "requests 2", "retries 1"],
        ["partitions 2/3 (1 cached)", "events 10", "requests 2", "retries 1"],
    ]
    assert screen.getvalue().endswith("\n")
    board.say("fetched; storing what is left")
    assert screen.getvalue().endswith("retries 1  1.0 MiB  0 s \nfetched; storing what is left\n")


def test_time_left_follows_the_pace_of_the_fetched_partitions():
    screen, now = Terminal(), [100.0]
    board = Progress(6, enabled=True, stream=screen, clock=lambda: now[0])
    for at, cached in [(104.0, False), (104.0, True), (110.0, False), (112.0, False)]:
        now[0] = at
        board.advance(FetchStats(requests=1), cached=cached)
    for _ in range(2):
        board.advance(FetchStats(requests=1), cached=True)
    lines = screen.getvalue().split("\r")[1:]
    assert [line.split("MiB  ")[1].strip() for line in lines] == [
        "4 s",  # one partition fetched says too little
        "4 s",
        "10 s  ~15 s left",  # 5 s per fetched partition, 3 to go
        "12 s  ~8 s left",  # 4 s per fetched partition, 2 to go
        "12 s  ~4 s left",
        "12 s",  # done
    ]


def test_progress_is_silent_when_not_a_terminal_or_disabled():
    piped, quiet = io.StringIO(), Terminal()
    for board in (
        Progress(2, enabled=True, stream=piped),
        Progress(2, enabled=False, stream=quiet),
    ):
        board.start()
        board.advance(FetchStats(requests=1), cached=False)
        board.finish()
        board.say("fetched")
    assert (piped.getvalue(), quiet.getvalue()) == ("", "")
