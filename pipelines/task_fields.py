"""Field defaults for dataclasses that cross task boundaries on every call."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def default(value: Any) -> Any:
    """``value`` as a dataclass field's default, given through a factory.

    flyte 2.12 rebuilds the JSON schema of every dataclass input and output on every task call,
    and for each plain default mashumaro compiles a throwaway dataclass to render it (about
    1.5 ms a field). Across a run's per-partition calls that was 0.5 s of a warm re-run.
    A factory default is not rendered, so the schema costs a fraction of a millisecond.
    Every instance gets ``value`` itself: give immutable values only, as with a plain default.
    """
    return field(default_factory=lambda: value)
