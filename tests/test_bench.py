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
    done = subprocess.run([sys.executable, "-m", "bench", *NAMES, "--quick", "--out", str(tmp_path)],
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


def test_the_fleet_benchmark_runs_and_reports(tmp_path: Path) -> None:
    # Its own run (about 40 s: a PostgreSQL server and a dozen threadedit processes started),
    # apart from the others so that a missing PostgreSQL skips only this one.
    pytest.importorskip("matplotlib")
    from tests.postgres import require_postgres

    require_postgres()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADEDIT_")}
    done = subprocess.run([sys.executable, "-m", "bench", "fleet", "--quick", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    fleet = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["fleet"]
    assert (tmp_path / "fleet.png").stat().st_size > 10_000
    for run in fleet["throughput"]:  # every turn ran, once, under the fleet's cap
        assert run["turns_ok"] == run["model_calls"] == run["turns_total"] > 0
        assert run["peak_calls"] <= fleet["cap"]
        assert sum(run["turns_per_worker"]) == run["turns_total"] and run["clean_stops"]
    answers = fleet["first_answer"]
    assert answers["answered"] == answers["mentions"] and answers["turns_unfinished"] == 0
    killed = fleet["killed_worker"]  # run again by the other worker, recorded once as v1
    assert (killed["status"], killed["version"], killed["taken_by_survivor"]) == ("ok", 1, True)
    assert "6. The fleet" in done.stdout and "Targets:" in done.stdout
