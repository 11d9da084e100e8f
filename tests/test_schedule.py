"""The daily schedule: cron and time zone validation, the trigger, and how Flyte serialises it.

No cluster exists here. Deploy serialisation runs the SDK's real `flyte.deploy` in a subprocess
(`flyte.init` is process-global) with only the two network calls replaced by recorders: the
request `deploy_task` would send is what the tests read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flyte
import pytest

from pipelines.errors import UsageError
from pipelines.schedule import (
    DEFAULT_CRON,
    DEFAULT_TIMEZONE,
    check_trigger_inputs,
    daily_trigger,
    kickoff_window_end,
    validate_cron,
    validate_timezone,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("expr", "normalised"),
    [
        ("0 2 * * *", "0 2 * * *"),
        ("  0   2 * *\t* ", "0 2 * * *"),
        ("* * * * *", "* * * * *"),
        ("59 23 31 12 6", "59 23 31 12 6"),
        ("0 0 1 1 0", "0 0 1 1 0"),
        ("*/15 * * * *", "*/15 * * * *"),
        ("*/60 * * * *", "*/60 * * * *"),
        ("0-30/10 9-17 * * MON-FRI", "0-30/10 9-17 * * MON-FRI"),
        ("0 0 1,15 * *", "0 0 1,15 * *"),
        ("5,10-20/5,*/30 * * * *", "5,10-20/5,*/30 * * * *"),
        ("0 6 * jan,Jul sun", "0 6 * jan,Jul sun"),
        ("0 0 * FEB-apr/2 *", "0 0 * FEB-apr/2 *"),
        ("00 02 01 01 *", "00 02 01 01 *"),
        ("0 0 29 2 *", "0 0 29 2 *"),  # leap days exist
        ("0 0 31 4,7 *", "0 0 31 4,7 *"),  # July has a 31st
        ("0 0 30 2 MON", "0 0 30 2 MON"),  # day-of-week widens it: every Monday in February
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        (" @DAILY ", "0 0 * * *"),
    ],
)
def test_valid_cron(expr: str, normalised: str) -> None:
    assert validate_cron(expr) == normalised


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 25 * * *", 'cron "0 25 * * *": hour field "25" is out of range 0-23'),
        ("60 * * * *", 'cron "60 * * * *": minute field "60" is out of range 0-59'),
        ("0 0 0 * *", 'cron "0 0 0 * *": day-of-month field "0" is out of range 1-31'),
        ("0 0 32 * *", 'cron "0 0 32 * *": day-of-month field "32" is out of range 1-31'),
        ("0 0 * 13 *", 'cron "0 0 * 13 *": month field "13" is out of range 1-12'),
        ("0 0 * 0 *", 'cron "0 0 * 0 *": month field "0" is out of range 1-12'),
        ("0 0 * * 7", 'cron "0 0 * * 7": day-of-week field "7" is out of range 0-6'),
        ("0 1,25 * * *", 'cron "0 1,25 * * *": hour field "1,25": 25 is out of range 0-23'),
        ("0 20-24 * * *", 'cron "0 20-24 * * *": hour field "20-24": 24 is out of range 0-23'),
        (
            "0 5-2 * * *",
            'cron "0 5-2 * * *": hour field "5-2" is a range that runs backwards (5 is after 2)',
        ),
        (
            "0 0 * * FRI-MON",
            'cron "0 0 * * FRI-MON": day-of-week field "FRI-MON" is a range that runs backwards '
            "(FRI is after MON)",
        ),
        ("*/0 * * * *", 'cron "*/0 * * * *": minute field "*/0" has step 0, out of range 1-60'),
        ("0 */25 * * *", 'cron "0 */25 * * *": hour field "*/25" has step 25, out of range 1-24'),
        (
            "5/15 * * * *",
            'cron "5/15 * * * *": minute field "5/15" has a step after a single value: '
            "write */n or a range a-b/n",
        ),
        ("x * * * *", 'cron "x * * * *": minute field "x" is not a number (0-59)'),
        ("0 MON * * *", 'cron "0 MON * * *": hour field "MON" is not a number (0-23)'),
        (
            "0 0 * FOO *",
            'cron "0 0 * FOO *": month field "FOO" is not a number or month name (1-12 or JAN-DEC)',
        ),
        (
            "0 0 * * JAN",
            'cron "0 0 * * JAN": day-of-week field "JAN" is not a number or day name '
            "(0-6 or SUN-SAT)",
        ),
        (
            "0 0 * * MONDAY",
            'cron "0 0 * * MONDAY": day-of-week field "MONDAY" is not a number or day name '
            "(0-6 or SUN-SAT)",
        ),
        (
            "0 0 1,,2 * *",
            'cron "0 0 1,,2 * *": day-of-month field "1,,2" has an empty list item',
        ),
        (
            "0 0 ? * *",
            'cron "0 0 ? * *": day-of-month field "?" is not valid: use 1-31, *, a range a-b, '
            "a step */n or a-b/n, or a list a,b",
        ),
        (
            "0 0 L * *",
            'cron "0 0 L * *": day-of-month field "L" is not a number (1-31)',
        ),
        (
            "-1 * * * *",
            'cron "-1 * * * *": minute field "-1" is not valid: use 0-59, *, a range a-b, '
            "a step */n or a-b/n, or a list a,b",
        ),
        (
            "1-2-3 * * * *",
            'cron "1-2-3 * * * *": minute field "1-2-3" is not valid: use 0-59, *, a range a-b, '
            "a step */n or a-b/n, or a list a,b",
        ),
        (
            "0 0 * * 1#2",
            'cron "0 0 * * 1#2": day-of-week field "1#2" is not valid: use 0-6 or SUN-SAT, *, '
            "a range a-b, a step */n or a-b/n, or a list a,b",
        ),
        (
            "0 2 * *",
            'cron "0 2 * *": expected 5 fields (minute hour day-of-month month day-of-week), got 4',
        ),
        (
            "0 0 2 * * *",
            'cron "0 0 2 * * *": expected 5 fields (minute hour day-of-month month day-of-week), '
            "got 6",
        ),
        (
            "",
            'cron "": expected 5 fields (minute hour day-of-month month day-of-week), got 0',
        ),
        (
            "0 25\n* * *\n",  # the message stays on one line
            'cron "0 25 * * *": hour field "25" is out of range 0-23',
        ),
        (
            "@reboot",
            'cron "@reboot": unknown macro; use @hourly, @daily, @weekly, @monthly, @yearly, '
            "or five fields (minute hour day-of-month month day-of-week)",
        ),
        (
            "0 0 30 2 *",
            'cron "0 0 30 2 *": never fires: day-of-month "30" does not occur in month "2"',
        ),
        (
            "0 0 31 APR,JUN,SEP,NOV *",
            'cron "0 0 31 APR,JUN,SEP,NOV *": never fires: day-of-month "31" does not occur in '
            'month "APR,JUN,SEP,NOV"',
        ),
    ],
)
def test_invalid_cron(expr: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_cron(expr)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_non_string_cron() -> None:
    with pytest.raises(UsageError, match=r"^cron None: expected a string such as '0 2 \* \* \*'$"):
        validate_cron(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["UTC", "Europe/Zurich", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Asia/Kolkata"]
)
def test_valid_timezone(name: str) -> None:
    assert validate_timezone(name) == name


_USE_IANA = "use an IANA name such as UTC or Europe/Zurich"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "Mars/Base",
            'unknown time zone "Mars/Base": use an IANA name such as UTC or Europe/Zurich',
        ),
        ("", 'unknown time zone "": use an IANA name such as UTC or Europe/Zurich'),
        (
            "localtime",
            'unknown time zone "localtime": use an IANA name such as UTC or Europe/Zurich',
        ),
        (
            "../../etc/passwd",
            'unknown time zone "../../etc/passwd": use an IANA name such as UTC or Europe/Zurich',
        ),
        (
            "europe/zurich",
            'unknown time zone "europe/zurich": use an IANA name such as UTC or Europe/Zurich '
            '(did you mean "Europe/Zurich"?)',
        ),
        (
            "CEST",
            'unknown time zone "CEST": use an IANA name such as UTC or Europe/Zurich',
        ),
    ],
)
def test_invalid_timezone(name: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_timezone(name)
    assert str(caught.value) == message


def test_daily_trigger_defaults() -> None:
    trigger = daily_trigger()
    assert (DEFAULT_CRON, DEFAULT_TIMEZONE) == ("0 2 * * *", "UTC")
    assert isinstance(trigger, flyte.Trigger)
    assert trigger.name == "daily"
    assert isinstance(trigger.automation, flyte.Cron)
    assert trigger.automation.expression == "0 2 * * *"
    assert trigger.automation.timezone == "UTC"
    assert trigger.automation.timezone_expression == "CRON_TZ=UTC 0 2 * * *"
    assert list(trigger.inputs) == ["run_ts"]
    assert trigger.inputs["run_ts"] is flyte.TriggerTime
    assert trigger.auto_activate is True


def test_daily_trigger_custom() -> None:
    trigger = daily_trigger("@weekly", "Europe/Zurich")
    assert trigger.automation.expression == "0 0 * * 0"  # macros are expanded
    assert trigger.automation.timezone == "Europe/Zurich"
    assert trigger.inputs == {"run_ts": flyte.TriggerTime}


def test_daily_trigger_refuses_bad_input() -> None:
    with pytest.raises(UsageError, match='hour field "25" is out of range 0-23'):
        daily_trigger("0 25 * * *")
    with pytest.raises(UsageError, match='unknown time zone "Mars/Base"'):
        daily_trigger(timezone="Mars/Base")


def test_kickoff_window_end() -> None:
    late = dt.datetime(2024, 5, 2, 2, 0, 3, 512_000, tzinfo=dt.UTC)
    assert kickoff_window_end(late) == dt.datetime(2024, 5, 2, 2, 0, tzinfo=dt.UTC)
    zurich = dt.datetime(2024, 5, 2, 4, 0, 59, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert kickoff_window_end(zurich) == dt.datetime(2024, 5, 2, 2, 0, tzinfo=dt.UTC)
    naive = dt.datetime(2024, 5, 2, 2, 0, 1)
    assert kickoff_window_end(naive) == dt.datetime(2024, 5, 2, 2, 0, tzinfo=dt.UTC)


_check_env = flyte.TaskEnvironment(name="schedule-check-test", image="ghcr.io/example/tiny:v1")


@_check_env.task(triggers=[daily_trigger()])
async def _scheduled(run_ts: dt.datetime, days: int = 1) -> str:
    return f"{run_ts:%Y-%m-%d} {days}"


@_check_env.task
async def _needs_more(run_ts: dt.datetime, start: dt.datetime) -> str:
    return f"{run_ts} {start}"


def test_check_trigger_inputs() -> None:
    check_trigger_inputs(_scheduled)  # run_ts from the trigger, days from its default
    with pytest.raises(UsageError) as caught:
        check_trigger_inputs(_needs_more, [daily_trigger()])
    assert str(caught.value) == (
        f"trigger 'daily' of task {_needs_more.name} leaves required inputs start without a "
        "value: give them defaults or trigger inputs"
    )


# Deploys `envs` for real, offline: the control plane's two calls are recorded instead of sent.
# `deploy_task` gets the full DeployTaskRequest (task spec + triggers); the trigger-input upload
# answers UNIMPLEMENTED, as a control plane without zero trust does, so the inputs stay inline.
_DEPLOY_HARNESS = """
import json, pathlib
import flyte
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyte._initialize import get_client
from google.protobuf.json_format import MessageToDict

def deploy_offline(*envs, root_dir, dry_run=False):
    flyte.init(endpoint="dns:///localhost:30080", insecure=True, project="quakecat",
               domain="development", root_dir=pathlib.Path(root_dir), log_level=50)
    sent = []

    class Tasks:
        async def deploy_task(self, request):
            sent.append(request)

    class DataProxy:
        async def upload_trigger(self, request):
            raise ConnectError(Code.UNIMPLEMENTED, "zero trust is off")

    get_client()._task_service = Tasks()
    get_client()._dataproxy = DataProxy()
    deployments = flyte.deploy(*envs, dry_run=dry_run, version="v1", copy_style="none")
    return deployments, [MessageToDict(r) for r in sent]
"""

_TINY_FLOW = """
import datetime as dt
import flyte
from pipelines.schedule import daily_trigger

env = flyte.TaskEnvironment(name="tiny", image="ghcr.io/example/tiny:v1")

@env.task(triggers=[daily_trigger("30 3 * * MON-FRI", "Europe/Zurich")])
async def nightly(run_ts: dt.datetime, days: int = 2) -> str:
    return f"{run_ts:%Y-%m-%d} {days}"

broken = flyte.TaskEnvironment(name="tiny-broken", image="ghcr.io/example/tiny:v1")

@broken.task(triggers=[daily_trigger()])
async def no_kickoff_input(start: dt.datetime) -> str:
    return str(start)

if __name__ == "__main__":
    result = {}
    here = pathlib.Path(__file__).parent
    dry, _ = deploy_offline(env, root_dir=here, dry_run=True)
    [entity] = dry[0].envs["tiny"].deployed_entities
    result["dry_run_triggers"] = len(entity.deployed_triggers)
    _, sent = deploy_offline(env, root_dir=here)
    result["requests"] = sent
    try:
        deploy_offline(broken, root_dir=here)
    except Exception as exc:
        result["broken"] = f"{type(exc).__name__}: {exc}"
    print("RESULT " + json.dumps(result))
"""


def _run_offline(tmp_path: Path, script: str, **extra_env: str) -> dict:
    """Run ``script`` with the deploy harness in a fresh interpreter (``extra_env`` added to
    its environment); return what it printed."""
    path = tmp_path / "flow.py"
    path.write_text(textwrap.dedent(_DEPLOY_HARNESS) + textwrap.dedent(script))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLYTE_", "UCTL_", "FLYTECTL_", "_U_"))
    }
    env.update(HOME=str(tmp_path), DO_NOT_TRACK="1", PYTHONPATH=str(PROJECT_ROOT), **extra_env)
    done = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_trigger_serialised_by_deploy(tmp_path: Path) -> None:
    result = _run_offline(tmp_path, _TINY_FLOW)

    # A dry run serialises the task but not its triggers (flyte 2.12: `_deploy_task` returns
    # before `to_task_trigger`); the real deploy path below is where they are serialised.
    assert result["dry_run_triggers"] == 0

    [request] = result["requests"]
    assert request["taskId"]["name"] == "tiny.nightly"
    assert request["taskId"]["version"] == "v1"
    assert request["taskId"]["project"] == "quakecat"
    inputs = request["spec"]["taskTemplate"]["interface"]["inputs"]["variables"]
    assert {v["key"]: v["value"]["type"] for v in inputs} == {
        "run_ts": {"simple": "DATETIME"},
        "days": {"simple": "INTEGER"},
    }
    [trigger] = request["triggers"]
    assert trigger["name"] == "daily"
    assert trigger["spec"]["active"] is True
    assert trigger["automationSpec"] == {
        "type": "TYPE_SCHEDULE",
        "schedule": {
            "cron": {"expression": "30 3 * * MON-FRI", "timezone": "Europe/Zurich"},
            "kickoffTimeInputArg": "run_ts",
        },
    }
    # The kickoff time is not a stored value: the runtime fills run_ts from the run's start
    # time, found through this context key. Task defaults travel with the trigger.
    assert trigger["spec"]["inputs"]["context"] == [
        {"key": "_u_kickoff_time_input_arg", "value": "run_ts"}
    ]
    assert trigger["spec"]["inputs"]["literals"] == [
        {"name": "days", "value": {"scalar": {"primitive": {"integer": "2"}}}}
    ]

    # A task without the run_ts input is refused at deploy time, before anything is sent.
    assert result["broken"].startswith("DeploymentError: Failed to deploy task tiny-broken.")
    assert "the TriggerTime input 'run_ts' must be an input to the task" in result["broken"]


_REAL_FLOW = """
from pipelines.envs import PROJECT_ROOT, driver
import pipelines.etl  # noqa: F401  (registers the tasks)
from pipelines.schedule import check_trigger_inputs

if __name__ == "__main__":
    deployments, sent = deploy_offline(driver, root_dir=PROJECT_ROOT)
    unchecked = []
    for env in (driver, *driver.depends_on):
        for task in env.tasks.values():
            try:
                check_trigger_inputs(task)
            except Exception as exc:
                unchecked.append(str(exc))
    print("RESULT " + json.dumps({"requests": sent, "input_errors": unchecked}))
"""


@pytest.mark.slow
def test_real_environments_serialise(tmp_path: Path) -> None:
    """Deploys quakecat-driver and quakecat-worker offline; checks any trigger they carry."""
    from pipelines.schedule import KICKOFF_INPUT

    result = _run_offline(tmp_path, _REAL_FLOW)
    names = {r["taskId"]["name"] for r in result["requests"]}
    assert "quakecat-driver.etl" in names
    assert any(name.startswith("quakecat-worker.") for name in names)
    for request in result["requests"]:
        assert request["spec"]["taskTemplate"]["container"]["image"]
    assert result["input_errors"] == []

    triggers = [(r["taskId"]["name"], t) for r in result["requests"] for t in r.get("triggers", [])]
    if not triggers:
        pytest.skip("no task carries a trigger yet: attach daily_trigger() to the top-level task")
    for task, trigger in triggers:
        schedule = trigger["automationSpec"]["schedule"]
        assert validate_cron(schedule["cron"]["expression"]) == schedule["cron"]["expression"]
        assert validate_timezone(schedule["cron"].get("timezone", "UTC"))
        assert schedule["kickoffTimeInputArg"] == KICKOFF_INPUT, task


@pytest.mark.slow
def test_the_schedule_passes_the_archive_set_when_deploying(tmp_path: Path) -> None:
    """QUAKECAT_ARCHIVE at deploy time: every scheduled run adds to that one database."""
    archive = "s3://bucket/quakecat/quakes.sqlite"
    result = _run_offline(tmp_path, _REAL_FLOW, QUAKECAT_ARCHIVE=archive)
    [trigger] = [t for r in result["requests"] for t in r.get("triggers", [])]
    literals = {x["name"]: x["value"] for x in trigger["spec"]["inputs"]["literals"]}
    assert literals["archive"] == {"scalar": {"primitive": {"stringValue": archive}}}
    assert literals["fmt"] == {"scalar": {"primitive": {"stringValue": "sqlite"}}}
    assert trigger["automationSpec"]["schedule"]["kickoffTimeInputArg"] == "run_ts"
