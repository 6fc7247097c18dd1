"""Keeping a long-running process's resident memory near what it uses (glibc only).

Each turn handles a few megabytes at a time (a request of up to 10 MB, an answer with a 2K
image), from the event loop and from worker threads. glibc's defaults keep such memory after it
is freed: its mmap threshold rises after each large free, so later large blocks come from the
heap and stay resident, and each thread may get an arena of its own (8 per core). Fixing the
threshold at 128 KiB and allowing two arenas lowered the playground's peak under
`python -m bench memory` (1,000 stored sessions, 100 active) from 111 to 102 MB at concurrency
4 and from 534 to 508 MB at 100, and what stays resident afterwards from 517 to 310 MB at 100,
for no measurable cost in time per turn. (Before requests were streamed from the blob store,
it was 230 to 173 MB at concurrency 4.)
Environment variables set by an operator (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2


def tune_allocator() -> bool:
    """Apply the settings above; True when glibc took them. Call before threads start."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    ok = True
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and ok
    if "MALLOC_ARENA_MAX" not in os.environ:
        ok = bool(mallopt(_M_ARENA_MAX, ARENA_MAX)) and ok
    log.debug("allocator tuned: %s", ok)
    return ok
