"""quakecat: the command line. Validates arguments, runs the pipeline locally, publishes the file.

Exit codes: 0 success, 2 bad arguments, 1 runtime failure, 130 and 143 stopped by Ctrl-C and
SIGTERM; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import datetime as dt
import gc
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import flyte
import flyte.config
import flyte.errors
from flyte.io import File

from pipelines import notices
from pipelines.errors import QuakecatError, UsageError
from pipelines.fdsn.client import USGS_BASE_URL, ClientSettings, validate_base_url
from pipelines.files import (
    file_version,
    one_writer,
    probe_folder,
    publish,
    run_scratch,
    unwritable_folder,
)
from pipelines.load import (
    FORMATS,
    SUFFIX_FORMATS,
    Archive,
    IncompatibleDatabase,
    check_database,
)
from pipelines.plan import Window, check_window, default_window, parse_time
from pipelines.remote import fetch_file
from pipelines.version import CODE_VERSION

T = TypeVar("T")

DEFAULT_OUT = Path("data/quakes.duckdb")
DEFAULT_DEMO_OUT = Path("data/demo.duckdb")
# Not DEFAULT_OUT: a download would replace the archive that local runs build there.
DEFAULT_DOWNLOAD_OUT = Path("data/remote.duckdb")
DEFAULT_SETTLE_DAYS = 30.0
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _number(kind, *, positive: bool = False):
    """An argparse type: a finite ``kind`` (> 0 when ``positive``). argparse names ``kind`` in
    its own message for text that is no number at all ("invalid float value")."""

    def parse(text: str):
        value = kind(text)
        if positive and not 0 < value < math.inf:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"must be > 0 and finite, got {text}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_fetch_options(parser: argparse.ArgumentParser) -> None:
    defaults = ClientSettings()
    parser.add_argument(
        "--start", help="inclusive; a date or ISO-8601 UTC time (default: 7 days ago)"
    )
    parser.add_argument("--end", help="exclusive; a date or ISO-8601 UTC time (default: now)")
    parser.add_argument("--min-magnitude", type=_number(float), help="only events at or above this")
    # Defaults are the client's; argparse writes them into the help (%(default)).
    parser.add_argument(
        "--max-in-flight",
        type=_number(int, positive=True),
        default=defaults.max_in_flight,
        help="requests at once, across partitions (default %(default)s)",
    )
    parser.add_argument(
        "--max-per-5min",
        type=_number(int, positive=True),
        default=defaults.max_per_5min,
        help="requests started per five minutes (default %(default)s, as USGS asks)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_number(float, positive=True),
        default=defaults.connect_timeout_s,
        help="seconds (default %(default)g)",
    )
    parser.add_argument(
        "--read-timeout",
        type=_number(float, positive=True),
        default=defaults.read_timeout_s,
        help="seconds without a byte before a request is retried (default %(default)g)",
    )
    parser.add_argument(
        "--max-attempts",
        type=_number(int, positive=True),
        default=defaults.max_attempts,
        help="per request, retries included (default %(default)s)",
    )
    parser.add_argument(
        "--backoff",
        type=_number(float, positive=True),
        default=defaults.backoff_s,
        help="seconds before the first retry, doubling per retry with jitter (default %(default)g)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=_number(int, positive=True),
        default=defaults.max_body_bytes // 2**20,
        help="refuse larger answers (default %(default)s)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="database file format (default: as --out's suffix says, .sqlite or .sqlite3 for"
        " sqlite, else duckdb; sqlite stores times as ISO-8601 text)",
    )
    parser.add_argument(
        "--settle-days",
        type=_number(float, positive=True),
        default=DEFAULT_SETTLE_DAYS,
        help="a partition that ended this many days ago is settled: cached, never refetched"
        " (default %(default)g); later revisions still arrive via updatedafter",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="refetch every partition, cached or not"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress line (none when not a TTY)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and logs")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quakecat", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {CODE_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    etl = commands.add_parser("etl", help="fetch a window of the catalogue into a database file")
    _add_fetch_options(etl)
    etl.add_argument(
        "--base-url",
        default=os.environ.get("QUAKECAT_BASE_URL", USGS_BASE_URL),
        help="FDSN event service root (env QUAKECAT_BASE_URL)",
    )
    etl.add_argument(
        "--out", type=Path, help=f"default {DEFAULT_OUT} (.sqlite with --format sqlite)"
    )

    demo = commands.add_parser("demo", help="offline: the ETL against a generated fake service")
    _add_fetch_options(demo)
    demo.add_argument("--out", type=Path, help=f"default {DEFAULT_DEMO_OUT}")
    demo.set_defaults(start="2024-05-01", end="2024-05-15")

    commands.add_parser(
        "bench",
        help="measure speed, request economy and memory (see 'quakecat bench --help')",
        add_help=False,
    )

    download = commands.add_parser(
        "download", help="download the database of a run on the cluster (default: the latest)"
    )
    download.add_argument("run", nargs="?", help="run name (default: latest successful etl run)")
    download.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_DOWNLOAD_OUT,
        help=f"default {DEFAULT_DOWNLOAD_OUT} (not the local runs' {DEFAULT_OUT})",
    )
    download.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    return parser


def _window(args: argparse.Namespace) -> Window:
    now = dt.datetime.now(dt.UTC)
    if args.start is None and args.end is None:
        return default_window(now)
    end = parse_time(args.end, "--end") if args.end else now
    start = parse_time(args.start, "--start") if args.start else end - dt.timedelta(days=7)
    return check_window(start, end)


def _settings(args: argparse.Namespace, base_url: str) -> ClientSettings:
    return ClientSettings(
        base_url=validate_base_url(base_url),
        connect_timeout_s=args.connect_timeout,
        read_timeout_s=args.read_timeout,
        max_attempts=args.max_attempts,
        backoff_s=args.backoff,
        max_in_flight=args.max_in_flight,
        max_per_5min=args.max_per_5min,
        max_body_bytes=args.max_body_mb * 2**20,
    )


def _job(
    args: argparse.Namespace, window: Window, settings: ClientSettings, out: Path, fmt: str
) -> Job:
    return Job(
        window=window,
        settings=settings,
        out=out,
        min_magnitude=args.min_magnitude,
        fmt=fmt,
        cache=not args.no_cache,
        settle_days=args.settle_days,
        progress=not args.quiet,
        verbose=args.verbose,
    )


def _file_format(fmt: str | None, out: Path | None) -> str:
    """--format, else what --out's suffix says, else DuckDB; a contradiction is refused, since
    a SQLite file named .duckdb (or the other way round) fails whoever opens it by its name."""
    named = SUFFIX_FORMATS.get(out.suffix.lower()) if out else None
    if fmt and named and fmt != named:
        raise UsageError(
            f"--out {out} is named as a {named} file but --format is {fmt}; "
            "change the suffix or leave --format out"
        )
    return fmt or named or "duckdb"


def _check_out(out: Path | None, fmt: str, default: Path) -> Path:
    """Where the database goes: a file path in a writable folder (what is there already is
    checked, once, when the run reads the archive)."""
    if out is None:
        out = default.with_suffix(f".{fmt}")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file path such as {DEFAULT_OUT}")
    # Found out now, not after the whole run: where the file is to go must be a writable folder.
    try:
        probe_folder(out)
    except OSError as exc:
        raise UsageError(f"--out {out}: {unwritable_folder(out, exc)}") from None
    return out


def report_path(out: Path) -> Path:
    """The HTML report lives beside its database and is named after it, so that two databases
    in one folder (data/quakes.duckdb, data/demo.duckdb) keep a report each:
    data/quakes.duckdb -> data/quakes.duckdb.html."""
    return out.with_name(f"{out.name}.html")


@dataclass(frozen=True)
class Job:
    window: Window
    settings: ClientSettings
    out: Path
    min_magnitude: float | None = None
    fmt: str = "duckdb"
    cache: bool = True
    settle_days: float = DEFAULT_SETTLE_DAYS
    progress: bool = False
    verbose: bool = False


def local_runner(raw: Path | str, *, cache: bool, metadata: Path | None = None):
    """Flyte in local mode, with every file a run writes on the side in ``raw`` (a folder, or
    a storage URI as on a cluster) and its metadata in ``metadata`` (default: in ``raw``)."""
    runner = flyte.with_runcontext(
        mode="local", raw_data_path=str(raw), disable_run_cache=not cache
    )
    # Local runs keep their metadata in /tmp/flyte/metadata/<run>, which nothing cleans up
    # (hundreds of MB after a few archive runs), and flyte 2.12 has no public option for it:
    # keep it with the run's raw data instead, which goes with the run.
    if hasattr(runner, "_metadata_path"):
        runner._metadata_path = str(metadata or Path(raw) / "metadata")
    return runner


def run_pipeline(job: Job):
    """Run the pipeline locally and publish its database and report beside each other, as the
    one writer of ``job.out`` (the archive is read under the same lock)."""
    with one_writer(job.out), notices.shown_on(sys.stderr):
        return _run_pipeline(job)


def _run_pipeline(job: Job):
    from pipelines.etl import Incremental, etl
    from pipelines.extract import FetchRequest

    out = job.out
    read = file_version(out)
    try:
        archive = check_database(out, job.fmt, job.settings.base_url) if out.exists() else Archive()
    except IncompatibleDatabase as exc:
        raise UsageError(f"--out {exc}") from None
    flyte.init(log_level=logging.INFO if job.verbose else logging.CRITICAL)
    incremental = Incremental(max_allowed=archive.max_allowed, held=list(archive.held))
    if job.cache:
        store = partition_store()
        incremental = dataclasses.replace(
            incremental,
            settle_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=job.settle_days),
            generation=resume_token(out).read_text(),
            store=str(store),
        )
    # Partition outputs worth keeping go to the store; the rest of a run's data dies with it.
    with run_scratch() as raw:
        run = _awaiting_signals(
            local_runner(raw, cache=job.cache).run,
            etl,
            start=job.window.start,
            end=job.window.end,
            request=FetchRequest(client=job.settings, min_magnitude=job.min_magnitude),
            previous=File.from_local_sync(out) if out.exists() else None,
            fmt=job.fmt,
            incremental=incremental,
            progress=job.progress,
        )
        database, report, summary = run.outputs()
        if file_version(out) != read:
            # Another program (not a quakecat run: those wait for each other) wrote to `out`;
            # replacing it now would throw its changes away.
            raise QuakecatError(
                f"--out {out} was changed by another program while this run went on; nothing was"
                " published, so its changes stand: run again once it is done"
            )
        # The database is checked whole before it replaces `out`.
        fetch_file(database, out)
        publish(report, report_path(out))
    if job.cache:
        # Done: what this run fetched inside the settle horizon must be fetched afresh next time.
        shutil.rmtree(Path(incremental.store) / incremental.generation, ignore_errors=True)
        resume_token(out).unlink(missing_ok=True)
    return summary


def partition_store() -> Path:
    """Where settled partitions (and an interrupted run's) live, beside Flyte's local cache.

    Flyte keeps its cache database next to the config file it finds (the repo's .flyte/, else
    ~/.flyte/); a cache entry only points at its data, so the data must live as long as it.
    If the store was removed while the cache database stayed, every entry would dangle: the
    cache is then cleared rather than left to fail.
    """
    config = flyte.config.auto().source
    cache_dir = (config.parent if config else Path("~/.flyte").expanduser()) / "local-cache"
    store = cache_dir / "quakecat-partitions"
    if not (store / ".created").exists():
        for stale in cache_dir.glob("cache.db*"):
            stale.unlink()
        store.mkdir(parents=True, exist_ok=True)
        (store / ".created").touch()
    return store


def _awaiting_signals(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` in a helper thread, while this thread waits for it in short
    steps. The kernel may hand a SIGINT or SIGTERM to any of the run's threads, and Python acts
    on it only once the main thread runs again: waiting with no timeout (as Flyte's ``run``
    does) put Ctrl-C off until the run had finished."""
    helper = ThreadPoolExecutor(1, thread_name_prefix="quakecat-run")
    try:
        done = helper.submit(contextvars.copy_context().run, call, *args, **kwargs)
        while True:
            with contextlib.suppress(TimeoutError):
                return done.result(timeout=0.1)
    finally:
        helper.shutdown(wait=False)


def resume_token(out: Path) -> Path:
    """A file beside ``out`` naming the cache generation of the run under way: it survives an
    interrupted run, so the restart reuses the partitions already fetched, and goes with
    success, so that the next run fetches the unsettled partitions again."""
    token = out.with_name(f".{out.name}.resume")
    if not token.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(uuid.uuid4().hex)
    return token


def _print_summary(summary, out: Path, seconds: float) -> None:
    counted = (
        f"service counted {summary.expected_events:,}; " if summary.expected_events >= 0 else ""
    )
    lines = [
        f"window      {summary.window_start:%Y-%m-%d %H:%M:%S} -> "
        f"{summary.window_end:%Y-%m-%d %H:%M:%S} UTC",
        f"partitions  {summary.partitions} ({summary.partitions_cached} from cache,"
        f" {summary.partitions_staged} stored while fetching)",
        f"events      {summary.events_loaded:,} loaded, {summary.events_rejected:,} rejected "
        f"({counted}{summary.events_total:,} in the file; {summary.revised_events:,} revised)",
        f"requests    {summary.requests:,} ({summary.retries:,} retries, {summary.splits:,} splits,"
        f" {summary.bytes_received / 2**20:,.1f} MiB)",
    ]
    if summary.events_rejected:
        lines.append(
            f"rejects     the {summary.events_rejected:,} are in table rejected_events, each with"
            " its reason and the feature as sent"
        )
    lines += [
        f"seconds     {seconds:,.1f}",
        f"output      {out}",
        f"report      {report_path(out)}",
    ]
    print("\n".join(lines))


def cmd_etl(args: argparse.Namespace) -> int:
    window = _window(args)
    settings = _settings(args, args.base_url)
    fmt = _file_format(args.format, args.out)
    out = _check_out(args.out, fmt, DEFAULT_OUT)
    began = time.monotonic()
    summary = run_pipeline(_job(args, window, settings, out, fmt))
    _print_summary(summary, out, time.monotonic() - began)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.fdsn.fake import FakeFDSN, generate_catalogue

    window = _window(args)
    fmt = _file_format(args.format, args.out)
    out = _check_out(args.out, fmt, DEFAULT_DEMO_OUT)
    catalogue = generate_catalogue(window.start, window.end)
    with FakeFDSN(catalogue) as service:
        print(f"fake FDSN service at {service.base_url} holding {len(catalogue.events):,} events")
        began = time.monotonic()
        summary = run_pipeline(_job(args, window, _settings(args, service.base_url), out, fmt))
    _print_summary(summary, out, time.monotonic() - began)
    expected = catalogue.count(window.start, window.end, args.min_magnitude)
    if summary.events_loaded != expected:
        raise QuakecatError(f"demo loaded {summary.events_loaded} events, service holds {expected}")
    print(f"demo database: {out} ({expected:,} events, as the service holds)")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from pipelines.remote import download_database, table_counts

    out = _check_out(args.out, "duckdb", DEFAULT_DOWNLOAD_OUT)
    with one_writer(out):
        path = _awaiting_signals(download_database, args.run, out)
    print(f"downloaded  {path}")
    for table, rows in table_counts(path).items():
        print(f"  {table:<20} {rows:>12,} rows")
    return EXIT_OK


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, flyte.errors.BaseRuntimeError):
        message = str(exc).splitlines()[0] if str(exc) else exc.code
    else:
        message = str(exc)
    if "No space left on device" in message:
        # Most of what a run writes is scratch: a long backfill can outgrow a small /tmp.
        message += (
            f"; free space there, or point TMPDIR at a larger disk for the run's scratch files"
            f" (now {tempfile.gettempdir()})"
        )
    return message


# How a signal that stops a run is reported: the word and the exit code (128 + the signal).
_STOPPED = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}
_signals_received: list[int] = []


def _stop(signum: int, frame: object) -> None:
    # Remembered, since a DuckDB query under way turns the interrupt into its own error.
    _signals_received.append(signum)
    raise KeyboardInterrupt


def entry_point() -> NoReturn:
    """The console script and ``python -m pipelines.cli``: one command, then the process ends."""
    # What the imports built (Flyte, DuckDB, pyarrow, ...) lives as long as the process: out of
    # the collector's sight, full collections during the run and the one at exit skip it
    # (0.15 s of every exit).
    gc.freeze()
    # SIGTERM (a scheduler, `timeout`, `kill`) ends a run as Ctrl-C does; by default it would
    # end the process on the spot, with the run's scratch files left behind.
    for signum in _STOPPED:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # as a shell leaves it for `cmd &`
            signal.signal(signum, _stop)
    code = main()
    # The command is done, and the process ends here, without the interpreter's teardown (as
    # mypy's does): freeing everything Flyte, DuckDB and pyarrow built took 0.05 s of every
    # run, and after a signal, task threads still inside DuckDB or pyarrow made it abort with
    # a fatal-error dump. Only the standard streams hold anything unwritten; Flyte's cache
    # commits as it writes.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from pipelines import bench

        return bench.main(argv[1:])
    verbose = "-v" in argv or "--verbose" in argv
    try:
        args = build_parser().parse_args(argv)
        commands = {"etl": cmd_etl, "demo": cmd_demo, "download": cmd_download}
        return commands[args.command](args)
    except UsageError as exc:
        print(f"quakecat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Exception) as exc:
        if isinstance(exc, KeyboardInterrupt) or _signals_received:
            what, code = _STOPPED[_signals_received[0] if _signals_received else signal.SIGINT]
            print(f"quakecat: {what}; no output was written", file=sys.stderr)
            return code
        if verbose:
            raise
        print(f"quakecat: error: {_user_message(exc)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    entry_point()
