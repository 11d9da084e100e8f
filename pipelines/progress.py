"""A one-line progress display for long local runs: partitions, events, requests, retries, and
the time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from pipelines.fdsn.client import FetchStats


class Progress:
    """Redraws one line on a terminal; silent when disabled or when the stream is not a TTY."""

    def __init__(
        self,
        total: int,
        *,
        enabled: bool,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total, self.done, self.cached = total, 0, 0
        self.stats = FetchStats()
        self.clock = clock
        self.began = clock()
        self.drawn = False

    def start(self) -> None:
        """The line before the first partition is in: the run is under way, over how many."""
        self._draw()

    def advance(self, stats: FetchStats, *, cached: bool) -> None:
        self.done += 1
        if cached:
            self.cached += 1
        else:
            self.stats.add(stats)
        self._draw()

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()

    def say(self, line: str) -> None:
        """A line of its own, for a step that has no count to show."""
        if self.enabled:
            self.stream.write(f"{line}\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        s, elapsed = self.stats, self.clock() - self.began
        self.drawn = True
        self.stream.write(
            f"\rpartitions {self.done}/{self.total} ({self.cached} cached)  events {s.events:,}  "
            f"requests {s.requests:,}  retries {s.retries:,}  "
            f"{s.bytes_received / 2**20:,.1f} MiB  {elapsed:,.0f} s{self._left(elapsed)} "
        )
        self.stream.flush()

    def _left(self, elapsed: float) -> str:
        # At the pace of the partitions fetched so far (cached ones take no time); the first
        # one alone says little, since the first partitions arrive together.
        fetched = self.done - self.cached
        if fetched < 2 or self.done == self.total:
            return ""
        return f"  ~{elapsed / fetched * (self.total - self.done):,.0f} s left"
