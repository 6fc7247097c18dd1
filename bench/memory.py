"""Benchmark 4: resident memory of `threadedit playground` with 1,000 stored sessions and 100
active ones.

The process measured is the real one an operator runs (`python -m threadedit playground`), on a data
directory seeded with 1,000 playground sessions of 3 versions each (2K, ~1 MB images; see
seed.py), pointed at the fake model in hold mode (no answer leaves until released). Then:
 idle: VmRSS 1 s after it first answered GET / (the home page lists the 100 newest sessions);
 held: 100 edits are posted over HTTP, as the page posts them, to 100 stored sessions, so each
   has a turn under way; once the fake sees as many calls waiting as the cap allows
   (THREADEDIT_MAX_CONCURRENCY; the rest wait in the pipeline's queue), the largest VmRSS over
   the next second;
 peak: the answers are released and all 100 turns finish (each stores a new 1 MB version);
   VmHWM, the most the process was ever resident, read at the end.
VmRSS and VmHWM come from /proc/<pid>/status. This is done for each concurrency cap in turn (the
default, 4; 16, the throughput benchmark's; 100, every active turn at the model at once), since
every call in flight holds its whole request in memory. --quick does the default only.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from bench import charts, report
from bench.common import Run
from bench.processes import ChildFailed, app_env, fake_model, playground, rss_kb, wait_ready
from bench.wiring import instruction

NAME = "memory"
TARGET_MB = 200.0
# The target is judged at the shipped default of THREADEDIT_MAX_CONCURRENCY; the larger caps
# show what each further call in flight costs (about its request's size, held while it runs).
DEFAULT_CAP = 4


async def run(ctx: Run, *, stored: int = 1000, versions: int = 3, active: int | None = None,
              caps: tuple[int, ...] | None = None) -> dict[str, Any]:
    active = active or 100
    caps = caps or ((DEFAULT_CAP,) if ctx.quick else (DEFAULT_CAP, 16, 100))
    await ctx.photos_ready()
    phases = [await _phase(ctx, stored, versions, active, cap) for cap in caps]
    result = {"stored": stored, "versions": versions, "active": active, "phases": phases,
              "target": f"resident memory < {TARGET_MB:g} MB (peak, VmHWM) at the default "
                        f"concurrency of {DEFAULT_CAP}",
              "pass": all(p["peak_mb"] < TARGET_MB and p["done"] == active
                          for p in phases if p["cap"] == DEFAULT_CAP)}
    _print(result)
    charts.memory(result, ctx.chart(NAME))
    return result


async def _phase(ctx: Run, stored: int, versions: int, active: int, cap: int) -> dict[str, Any]:
    data_dir, ids = await ctx.seeded_copy(stored, versions)
    targets = ids[-active:]  # the newest: the ones the home page lists
    timeline: list[tuple[float, float, str]] = []
    async with fake_model(ctx.work, latency=None, trust_history=True) as fake:
        env = app_env(data_dir, fake, THREADEDIT_MAX_CONCURRENCY=str(cap))
        async with playground(ctx.work, env) as pg:
            pid = pg.proc.pid
            ready = await wait_ready(pg.url + "/")
            t0 = ready

            def sample(label: str) -> float:
                rss = rss_kb(pid)["VmRSS"] / 1024
                timeline.append((time.perf_counter() - t0, rss, label))
                return rss

            await asyncio.sleep(1.0)
            idle = sample("idle")
            async with httpx.AsyncClient(base_url=pg.url, trust_env=False, timeout=60) as client:
                await _post_edits(client, targets)
                await _until(lambda s: s["in_flight"] >= min(cap, active), fake)
                held = max([sample("held")] + [await _later(sample, "held") for _ in range(20)])
                await fake.release()
                watcher = asyncio.create_task(_watch(sample))
                await _until(lambda s: s["count"] >= active and s["in_flight"] == 0, fake,
                             within=300)
                await _until_idle(client, targets)
                watcher.cancel()
                peak = rss_kb(pid)["VmHWM"] / 1024
                after = sample("after")
    done = _finished(data_dir, targets, versions)
    return {"cap": cap, "idle_mb": idle, "held_mb": held, "peak_mb": peak, "after_mb": after,
            "done": done, "timeline": timeline}


async def _later(sample: Any, label: str) -> float:
    await asyncio.sleep(0.05)
    return float(sample(label))


async def _watch(sample: Any) -> None:
    while True:
        await asyncio.sleep(0.02)
        sample("finishing")


async def _post_edits(client: httpx.AsyncClient, targets: list[int]) -> None:
    gate = asyncio.Semaphore(8)

    async def post(n: int, sid: int) -> None:
        async with gate:
            r = await client.post(f"/s/{sid}/messages", data={
                "instruction": instruction(4 + n), "author": "bench"},
                headers={"Accept": "application/json"})
        if r.status_code != 200:
            raise ChildFailed(f"posting to session {sid} answered {r.status_code}: {r.text[:200]}")

    await asyncio.gather(*(post(n, sid) for n, sid in enumerate(targets)))


async def _until(check: Any, fake: Any, within: float = 60.0) -> None:
    deadline = time.perf_counter() + within
    while not check(await fake.stats(since=1 << 30)):
        if time.perf_counter() > deadline:
            raise ChildFailed(f"the fake model never reached the expected state: {await fake.stats(1 << 30)}")
        await asyncio.sleep(0.05)


async def _until_idle(client: httpx.AsyncClient, targets: list[int], within: float = 120) -> None:
    """Every session's page says no turn is under way (the answer is stored, not just sent)."""
    deadline = time.perf_counter() + within
    for sid in targets:
        while (await client.get(f"/s/{sid}/state")).json()["busy"]:
            if time.perf_counter() > deadline:
                raise ChildFailed(f"session {sid} still busy after {within:.0f} s")
            await asyncio.sleep(0.05)


def _finished(data_dir: Path, targets: list[int], versions: int) -> int:
    """How many of the targeted sessions gained a version (read after the process stopped)."""
    db = sqlite3.connect(data_dir / "threadedit.sqlite3")
    try:
        marks = ",".join("?" * len(targets))
        row = db.execute(f"SELECT COUNT(*) FROM turns WHERE session_id IN ({marks}) "
                         "AND state='done' AND version > ?", [*targets, versions]).fetchone()
    finally:
        db.close()
    return int(row[0])


def _print(r: dict[str, Any]) -> None:
    report.heading("4. Memory: threadedit playground with stored and active sessions")
    print(f"{r['stored']:,} stored sessions x {r['versions']} versions (2K images), "
          f"{r['active']} turns under way at once against a held model; resident set of the "
          "playground process (MB).")
    report.table(
        ["max concurrency", "idle", "held (in flight)", "peak (VmHWM)", "after", "turns done",
         "verdict"],
        [[p["cap"], f"{p['idle_mb']:.1f}", f"{p['held_mb']:.1f}", f"{p['peak_mb']:.1f}",
          f"{p['after_mb']:.1f}", f"{p['done']}/{r['active']}",
          report.verdict(p["peak_mb"] < TARGET_MB) if p["cap"] == DEFAULT_CAP else "(info)"]
         for p in r["phases"]])
    print(f"Target: {r['target']}: {report.verdict(r['pass'])}")
