"""Keep the allocators from hoarding memory across the many short-lived task threads.

Flyte runs every sync task call in a thread of its own. Arrow's default allocator (mimalloc)
and glibc's malloc both give each thread its own heap or arena and keep the pages a finished
thread freed, so a run's resident memory grew with its number of partitions (1 year: 730 MB,
3 years: 810 MB peak). Arrow on the system allocator with glibc held to two arenas keeps a run
near one partition's worth (1 year: 530 MB, 3 years: 710 MB; measured with `just bench`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pyarrow as pa

_M_ARENA_MAX = -8  # glibc's mallopt parameter number
_ARENAS = 2


def bound_allocator_growth() -> None:
    pa.set_memory_pool(pa.system_memory_pool())
    if sys.platform.startswith("linux"):
        libc_name = ctypes.util.find_library("c")
        if libc_name:
            libc = ctypes.CDLL(libc_name)
            if hasattr(libc, "mallopt"):
                libc.mallopt(_M_ARENA_MAX, _ARENAS)
