"""The daily schedule: a validated cron expression and time zone, as a Flyte trigger.

Flyte accepts any string as a cron expression and any name as a time zone; a mistake only shows
once the cluster refuses the deployment or the schedule never fires. Both are checked here first,
with one line that names the bad field and what it allows.

The cron grammar accepted is the standard five fields, ``minute hour day-of-month month
day-of-week``, each a ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a list of
those (``1,15,30-40/5``); months may be named JAN-DEC and week days SUN-SAT (any case); Sunday
is 0 (7 is refused, as robfig/cron, the usual Go parser, refuses it). The macros ``@hourly``,
``@daily`` (also ``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly`` (also ``@annually``)
are accepted and expanded to their five fields, which every cron implementation reads the same
way. An expression
that can never fire (``0 0 30 2 *``) is refused too.

The trigger binds its kickoff time to the input ``run_ts`` (a datetime) of the task it is attached
to. That task is the top-level task of a scheduled run, and ``run_ts`` is where its window ENDS: a
run kicked off at 02:00 UTC fetches the window that ends at 02:00 UTC (see
:func:`kickoff_window_end`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import inspect
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

import flyte

from pipelines.errors import UsageError

DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
TRIGGER_NAME = "daily"
KICKOFF_INPUT = "run_ts"

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for low + i

    @property
    def allowed(self) -> str:
        numbers = f"{self.low}-{self.high}"
        return f"{numbers} or {self.names[0]}-{self.names[-1]}" if self.names else numbers

    @property
    def span(self) -> int:
        return self.high - self.low + 1


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field(
        "month",
        1,
        12,
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    ),
    _Field("day-of-week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)

# One list item: a base (*, a value, or a range of two values) and an optional /step.
_ITEM = re.compile(r"(?P<base>\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>[0-9]+))?")
_NUMBER = re.compile(r"[0-9]+")
# Longest day of each month (February: 29, leap years exist).
_MONTH_DAYS = {m: 29 if m == 2 else calendar.monthrange(2023, m)[1] for m in range(1, 13)}


class _Bad(Exception):
    """A problem with one field; the caller adds which expression it is."""


def validate_cron(expr: str) -> str:
    """Return ``expr`` as five single-space-separated fields, macros expanded; else UsageError.

    >>> validate_cron("0 2 * * *")
    '0 2 * * *'
    >>> validate_cron("@daily")
    '0 0 * * *'
    """
    if not isinstance(expr, str):
        raise UsageError(f"cron {expr!r}: expected a string such as {DEFAULT_CRON!r}")
    text = " ".join(expr.split())  # also what the messages show: always one line
    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            raise UsageError(
                f'cron "{text}": unknown macro; use @hourly, @daily, @weekly, @monthly, '
                "@yearly, or five fields (minute hour day-of-month month day-of-week)"
            )
        return expanded
    fields = text.split()
    if len(fields) != len(FIELDS):
        raise UsageError(
            f'cron "{text}": expected 5 fields (minute hour day-of-month month day-of-week), '
            f"got {len(fields)}"
        )
    values = []
    for spec, field in zip(FIELDS, fields, strict=True):
        try:
            values.append(_parse_field(spec, field))
        except _Bad as bad:
            raise UsageError(f'cron "{text}": {bad}') from None
    _check_fires(text, fields, values)
    return text


def _parse_field(spec: _Field, field: str) -> set[int]:
    def bad(problem: str, item: str) -> _Bad:
        # "hour field "25" is out of range", or "hour field "1,25": 25 is out of range"
        where = f'{spec.name} field "{field}"'
        return _Bad(f"{where} {problem}" if item == field else f"{where}: {item} {problem}")

    chosen: set[int] = set()
    for item in field.split(","):
        if not item:
            raise _Bad(f'{spec.name} field "{field}" has an empty list item')
        match = _ITEM.fullmatch(item)
        if match is None:
            raise bad(
                f"is not valid: use {spec.allowed}, *, a range a-b, a step */n or a-b/n, "
                "or a list a,b",
                item,
            )
        base, step_text = match["base"], match["step"]
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, last = base.split("-")
            low, high = _value(spec, first, bad), _value(spec, last, bad)
            if low > high:
                raise bad(f"is a range that runs backwards ({first} is after {last})", item)
        else:
            if step_text is not None:
                raise bad("has a step after a single value: write */n or a range a-b/n", item)
            low = high = _value(spec, base, bad)
        step = 1
        if step_text is not None:
            step = int(step_text)
            if not 1 <= step <= spec.span:
                raise bad(f"has step {step}, out of range 1-{spec.span}", item)
        chosen.update(range(low, high + 1, step))
    return chosen


def _value(spec: _Field, token: str, bad) -> int:
    if _NUMBER.fullmatch(token):
        number = int(token)
        if not spec.low <= number <= spec.high:
            raise bad(f"is out of range {spec.low}-{spec.high}", token)
        return number
    upper = token.upper()
    if upper in spec.names:
        return spec.low + spec.names.index(upper)
    kind = {"month": "a number or month name", "day-of-week": "a number or day name"}
    raise bad(f"is not {kind.get(spec.name, 'a number')} ({spec.allowed})", token)


def _check_fires(expr: str, fields: list[str], values: list[set[int]]) -> None:
    """Refuse a day-of-month that no chosen month has, unless day-of-week widens it.

    As in every cron: when either day field starts with ``*`` a day must match both, otherwise
    either. So a day-of-week that does not start with ``*`` makes the expression fire anyway.
    """
    days, months = values[2], values[3]
    widened = not fields[4].startswith("*")
    if not widened and not any(day <= _MONTH_DAYS[m] for day in days for m in months):
        raise UsageError(
            f'cron "{expr}": never fires: day-of-month "{fields[2]}" does not occur in '
            f'month "{fields[3]}"'
        )


@functools.cache
def _known_zones() -> frozenset[str]:
    # "localtime" is the host's own zone (a file in /usr/share/zoneinfo), not an IANA name.
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def validate_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone (as ``zoneinfo`` knows them); else UsageError."""
    known = _known_zones()
    if isinstance(name, str) and name in known:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
        else:
            return name
    message = f'unknown time zone "{name}": use an IANA name such as UTC or Europe/Zurich'
    if isinstance(name, str):
        near = [zone for zone in known if zone.lower() == name.strip().lower()]
        if near:
            message += f' (did you mean "{sorted(near)[0]}"?)'
    raise UsageError(message)


def daily_trigger(
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    archive: str = "",
    fmt: str = "duckdb",
) -> flyte.Trigger:
    """The schedule of the top-level task: ``cron`` in ``timezone``, kickoff time as ``run_ts``,
    and, when given, the ``archive`` (of format ``fmt``) every scheduled run adds to.

    The task it is attached to needs an input ``run_ts: datetime``; on every scheduled run Flyte
    fills it with the run's start time, and the task treats it as the END of its window (the
    start is the end minus the lookback). Other required inputs of that task must have defaults,
    or the scheduled run has nothing to pass (:func:`check_trigger_inputs`).
    """
    expression, zone = validate_cron(cron), validate_timezone(timezone)
    inputs: dict[str, object] = {KICKOFF_INPUT: flyte.TriggerTime}
    if archive:
        inputs.update(archive=archive, fmt=fmt)
    return flyte.Trigger(
        TRIGGER_NAME,
        flyte.Cron(expression, timezone=zone),
        description=f"quakecat ETL at {expression} ({zone}); {KICKOFF_INPUT} is the window end"
        + (f"; adds to {archive}" if archive else ""),
        inputs=inputs,
    )


def kickoff_window_end(run_ts: dt.datetime) -> dt.datetime:
    """The window end for a run kicked off at ``run_ts``: UTC, to the whole minute.

    Flyte fills ``run_ts`` with the run's start time, which may lag the cron tick by seconds;
    cron has a resolution of one minute, so cutting to the minute gives consecutive runs
    windows that meet exactly. A naive ``run_ts`` is taken as UTC.
    """
    moment = run_ts.replace(tzinfo=dt.UTC) if run_ts.tzinfo is None else run_ts
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0)


def check_trigger_inputs(task, triggers: Iterable[flyte.Trigger] | None = None) -> None:
    """Check that a scheduled run of ``task`` has a value for every input it requires.

    The SDK checks at deploy time only that the ``TriggerTime`` input exists; a required input
    that neither the trigger nor a default supplies is left to the cluster, which can only refuse
    the trigger or fail every scheduled run. Raises UsageError naming the missing inputs.
    """
    inputs = task.native_interface.inputs  # name -> (type, default)
    for trigger in task.triggers if triggers is None else triggers:
        bound = set(trigger.inputs or {})
        unknown = sorted(bound - set(inputs))
        if unknown:
            raise UsageError(
                f"trigger {trigger.name!r} of task {task.name} binds {', '.join(unknown)}, "
                f"which the task does not take (its inputs: {', '.join(inputs)})"
            )
        missing = [
            name
            for name, (_, default) in inputs.items()
            if default is inspect.Parameter.empty and name not in bound
        ]
        if missing:
            raise UsageError(
                f"trigger {trigger.name!r} of task {task.name} leaves required inputs "
                f"{', '.join(missing)} without a value: give them defaults or trigger inputs"
            )
