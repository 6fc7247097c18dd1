"""The benchmarks still run: `python -m bench --quick` as a real process, every figure present and
every chart drawn. Timings are not judged here (they depend on the machine); the request-size
bound is, since it does not depend on timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAMES = ["turn_time", "request_size", "throughput", "memory", "startup"]


def test_every_benchmark_runs_and_reports(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADEDIT_")}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results["benchmarks"]) == sorted(NAMES)
    assert "cores" in done.stdout.splitlines()[0]  # the machine comes first
    for name in NAMES:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    size = results["benchmarks"]["request_size"]
    assert size["pass"] and not size["bounded_over_limits"]
    assert size["last_bytes_ratio"] <= 0.25
    throughput = results["benchmarks"]["throughput"]
    assert throughput["turns_ok"] == throughput["turns_total"] > 0
