"""The progress line: drawn on a terminal, silent elsewhere."""

from __future__ import annotations

import io

from pipelines.fdsn.client import FetchStats
from pipelines.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_per_partition_on_a_terminal():
    screen = _Terminal()
    board = Progress(3, enabled=True, stream=screen)
    board.advance(FetchStats(requests=2, retries=1, events=10, bytes_received=2**20), cached=False)
    board.advance(FetchStats(requests=9, events=99), cached=True)
    board.finish()
    lines = screen.getvalue().split("\r")[1:]
    assert [line.split("  ")[:4] for line in lines] == [
        ["partitions 1/3 (0 cached)", "events 10", "requests 2", "retries 1"],
        ["partitions 2/3 (1 cached)", "events 10", "requests 2", "retries 1"],
    ]
    assert screen.getvalue().endswith("\n")


def test_progress_is_silent_when_not_a_terminal_or_disabled():
    piped, quiet = io.StringIO(), _Terminal()
    for board in (
        Progress(2, enabled=True, stream=piped),
        Progress(2, enabled=False, stream=quiet),
    ):
        board.advance(FetchStats(requests=1), cached=False)
        board.finish()
    assert (piped.getvalue(), quiet.getvalue()) == ("", "")
