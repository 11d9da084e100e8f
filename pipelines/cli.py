"""quakecat: the command line. Validates arguments, runs the pipeline locally, publishes the file.

Exit codes: 0 success, 2 bad arguments, 1 runtime failure; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import flyte
import flyte.errors
from flyte.io import File

from pipelines.errors import QuakecatError, UsageError
from pipelines.fdsn.client import USGS_BASE_URL, ClientSettings, validate_base_url
from pipelines.load import FORMATS, IncompatibleDatabase, check_database
from pipelines.plan import Window, check_window, default_window, parse_time

DEFAULT_OUT = Path("data/quakes.duckdb")
DEFAULT_DEMO_OUT = Path("data/demo.duckdb")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_fetch_options(parser: argparse.ArgumentParser) -> None:
    defaults = ClientSettings()
    parser.add_argument(
        "--start", help="inclusive; a date or ISO-8601 UTC time (default: 7 days ago)"
    )
    parser.add_argument("--end", help="exclusive; a date or ISO-8601 UTC time (default: now)")
    parser.add_argument("--min-magnitude", type=float, help="only events at or above this")
    parser.add_argument("--max-in-flight", type=_positive(int), default=defaults.max_in_flight)
    parser.add_argument("--max-per-5min", type=_positive(int), default=defaults.max_per_5min)
    parser.add_argument(
        "--connect-timeout", type=_positive(float), default=defaults.connect_timeout_s
    )
    parser.add_argument("--read-timeout", type=_positive(float), default=defaults.read_timeout_s)
    parser.add_argument("--max-attempts", type=_positive(int), default=defaults.max_attempts)
    parser.add_argument(
        "--backoff",
        type=_positive(float),
        default=defaults.backoff_s,
        help="seconds before the first retry; doubles per retry, with jitter",
    )
    parser.add_argument(
        "--max-body-mb", type=_positive(int), default=defaults.max_body_bytes // 2**20
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="duckdb",
        help="database file format (default duckdb; sqlite stores times as ISO-8601 text)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and logs")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="quakecat", description=__doc__.splitlines()[0])
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


def _check_out(out: Path | None, fmt: str, default: Path) -> Path:
    """``out`` may be new, or a database of ours that this run will add to."""
    if out is None:
        out = default.with_suffix(f".{fmt}")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file path such as {DEFAULT_OUT}")
    if out.exists():
        try:
            check_database(out, fmt)
        except IncompatibleDatabase as exc:
            raise UsageError(f"--out {exc}") from None
    return out


@contextlib.contextmanager
def _partial_beside(out: Path) -> Iterator[Path]:
    """A temp path next to ``out``: renamed over it on success, removed on any failure.

    The name carries the writer's pid, so what a killed run left behind is recognised (its
    process is gone) and removed by the next run, never mistaken for a live writer's file.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(out)
    partial = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


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


def publish(database: File, out: Path) -> None:
    """Copy the run's database to ``out`` atomically: readers see the old file or the new one."""
    with _partial_beside(out) as partial:
        database.download_sync(str(partial))


def report_path(out: Path) -> Path:
    """The HTML report lives beside the database: data/quakes.duckdb -> data/report.html."""
    return out.with_name("report.html")


def run_pipeline(
    window: Window,
    settings: ClientSettings,
    min_magnitude: float | None,
    out: Path,
    fmt: str = "duckdb",
    verbose: bool = False,
):
    from pipelines.etl import etl
    from pipelines.extract import FetchRequest

    flyte.init(log_level=logging.INFO if verbose else logging.CRITICAL)
    request = FetchRequest(client=settings, min_magnitude=min_magnitude)
    # Raw data lives only as long as the run: nothing is cached yet, so nothing must outlive it.
    with tempfile.TemporaryDirectory(prefix="quakecat-run-") as raw:
        previous = File.from_local_sync(out) if out.exists() else None
        run = flyte.with_runcontext(mode="local", raw_data_path=raw).run(
            etl,
            start=window.start,
            end=window.end,
            request=request,
            previous=previous,
            fmt=fmt,
        )
        database, report, summary = run.outputs()
        publish(database, out)
        publish(report, report_path(out))
    return summary


def _print_summary(summary, out: Path, seconds: float) -> None:
    print(
        f"window      {summary.window_start:%Y-%m-%d %H:%M:%S} -> "
        f"{summary.window_end:%Y-%m-%d %H:%M:%S} UTC\n"
        f"partitions  {summary.partitions}\n"
        f"events      {summary.events_loaded:,} loaded, {summary.events_rejected:,} rejected "
        f"(service counted {summary.expected_events:,}; {summary.events_total:,} in the file)\n"
        f"requests    {summary.requests:,} ({summary.retries:,} retries, {summary.splits:,} splits,"
        f" {summary.bytes_received / 2**20:,.1f} MiB)\n"
        f"seconds     {seconds:,.1f}\n"
        f"output      {out}\n"
        f"report      {report_path(out)}"
    )


def cmd_etl(args: argparse.Namespace) -> int:
    window = _window(args)
    settings = _settings(args, args.base_url)
    out = _check_out(args.out, args.format, DEFAULT_OUT)
    began = time.monotonic()
    summary = run_pipeline(
        window, settings, args.min_magnitude, out, args.format, verbose=args.verbose
    )
    _print_summary(summary, out, time.monotonic() - began)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.fdsn.fake import FakeFDSN, generate_catalogue

    window = _window(args)
    out = _check_out(args.out, args.format, DEFAULT_DEMO_OUT)
    catalogue = generate_catalogue(window.start, window.end)
    with FakeFDSN(catalogue) as service:
        print(f"fake FDSN service at {service.base_url} holding {len(catalogue.events):,} events")
        began = time.monotonic()
        settings = _settings(args, service.base_url)
        summary = run_pipeline(
            window, settings, args.min_magnitude, out, args.format, verbose=args.verbose
        )
    _print_summary(summary, out, time.monotonic() - began)
    expected = catalogue.count(window.start, window.end, args.min_magnitude)
    if summary.events_loaded != expected:
        raise QuakecatError(f"demo loaded {summary.events_loaded} events, service holds {expected}")
    print(f"demo database: {out} ({expected:,} events, as the service holds)")
    return EXIT_OK


def _user_message(exc: BaseException) -> str:
    if isinstance(exc, flyte.errors.BaseRuntimeError):
        return str(exc).splitlines()[0] if str(exc) else exc.code
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    verbose = "-v" in (argv or sys.argv) or "--verbose" in (argv or sys.argv)
    try:
        args = build_parser().parse_args(argv)
        return {"etl": cmd_etl, "demo": cmd_demo}[args.command](args)
    except UsageError as exc:
        print(f"quakecat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("quakecat: interrupted; no output was written", file=sys.stderr)
        return 130
    except Exception as exc:
        if verbose:
            raise
        print(f"quakecat: error: {_user_message(exc)}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
