"""Notices: what the pipeline's code logs as warnings (a request retried, and the wait before
it), shown by a local run as lines of its own on stderr.

On a cluster nothing here is installed: the records reach the task's log through the root
logger, as every other library's do.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TextIO

# Every module logs under its own name (logging.getLogger(__name__)), so all of them are below.
PIPELINE_LOGGER = "pipelines"


class _Lines(logging.Handler):
    """One ``quakecat: ...`` line per record; on a terminal it first clears the progress line,
    which the next partition redraws below it."""

    def __init__(self, stream: TextIO):
        super().__init__(logging.WARNING)
        self.stream = stream
        self.clear = "\r\x1b[K" if stream.isatty() else ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(f"{self.clear}quakecat: {record.getMessage()}\n")
            self.stream.flush()
        except Exception:  # as logging's own handlers do: a notice never fails a run
            self.handleError(record)


@contextlib.contextmanager
def shown_on(stream: TextIO) -> Iterator[None]:
    """While inside, the pipeline's warnings go to ``stream`` and nowhere else (Flyte sets the
    root logger to its own level, CRITICAL in a quiet local run, which would drop them)."""
    logger = logging.getLogger(PIPELINE_LOGGER)
    handler = _Lines(stream)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)  # not a plain assignment: the logger caches what it lets by
        logger.propagate = propagate
