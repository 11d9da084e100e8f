"""The task environments and their image, declared once; every task module imports them."""

from pathlib import Path

import flyte

from pipelines.memory import bound_allocator_growth

# Every task module imports this one, so this runs in every process that runs a task.
bound_allocator_growth()

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Built from the uv project and its lock, so the cluster runs exactly what `uv sync --locked` runs,
# less the dev group (pytest, ruff, the test S3 server). The build context is what .dockerignore
# lets through: the code, not the local archive or the virtualenv, wherever deploy runs from.
image = (
    flyte.Image.from_debian_base(python_version=(3, 11), name="quakecat")
    .with_dockerignore(PROJECT_ROOT / ".dockerignore")
    .with_uv_project(
        pyproject_file=PROJECT_ROOT / "pyproject.toml",
        project_install_mode="install_project",
        extra_args="--locked --no-dev",
    )
)

# Extract, transform and load: one partition per call, network-bound or columnar CPU work.
# Reusable replicas keep their process (and its HTTP client) between partitions. A replica runs
# one sync task at a time and a partition's requests go one after another, so at most 4
# replicas means at most 4 requests in flight cluster-wide: the default politeness budget.
# (The per-5-minutes rate is kept per replica.)
worker = flyte.TaskEnvironment(
    name="quakecat-worker",
    image=image,
    resources=flyte.Resources(cpu=1, memory="2Gi"),
    reusable=flyte.ReusePolicy(replicas=(1, 4), concurrency=1, idle_ttl=120, scaledown_ttl=60),
)

# The top-level task only plans and waits on workers.
driver = flyte.TaskEnvironment(
    name="quakecat-driver",
    image=image,
    resources=flyte.Resources(cpu=1, memory="1Gi"),
    depends_on=[worker],
)
