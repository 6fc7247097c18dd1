"""Benchmark 1: the bot's own time per turn, model time excluded, at turns 1, 10, 30 and 60.

Several sessions are taken, one after another (never two turns at once, so nothing competes),
through 60 edits each on the real EditService that `open_app` builds, against the fake model
with zero latency returning 2048x2048 photo-like JPEGs of about 1 MB (Gemini 3.1 Flash Image, 2K).

Bot time of a turn = wall time of `submit_edit` + `run_turn`, minus the fake's handling time for
that turn's request as the fake measured it (`server_s`: parsing and checking the request and
building its answer).
 Included: recording the queued turn (SQLite, or PostgreSQL with --store postgresql), loading
 the session, reading the history's images from disk and base64-encoding them, the context
 policy (if any), building the request and its JSON, the spend guard's reserve and settle, the
 HTTP client over loopback (sending the body, receiving the answer, both sockets' copying),
 parsing the answer's JSON, decoding the image, storing it (sha256, write, fsync of file and
 directory), the store's writes that make it a version, and reading back the result.
 Excluded: everything the fake does between having read the request body and having built its
 answer (the part a real model spends as model time). The fake runs in its own process, so its
 CPU is never on the bot's core; `cpu` is the bot process's CPU time per turn (all threads,
 SQLite's included), which excludes waits such as fsync.
Figures are per checkpoint k over turns k-4..k of every session (turn 1: just turn 1). A
two-turn warm-up session runs first and is not counted (the first HTTP connection, first use of
each code path), since a running bot is warm.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bench import charts, report
from bench.common import Run
from bench.processes import fake_model
from bench.wiring import bench_app, context_settings, instruction
from bot.domain import SessionKey

NAME = "turn_time"
CHECKPOINTS = (1, 10, 30, 60)
WINDOW = 5
TARGET_MS = 50.0


@asynccontextmanager
async def store_env(store: str) -> AsyncIterator[dict[str, str]]:
    """THREADEDIT_DATABASE_URL for the chosen store: none for SQLite (the data directory's file);
    for PostgreSQL the one set in the environment, else a throwaway server of our own (started as
    the tests start theirs, tests/postgres.py) for the length of the run."""
    if store != "postgresql":
        yield {}
        return
    if os.environ.get("THREADEDIT_DATABASE_URL", "").startswith("postgresql"):
        yield {"THREADEDIT_DATABASE_URL": os.environ["THREADEDIT_DATABASE_URL"]}
        return
    from tests.postgres import Cluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("--store postgresql needs THREADEDIT_DATABASE_URL or PostgreSQL's server "
                           "binaries (apt-get install postgresql)")
    cluster = Cluster(bin_dir).start()
    try:
        yield {"THREADEDIT_DATABASE_URL": cluster.new_database()}
    finally:
        cluster.stop()


async def run(ctx: Run, *, sessions: int | None = None, turns: int = 60) -> dict[str, Any]:
    sessions = sessions or (1 if ctx.quick else 5)
    await ctx.photos_ready()
    samples: list[dict[str, Any]] = []
    failures: list[str] = []
    async with fake_model(ctx.work, latency=0.0) as fake, store_env(ctx.store) as db:
        async with bench_app(ctx.fresh_dir("turn-time"), fake, **db) as app:
            settings = context_settings(app.settings)
            warm_up = SessionKey("cli", "bench", "turn-time", "warm-up")
            for k in (1, 2):
                await app.service.run_turn(
                    (await app.service.submit_edit(warm_up, "bench", instruction(k))).id)
            for s in range(1, sessions + 1):
                first = (await fake.stats())["count"]
                key = SessionKey("cli", "bench", "turn-time", f"session-{s}")
                mine: list[dict[str, Any]] = []
                for k in range(1, turns + 1):
                    cpu0, t0 = time.process_time(), time.perf_counter()
                    turn = await app.service.submit_edit(key, "bench", instruction(k))
                    result = await app.service.run_turn(turn.id)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                    if result.status != "ok":
                        failures.append(f"session {s} turn {k}: {result.status} "
                                        f"({result.reason}: {result.message})")
                        break
                    mine.append({"session": s, "turn": k, "wall": wall, "cpu": cpu})
                served = (await fake.stats(first))["requests"]
                # One request per successful turn, in order (a retried call would show a
                # non-200 answer first and make the pairing wrong: such a session is left out).
                if len(served) < len(mine) or any(q["status"] != 200 for q in served[:len(mine)]):
                    failures.append(f"session {s}: requests and turns do not pair up one to one "
                                    "(a retry?); left out")
                    continue
                for sample, req in zip(mine, served, strict=False):
                    sample.update(server=req["server_s"], bot=sample["wall"] - req["server_s"],
                                  bytes=req["bytes"], images=req["images"])
                samples.extend(mine)
    result = _summarise(samples, sessions, turns, failures, settings)
    result["store"] = ctx.store
    _print(result)
    charts.turn_time(result, ctx.chart(NAME))
    return result


def _window(k: int) -> range:
    return range(1, 2) if k == 1 else range(max(2, k - WINDOW + 1), k + 1)


def _summarise(samples: list[dict[str, Any]], sessions: int, turns: int, failures: list[str],
               settings: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for k in CHECKPOINTS:
        if k > turns:
            continue
        picked = [x for x in samples if x["turn"] in _window(k)]
        if not picked:
            continue

        def col(name: str, values: list[dict[str, Any]] = picked) -> list[float]:
            return [float(x[name]) for x in values]

        rows.append({
            "turn": k, "n": len(picked), "bot_median_ms": report.median(col("bot")) * 1000,
            "bot_p95_ms": report.p95(col("bot")) * 1000,
            "wall_median_ms": report.median(col("wall")) * 1000,
            "model_median_ms": report.median(col("server")) * 1000,
            "cpu_median_ms": report.median(col("cpu")) * 1000,
            "request_mb": report.median(col("bytes")) / report.MB,
            "images_sent": report.median(col("images")),
        })
    at60 = next((r for r in rows if r["turn"] == 60), None)
    # Bot time follows request size, which the context policy keeps in a sawtooth: also the
    # turns that sent the largest requests, wherever they fell.
    top = max((x["bytes"] for x in samples), default=0)
    big = [x for x in samples if x["bytes"] >= 0.9 * top and x["turn"] > 1]
    largest = {"n": len(big), "request_mb": top / report.MB,
               "bot_median_ms": report.median([x["bot"] for x in big]) * 1000,
               "bot_p95_ms": report.p95([x["bot"] for x in big]) * 1000}
    return {
        "sessions": sessions, "turns": turns, "checkpoints": rows, "samples": samples,
        "failures": failures, "context_settings": settings, "largest_requests": largest,
        "target": f"turn 60 median bot time < {TARGET_MS:g} ms",
        "pass": None if at60 is None else at60["bot_median_ms"] < TARGET_MS,
    }


def _print(r: dict[str, Any]) -> None:
    report.heading("1. Bot time per turn, model time excluded (2K JPEG results, zero-latency model)")
    print(f"Store: {r.get('store', 'sqlite')}. "
          f"{r['sessions']} session(s) x {r['turns']} turns, run one turn at a time; each row is "
          f"turns k-{WINDOW - 1}..k of every session. Context settings: "
          f"{r['context_settings'] or 'none (full replay)'}")
    report.table(
        ["turn", "n", "bot median ms", "bot p95 ms", "wall ms", "fake ms", "bot CPU ms",
         "request MB", "images sent"],
        [[c["turn"], c["n"], f"{c['bot_median_ms']:.1f}", f"{c['bot_p95_ms']:.1f}",
          f"{c['wall_median_ms']:.1f}", f"{c['model_median_ms']:.1f}",
          f"{c['cpu_median_ms']:.1f}", f"{c['request_mb']:.2f}", f"{c['images_sent']:g}"]
         for c in r["checkpoints"]])
    rows = r["checkpoints"]
    if rows and rows[0]["turn"] == 1 and rows[-1]["turn"] > 1:
        print(f"Turn {rows[-1]['turn']} / turn 1 bot time (median): "
              f"{rows[-1]['bot_median_ms'] / rows[0]['bot_median_ms']:.1f}x")
    big = r["largest_requests"]
    if big["n"]:
        print(f"Turns sending the largest requests (>= 90% of {big['request_mb']:.2f} MB, n={big['n']}): "
              f"bot median {big['bot_median_ms']:.1f} ms, p95 {big['bot_p95_ms']:.1f} ms.")
    for failure in r["failures"]:
        print(f"FAILED {failure}")
    print(f"Target: {r['target']}: {report.verdict(r['pass'])}")
