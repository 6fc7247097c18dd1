"""Printing: the machine the figures came from, plain fixed-width tables, PASS/MISS verdicts.

Benchmarks report; they never fail. A verdict says how a figure compares with the issue's
target and is there to be read, not to stop a build: `python -m bench` exits 0 either way.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MB = 1_000_000
MIB = 1024 * 1024


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _git_revision(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" (with uncommitted changes)" if dirty else "")


def _filesystem_of(path: Path) -> str:
    """The mount type under `path` (fsync costs differ a lot between ext4, overlay and tmpfs)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    except OSError:
        pass
    return kind


def machine_info(repo: Path, work_dir: Path) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_mb": _mem_total_mb(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "data_dir_fs": _filesystem_of(work_dir),
        "git": _git_revision(repo),
    }


def print_machine(info: dict[str, Any]) -> None:
    print(f"Machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), "
          f"{info['memory_mb']} MB RAM")
    print(f"Python {info['python']} on {info['platform']}; data directories on "
          f"{info['data_dir_fs']}; threadedit at {info['git']}")


def heading(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Right-aligned columns except the first; every cell is already formatted text."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)])

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile: with under 20 samples, this is the largest one."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-95 * len(ordered) // 100))  # ceil(0.95 * n)
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def mb(n_bytes: float) -> str:
    return f"{n_bytes / MB:.2f}"
