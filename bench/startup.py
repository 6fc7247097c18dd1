"""Benchmark 5: start-up time to ready.

Time from spawning `python -m threadedit playground --port 0` (the process `threadedit playground`
runs) until GET / first answers 200, the home page with its session list; median of several
starts, each a new process:
 empty: a new, empty data directory every time (the schema's migrations run in the timing);
 seeded: a copy of the 1,000-session directory of benchmark 4 (copied before the clock starts).
The Gemini engine is configured (pointed at a fake model; nothing calls it while starting).
One start before them is not counted (it reads the code from disk).
Also: importing the code, each in a new process after one warm-up run (files in the OS's cache,
.pyc files written unless PYTHONDONTWRITEBYTECODE is set, which the output then says: every
import compiles from source, ~0.05 s more here), timed inside the process with perf_counter
around the import statements; and `python -c pass`, the interpreter's own start, for scale.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import charts, report
from bench.common import Run
from bench.processes import REPO, app_env, clean_env, fake_model, playground, wait_ready

NAME = "startup"
IMPORTS = {
    "core (bot.app, bot.service, bot.gemini.client, bot.pipeline)":
        "import bot.app, bot.service, bot.gemini.client, bot.pipeline",
    "playground (adapters.playground.server)": "import adapters.playground.server",
    "everything (+ Slack and Discord adapters)":
        "import adapters.playground.server, adapters.runner, adapters.slack.app, "
        "adapters.discord.app",
}


async def run(ctx: Run, *, starts: int | None = None, stored: int = 1000) -> dict[str, Any]:
    starts = starts or (2 if ctx.quick else 5)
    await ctx.photos_ready()
    kinds: dict[str, list[float]] = {"empty": [], f"seeded ({stored:,} sessions)": []}
    async with fake_model(ctx.work, latency=0.0, trust_history=True) as fake:
        # One start not counted: the first reads every module from disk into the page cache.
        async with playground(ctx.work, app_env(ctx.fresh_dir("startup-warm") / "data", fake)) as pg:
            await wait_ready(pg.url + "/")
        for _ in range(starts):
            for kind, times in kinds.items():
                if kind == "empty":
                    data_dir = ctx.fresh_dir("startup-empty") / "data"
                else:
                    data_dir, _ids = await ctx.seeded_copy(stored, 3)
                async with playground(ctx.work, app_env(data_dir, fake)) as pg:
                    ready = await wait_ready(pg.url + "/")
                    times.append(ready - pg.spawned_at)
    imports = {label: await asyncio.to_thread(_import_time, code, starts)
               for label, code in IMPORTS.items()}
    interpreter = await asyncio.to_thread(_interpreter_start, starts)
    result = {
        "starts": starts,
        "to_ready_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v),
                           "runs": v} for k, v in kinds.items()},
        "import_s": imports, "python_start_s": interpreter,
        "bytecode_written": not os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "target": "none set by the issue (reported only)", "pass": None,
    }
    _print(result)
    charts.startup(result, ctx.chart(NAME))
    return result


def _import_time(code: str, runs: int) -> float:
    program = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    cmd = [sys.executable, "-c", program]
    subprocess.run(cmd, cwd=REPO, env=clean_env(), check=True, capture_output=True)  # warm-up
    times = [float(subprocess.run(cmd, cwd=REPO, env=clean_env(), check=True, text=True,
                                  capture_output=True).stdout) for _ in range(runs)]
    return statistics.median(times)


def _interpreter_start(runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _print(r: dict[str, Any]) -> None:
    report.heading("5. Start-up: `threadedit playground` from spawn to its first 200")
    report.table(["data directory", "median s", "min s", "max s", "runs"],
                 [[k, f"{v['median']:.3f}", f"{v['min']:.3f}", f"{v['max']:.3f}", len(v["runs"])]
                  for k, v in r["to_ready_s"].items()])
    print()
    report.table(["import (new process, median)", "s"],
                 [[k, f"{v:.3f}"] for k, v in r["import_s"].items()]
                 + [["python -c pass (whole process)", f"{r['python_start_s']:.3f}"]])
    if not r["bytecode_written"]:
        print("PYTHONDONTWRITEBYTECODE is set in this environment: imports compile from source.")
    print(f"Target: {r['target']}")
