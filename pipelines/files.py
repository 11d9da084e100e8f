"""Atomic output files: readers see the old file or the new one, never a half-written one."""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from flyte.io import File


@contextlib.contextmanager
def partial_beside(out: Path) -> Iterator[Path]:
    """A temporary path next to ``out``: renamed over it on success, removed on any failure.

    The name carries the writer's pid (``.NAME.PID-RANDOM.partial``), so what a killed process
    left behind is recognised (its process is gone) and removed by the next writer, never
    mistaken for a live writer's file.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(out)
    partial = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


def publish(file: File, out: Path) -> Path:
    """Copy a run's ``File`` output to ``out`` atomically."""
    with partial_beside(out) as partial:
        file.download_sync(str(partial))
    return out


def _remove_orphans(out: Path) -> None:
    for leftover in out.parent.glob(f".{glob.escape(out.name)}.*.partial"):
        pid = leftover.name.removeprefix(f".{out.name}.").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
