"""Benchmark 3: throughput. 100 sessions x 3 turns against a model taking 2 s, 16 calls at once.

The turns go through what the adapters use: EditService.submit_edit records each turn, and a
TurnPipeline on the store's turn queue under the fleet cap (THREADEDIT_MAX_CONCURRENCY=16)
runs it; a session's turns follow one another (each is submitted when the previous one has
finished, as a person replying to the result would), sessions run side by side. The fake model
(its own process) answers each call 2 s after reading it, its own checking included, with a
~1 MB 2K JPEG.

Ideal wall time = ceil(sessions x turns / concurrency) x latency: every slot busy with a model
call all the time and nothing else costing anything (a session's 3 turns in a row never bind
here, since 3 x 2 s is far less). Wall time is measured from the first submit to the last result.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from bench import charts, report
from bench.common import Run
from bench.processes import fake_model
from bench.wiring import bench_app, instruction
from bot.domain import SessionKey, Turn
from bot.pipeline import TurnPipeline
from bot.results import TurnResult

NAME = "throughput"
TARGET_RATIO = 1.15


class _Clock:
    """The pipeline's listener: when each turn got its model slot and when run_turn returned."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.finished: dict[int, float] = {}

    async def turn_started(self, turn: Turn) -> None:
        self.started[turn.id] = time.time()

    async def turn_finished(self, result: TurnResult) -> None:
        self.finished[result.turn_id] = time.time()


async def run(ctx: Run, *, sessions: int | None = None, turns: int = 3,
              latency: float | None = None, concurrency: int = 16) -> dict[str, Any]:
    sessions = sessions or (32 if ctx.quick else 100)
    latency = latency or (1.0 if ctx.quick else 2.0)
    await ctx.photos_ready()
    async with fake_model(ctx.work, latency=latency) as fake:
        env = {"THREADEDIT_MAX_CONCURRENCY": str(concurrency)}
        async with bench_app(ctx.fresh_dir("throughput"), fake, **env) as app:
            clock = _Clock()
            pipeline = TurnPipeline(app.service, max_concurrency=concurrency, listener=clock)
            turn_of: dict[str, int] = {}

            async def session(s: int) -> list[str]:
                key = SessionKey("cli", "bench", "throughput", f"session-{s}")
                statuses = []
                for k in range(1, turns + 1):
                    text = f"{instruction(k)} [session {s}]"
                    turn = await app.service.submit_edit(key, f"user-{s}", text)
                    turn_of[text] = turn.id
                    statuses.append((await pipeline.submit(turn)).status)
                return statuses

            fake_cpu0 = (await fake.stats(since=1 << 30))["cpu_s"]
            cpu0, t0 = time.process_time(), time.perf_counter()
            began = time.time()
            outcomes = await asyncio.gather(*(session(s) for s in range(1, sessions + 1)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            await pipeline.aclose()
            stats = await fake.stats()
    total = sessions * turns
    ideal = math.ceil(total / concurrency) * latency
    ok = sum(1 for o in outcomes for status in o if status == "ok")
    calls = stats["requests"]
    busy = sum(c["t_end"] - c["t_start"] for c in calls)
    # Time a turn held its model slot outside the model call: before it (loading the session,
    # building and sending the request) and after it (reading, storing, recording the answer).
    before, after = [], []
    for c in calls:
        tid = turn_of.get(c["label"])
        if tid in clock.started and tid in clock.finished:
            before.append(c["t_start"] - clock.started[tid])
            after.append(clock.finished[tid] - c["t_end"])
    result = {
        "sessions": sessions, "turns": turns, "latency_s": latency, "concurrency": concurrency,
        "turns_total": total, "turns_ok": ok, "model_calls": len(calls),
        "wall_s": wall, "ideal_s": ideal, "ratio": wall / ideal,
        "max_in_flight": stats["max_in_flight"], "bot_cpu_s": cpu,
        "fake_cpu_s": stats["cpu_s"] - fake_cpu0,
        "slot_before_call_ms": {"median": report.median(before) * 1000,
                                "p95": report.p95(before) * 1000},
        "slot_after_call_ms": {"median": report.median(after) * 1000,
                               "p95": report.p95(after) * 1000},
        "slot_utilisation": busy / (wall * concurrency),
        "calls": [{"t_start": c["t_start"] - began, "t_end": c["t_end"] - began} for c in calls],
        "target": f"wall within {TARGET_RATIO - 1:.0%} of ideal",
        "pass": ok == total and wall / ideal <= TARGET_RATIO,
    }
    _print(result)
    charts.throughput(result, ctx.chart(NAME))
    return result


def _print(r: dict[str, Any]) -> None:
    report.heading("3. Throughput: sessions x turns against a slow model, capped concurrency")
    print(f"{r['sessions']} sessions x {r['turns']} turns, model latency {r['latency_s']:g} s, "
          f"THREADEDIT_MAX_CONCURRENCY={r['concurrency']}. Ideal = ceil({r['turns_total']}/"
          f"{r['concurrency']}) x {r['latency_s']:g} s.")
    report.table(
        ["turns ok", "model calls", "wall s", "ideal s", "wall/ideal", "max in flight",
         "slots at model", "bot CPU s", "fake CPU s"],
        [[f"{r['turns_ok']}/{r['turns_total']}", r["model_calls"], f"{r['wall_s']:.2f}",
          f"{r['ideal_s']:.2f}", f"{r['ratio']:.3f}", f"{r['max_in_flight']}/{r['concurrency']}",
          f"{r['slot_utilisation']:.0%}", f"{r['bot_cpu_s']:.2f}", f"{r['fake_cpu_s']:.2f}"]])
    b, a = r["slot_before_call_ms"], r["slot_after_call_ms"]
    print(f"A turn holds its slot {b['median']:.0f} ms (p95 {b['p95']:.0f}) before the call reaches "
          f"the model and {a['median']:.0f} ms (p95 {a['p95']:.0f}) after the answer leaves it "
          "(median per turn).")
    issue = (100, 3, 2.0, 16) == (r["sessions"], r["turns"], r["latency_s"], r["concurrency"])
    note = "" if issue else " (a smaller run than the issue's 100 x 3 at 2 s: indicative only)"
    print(f"Target: {r['target']}: {report.verdict(r['pass'])}{note}")
