"""The task environments and their image, declared once; every task module imports them."""

from pathlib import Path

import flyte

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Built from the uv project and its lock, so the cluster runs exactly what `uv sync --locked` runs.
image = flyte.Image.from_debian_base(python_version=(3, 11), name="quakecat").with_uv_project(
    pyproject_file=PROJECT_ROOT / "pyproject.toml",
    project_install_mode="install_project",
)

# Extract, transform and load: one partition per call, network-bound or columnar CPU work.
worker = flyte.TaskEnvironment(
    name="quakecat-worker",
    image=image,
    resources=flyte.Resources(cpu=1, memory="2Gi"),
)

# The top-level task only plans and waits on workers.
driver = flyte.TaskEnvironment(
    name="quakecat-driver",
    image=image,
    resources=flyte.Resources(cpu=1, memory="1Gi"),
    depends_on=[worker],
)
