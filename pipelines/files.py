"""Output files: written atomically (readers see the old file or the new one, never a
half-written one) by one writer at a time; and a run's scratch space, which goes with the run
however it ends."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import flyte.storage
from flyte.io import File

from pipelines.errors import UsageError


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


def probe_folder(path: Path) -> None:
    """Raise OSError unless ``path``'s folder exists (made if need be) and takes new files.

    Tried, not inferred from permission bits: root passes those everywhere, and a read-only
    mount or a folder like /proc refuses new files whatever they say.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
        pass


def unwritable_folder(path: Path, exc: OSError) -> str:
    """What ``probe_folder(path)`` failing with ``exc`` means, and what to do."""
    if isinstance(exc, FileExistsError):
        return f"{path.parent} is a file, not a folder"
    if not path.parent.is_dir():
        return f"cannot create its folder ({exc.strerror})"
    return f"cannot write in its folder {path.parent} ({exc.strerror}); choose a writable path"


@contextlib.contextmanager
def one_writer(out: Path) -> Iterator[None]:
    """Held while ``out`` is being made: a second run would start from the same old file, and
    whichever published last would silently drop what the other one added.

    An flock on ``.NAME.lock`` beside ``out`` (the kernel lets go of it when its process dies,
    however it dies), holding the writer's pid for the message; removed by its holder.
    """
    lock = out.with_name(f".{out.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(
                f"--out {out} is being written by another quakecat process (pid {holder}); "
                "wait for it to end or choose another --out"
            ) from None
        if _still_at(fd, lock):
            break
        os.close(fd)  # its holder removed it as we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        lock.unlink(missing_ok=True)  # still held, so no one else is using it
        os.close(fd)


def _still_at(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def file_version(path: Path) -> tuple[int, int, int] | None:
    """What tells a file from its next version (inode, size, modification time); None if absent."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


def publish(file: File, out: Path) -> Path:
    """Copy a run's ``File`` output to ``out`` atomically."""
    with partial_beside(out) as partial:
        file.download_sync(str(partial))
    return out


def local_path(uri: str) -> Path:
    """The path on this machine of a URI that is not a blob store's (``file://`` or a path)."""
    return Path(uri.removeprefix("file://"))


def discard_local(uri: str | None) -> None:
    """Remove a run's intermediate output at ``uri`` (a file or a folder of Parquet files) once
    nothing will read it again, when it is on this machine: every stage writes the whole working
    copy anew, and a long backfill's copies and derived partitions held gigabytes of its scratch
    space (2.1 GB beside a 188 MiB database for ten years). On a cluster the blob store keeps
    them, with the run's other outputs."""
    if not uri or flyte.storage.is_remote(uri):
        return
    path = local_path(uri)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_SCRATCH_KINDS = ("run", "stage", "load", "read")


def scratch_folder(kind: str) -> tempfile.TemporaryDirectory:
    """A temporary folder ``quakecat-KIND-PID-...`` (KIND one of ``_SCRATCH_KINDS``): one a
    killed process left is known by its pid, and the next run removes it."""
    # Task threads a signal stopped may still be writing into it as it goes.
    return tempfile.TemporaryDirectory(
        prefix=f"quakecat-{kind}-{os.getpid()}-", ignore_cleanup_errors=True
    )


@contextlib.contextmanager
def run_scratch() -> Iterator[Path]:
    """A folder in the system's temporary folder for everything one local run writes on the
    side: Flyte's raw data and the tasks' working copies (``tempfile`` puts them here while the
    run lasts). Removed when the run ends, however it ends; what a killed run left is removed
    by the next run, and so is a task's folder that a run stopped by a signal started in the
    system's temporary folder after its own had gone.
    """
    base = Path(tempfile.gettempdir())
    for kind in _SCRATCH_KINDS:
        prefix = f"quakecat-{kind}-"
        for orphan in _of_dead_processes(base.glob(f"{prefix}*"), prefix):
            shutil.rmtree(orphan, ignore_errors=True)
    with scratch_folder("run") as scratch:
        previous, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield Path(scratch)
        finally:
            tempfile.tempdir = previous


def _remove_orphans(out: Path) -> None:
    partials = out.parent.glob(f".{glob.escape(out.name)}.*.partial")
    for leftover in _of_dead_processes(partials, f".{out.name}."):
        leftover.unlink(missing_ok=True)


def _of_dead_processes(paths: Iterable[Path], prefix: str) -> Iterator[Path]:
    """The paths named ``PREFIX PID-...`` whose process is gone."""
    for path in paths:
        pid = path.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            yield path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
