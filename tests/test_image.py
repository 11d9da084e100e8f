"""The cluster image, as `flyte deploy` builds it: rendered with Flyte's own image builder (its
Dockerfile step and build context), since no Docker daemon runs here."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import flyte
from flyte._internal.imagebuild.docker_builder import _process_layer
from flyte._internal.imagebuild.utils import get_and_list_dockerignore

from pipelines.envs import PROJECT_ROOT, image


def _render(context: Path) -> str:
    """The Dockerfile lines the image's layers add; their files land in ``context``."""
    dockerfile = ""
    for layer in image._layers:
        dockerfile = asyncio.run(
            _process_layer(layer, context, dockerfile, get_and_list_dockerignore(image))
        )
    return dockerfile


def test_the_build_context_holds_the_code_and_nothing_local(tmp_path: Path):
    # Deployed from elsewhere: the project's .dockerignore still applies.
    flyte.init(root_dir=tmp_path)
    _render(tmp_path)
    (project,) = {p.parent for p in tmp_path.rglob("pyproject.toml")}
    sent = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    code = sorted(
        str(p.relative_to(PROJECT_ROOT))
        for folder in ("pipelines", "schemas")
        for p in (PROJECT_ROOT / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    # No virtualenv, git objects, local archive (data/) or Flyte cache: those made it 740 MB.
    assert sent == sorted([*code, ".dockerignore", "README.md", "pyproject.toml", "uv.lock"])


def test_the_image_installs_the_lock_without_the_dev_group(tmp_path: Path):
    flyte.init(root_dir=PROJECT_ROOT)
    (sync,) = re.findall(r"uv sync [^\n]*", _render(tmp_path))
    assert {"--locked", "--no-dev", "--no-editable"} <= set(sync.split()), sync
