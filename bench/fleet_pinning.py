"""The ingress on a core of its own: the fleet benchmark's first-answer row as a real fleet runs it.

In a fleet the Slack replicas run on machines of their own, and the workers, the model and the
store on others. On the benchmark's one machine they all share its cores, so a first answer also
waits for the workers' CPU. This pins the replicas and the benchmark's own process (which serves
the fake Slack and sends the mentions) to the first core the benchmark may use, and the workers,
the fake model and the throwaway PostgreSQL server (its postmaster and every backend, so the
connections opened later too) to the others; afterwards everything gets back every core it had.
Only processes this run started are touched. Linux only (os.sched_setaffinity).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def usable_cores() -> list[int]:
    """The cores this process may run on ([] where affinity cannot be set)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def postgres_pids(cluster: Any) -> list[int]:
    """The throwaway server's postmaster (tests/postgres.py Cluster) and its children."""
    try:
        postmaster = int((Path(cluster.data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The parent pid is the second field after the command, which is in parentheses.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


def _pin(pids: Iterable[int], cores: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(pid, cores)


@contextlib.contextmanager
def ingress_core(ingress: list[int], others: list[int], cluster: Any) -> Iterator[str]:
    """Pin `ingress` pids and this process to one core, `others` and the server to the rest;
    yields a description of the placement. Needs two usable cores or more."""
    cores = usable_cores()
    assert len(cores) >= 2, "pinning the ingress needs two cores"
    everything = set(cores)
    ingress_set, rest = {cores[0]}, set(cores[1:])
    server = postgres_pids(cluster)
    me = os.getpid()  # the event loop's thread: the fake Slack and the sender of the mentions
    _pin([me, *ingress], ingress_set)
    _pin([*others, *server], rest)
    try:
        yield (f"replicas and fake Slack on core {cores[0]}; workers, fake model and PostgreSQL "
               f"on core{'s' if len(rest) > 1 else ''} {', '.join(map(str, sorted(rest)))}")
    finally:
        _pin([me, *ingress, *others, *postgres_pids(cluster)], everything)
