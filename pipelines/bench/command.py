"""``quakecat bench``: the options, the runs in order, the table and the JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.bench.catalogue import BASE_PER_DAY, QUICK_PER_DAY, build_catalogue
from pipelines.bench.cpu import CPU_RUNS, measure_cpu
from pipelines.bench.machine import machine, versions
from pipelines.bench.runs import MIB, BenchError, fetch_floor, flyte_home, measure_run
from pipelines.fdsn.fake import FakeFDSN

UTC = dt.UTC
DEFAULT_JSON = Path("data/bench.json")
DEFAULT_START = dt.datetime(2023, 1, 1, tzinfo=UTC)
QUICK_START = dt.datetime(2023, 6, 1, tzinfo=UTC)
SCALE_START = dt.datetime(2014, 1, 1, tzinfo=UTC)


def _days(days: int) -> dt.timedelta:
    return dt.timedelta(days=days)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quakecat bench",
        description="the ETL's wall time, throughput and memory against the offline fake service",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes: 60 days and a 1-year scale run at {QUICK_PER_DAY:g} events/day",
    )
    parser.add_argument("--start", help="first day of the catalogue window (default 2023-01-01)")
    parser.add_argument("--days", type=int, help="days in the window (default 365; quick 60)")
    parser.add_argument(
        "--per-day",
        type=float,
        help=f"base events per day, before the July aftershocks (default {BASE_PER_DAY:g})",
    )
    parser.add_argument(
        "--scale-years", type=float, help="years in the scale run (default 10; quick 1)"
    )
    parser.add_argument("--skip-scale", action="store_true", help="leave out the scale run")
    parser.add_argument(
        "--rounds",
        type=int,
        help="cold, floor and warm runs, each figure the median round's (default 3; quick 1)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=100.0, help="per-request latency (default 100)"
    )
    parser.add_argument(
        "--rate-mbps",
        type=float,
        default=50.0,
        help="per-answer transfer cap in megabits per second; 0 for none (default 50)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight, pipeline and floor"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    return parser


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.start:
        try:
            start = dt.datetime.fromisoformat(args.start)
        except ValueError:
            raise BenchError(f"--start {args.start!r} is not a date such as 2023-01-01") from None
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    else:
        start = QUICK_START if args.quick else DEFAULT_START
    days = args.days if args.days is not None else (60 if args.quick else 365)
    per_day = args.per_day if args.per_day is not None else (
        QUICK_PER_DAY if args.quick else BASE_PER_DAY
    )  # fmt: skip
    scale_years = args.scale_years if args.scale_years is not None else (1 if args.quick else 10)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    for name, value in (
        ("--days", days),
        ("--concurrency", args.concurrency),
        ("--rounds", rounds),
    ):
        if value < 1:
            raise BenchError(f"{name} must be >= 1, got {value}")
    if per_day <= 0 or scale_years <= 0 or args.latency_ms < 0 or args.rate_mbps < 0:
        raise BenchError("--per-day and --scale-years must be > 0; latency and rate >= 0")
    scale_days = max(1, round(scale_years * 365.25))
    return {
        "quick": args.quick,
        "start": start,
        "end": start + _days(days),
        "days": days,
        "per_day": per_day,
        "latency_ms": args.latency_ms,
        "rate_mbps": args.rate_mbps or None,
        "concurrency": args.concurrency,
        "rounds": rounds,
        "scale": None
        if args.skip_scale
        else {
            "years": scale_years,
            "start": SCALE_START,
            "end": SCALE_START + _days(scale_days),
            "days": scale_days,
            "per_day": per_day,
            "latency_ms": 0.0,
            "rate_mbps": None,
        },
    }


def _median(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median wall time (the lower one of an even count), and every round's.

    The machine is shared: one round alone moved by a tenth of a second between runs of the
    same code. The median keeps every figure of one real run together, unlike a mean."""
    ranked = sorted(figures, key=lambda f: f["wall_s"])
    return {**ranked[(len(ranked) - 1) // 2], "rounds_wall_s": [f["wall_s"] for f in figures]}


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(settings: dict[str, Any]) -> dict[str, Any]:
    began = time.perf_counter()
    start, end, concurrency = settings["start"], settings["end"], settings["concurrency"]
    rate = settings["rate_mbps"]
    report: dict[str, Any] = {"generated_at": dt.datetime.now(UTC).isoformat(timespec="seconds")}

    t0 = time.perf_counter()
    catalogue = build_catalogue(start, end, settings["per_day"])
    expected = catalogue.count(start, end)
    _say(f"catalogue: {expected:,} events in {time.perf_counter() - t0:.1f} s")
    service = FakeFDSN(
        catalogue,
        latency_s=settings["latency_ms"] / 1000,
        rate_bytes_per_s=rate * 1e6 / 8 if rate else None,
    )
    rounds: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    with service:
        for n in range(1, settings["rounds"] + 1):
            # Each round from nothing: a new database, and a Flyte cache of its own.
            with tempfile.TemporaryDirectory(prefix="quakecat-bench-") as scratch:
                out, home = Path(scratch) / "cold.duckdb", flyte_home(Path(scratch))
                _say(f"round {n}/{settings['rounds']}: cold run")
                cold, log = measure_run(
                    service, start, end, out, concurrency, expected, "cold", home
                )
                _say(f"round {n}/{settings['rounds']}: fetch floor")
                floor = fetch_floor(service, log, concurrency)
                _say(f"round {n}/{settings['rounds']}: warm run")
                warm, _ = measure_run(service, start, end, out, concurrency, expected, "warm", home)
            rounds.append((cold, floor, warm))
        cold, floor, warm = (_median([r[phase] for r in rounds]) for phase in range(3))
        _say(f"CPU path ({CPU_RUNS} runs on one core)")
        cpu = measure_cpu(service, log, start, end, concurrency, expected)
        max_allowed = service.max_allowed
    del catalogue, service, log
    gc.collect()

    scale = None
    if settings["scale"] is not None:
        s = settings["scale"]
        t0 = time.perf_counter()
        big = build_catalogue(s["start"], s["end"], s["per_day"])
        generated_s = time.perf_counter() - t0
        big_expected = big.count(s["start"], s["end"])
        _say(f"scale catalogue: {big_expected:,} events in {generated_s:.1f} s; scale run")
        with (
            tempfile.TemporaryDirectory(prefix="quakecat-bench-") as scratch,
            FakeFDSN(big) as fake,
        ):
            out = Path(scratch) / "scale.duckdb"
            home = flyte_home(Path(scratch))
            scale, _ = measure_run(
                fake, s["start"], s["end"], out, concurrency, big_expected, "scale", home
            )
        scale.update(
            years=s["years"],
            window_start=s["start"].isoformat(),
            window_end=s["end"].isoformat(),
            per_day=s["per_day"],
            latency_ms=s["latency_ms"],
            rate_mbps=s["rate_mbps"],
            generate_s=generated_s,
        )
        del big
        gc.collect()

    report.update(
        settings={
            **{k: v for k, v in settings.items() if k not in ("start", "end", "scale")},
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "max_allowed": max_allowed,
            "cpu_runs": CPU_RUNS,
        },
        cold=cold,
        floor=floor,
        warm=warm,
        cpu=cpu,
        scale=scale,
        cold_over_floor=cold["wall_s"] / floor["wall_s"],
        warm_over_cold=warm["wall_s"] / cold["wall_s"],
        requests_per_100k_events=cold["requests"] / cold["events"] * 100_000,
        machine={
            **machine(),
            "bench_process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
        versions=versions(),
        total_s=time.perf_counter() - began,
    )
    return report


def _row(name: str, r: dict[str, Any] | None, note: str = "") -> str:
    if r is None:
        return f"{name:<6} {'skipped':>8}"

    def num(key: str, width: int, spec: str, scale: float = 1.0) -> str:
        value = r.get(key)
        return "-".rjust(width) if value is None else format(value / scale, f"{width}{spec}")

    return (
        f"{name:<6} {num('wall_s', 8, '.2f')} {num('events', 11, ',.0f')}"
        f" {num('events_per_s', 10, ',.0f')} {num('requests', 9, ',.0f')}"
        f" {num('bytes', 9, ',.1f', MIB)} {num('peak_rss_mb', 12, ',.0f')}  {note}"
    ).rstrip()


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    rate = f"{s['rate_mbps']:g} Mbit/s per answer" if s["rate_mbps"] else "no transfer cap"
    cold, warm, cpu, scale = report["cold"], report["warm"], report["cpu"], report["scale"]
    lines = [
        f"quakecat bench  {s['window_start'][:10]} -> {s['window_end'][:10]} ({s['days']} days, "
        f"{cold['expected_events']:,} events), latency {s['latency_ms']:g} ms, {rate}, "
        f"{s['concurrency']} in flight; cold, floor and warm: the median of {s['rounds']} "
        f"round{'' if s['rounds'] == 1 else 's'}",
        f"{'phase':<6} {'wall s':>8} {'events':>11} {'events/s':>10} {'requests':>9} "
        f"{'MiB':>9} {'peak RSS MiB':>12}",
        _row(
            "cold",
            cold,
            f"child process; pipeline's own {cold['pipeline_s']} s; file "
            f"{cold['database_mb']:.1f} MiB",
        ),
        _row("floor", report["floor"], "same URLs, only reading bodies"),
        _row("warm", warm, f"into the cold database; pipeline's own {warm['pipeline_s']} s"),
        _row(
            "cpu",
            cpu,
            f"1 core, in-process, best of {len(cpu['runs_wall_s'])}: extract "
            f"{cpu['extract_s']:.2f} s, transform {cpu['transform_s']:.2f} s, load "
            f"{cpu['load_s']:.2f} s",
        ),
    ]
    if scale is None:
        lines.append(_row("scale", None))
    else:
        lines.append(
            _row(
                "scale",
                scale,
                f"{scale['years']:g} year{'' if scale['years'] == 1 else 's'}, latency 0 and no "
                f"transfer cap (to keep the bench short); file {scale['database_mb']:.0f} MiB",
            )
        )
    lines.append(
        f"cold/floor {report['cold_over_floor']:.2f}   warm/cold {report['warm_over_cold']:.2f}"
        f"   requests per 100k events (cold) {report['requests_per_100k_events']:.1f}"
        f"   total {report['total_s']:.0f} s"
    )
    m = report["machine"]
    lines.append(
        f"machine: {m['usable_cores']} cores, {m['memory_gib']} GiB, {m['cpu_model']}; "
        f"bench process peak RSS {m['bench_process_peak_rss_mb']:,.0f} MiB"
    )
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {value!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(_settings(args))
    except BenchError as exc:
        print(f"quakecat bench: error: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
