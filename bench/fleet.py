"""Benchmark 6: the fleet (issue 14): real `threadedit` processes on one PostgreSQL store.

1. Throughput. 100 sessions x 3 turns against the fake model answering in 2 s, fleet cap
   THREADEDIT_MAX_CONCURRENCY=16, with 1, 2 and 4 `threadedit worker` processes. The benchmark
   records the turns through EditService in its own process (platform "playground", so a worker
   takes them and has nothing to post) and plays the user: a session's next turn is recorded when
   its previous one has finished, as a person replies to a result. (Recording all three at once
   would give the same order, since the queue takes only a session's first unfinished turn; this
   way the wake-up path is measured too: a turn recorded while workers idle must reach one at
   once, through NOTIFY.) Ideal = turns x latency / cap (every slot busy all the time); wall time
   runs from the first turn recorded to the last one seen finished. The peak of concurrent model
   calls is the fake model's own count, across every worker.
2. First visible answer. Mentions arriving at once, split across two `threadedit run --no-worker`
   replicas (HTTP mode, signed as Slack signs), with two workers running: time from the start of
   each POST to the bot's first post in that thread at the fake Slack. Also (full runs) the
   replicas alone, no workers; and, on two cores or more, the replicas and the fake Slack pinned
   to a core of their own, the rest to the others, as a fleet puts the ingress on machines of
   its own (bench/fleet_pinning.py). The verdict is the first row's: the shared machine.
3. A killed worker's turn. Two workers; once a turn's call has reached the model, the worker
   holding it is killed with SIGKILL; time until the other one has recorded the turn's version,
   against "lease + one model call". The survivor sees the killed worker gone (its presence lock
   went with it) at its next look, so the lease is not waited out.

The PostgreSQL server is a throwaway one (tests/postgres.py: fsync and synchronous_commit off),
on this machine, shared with every process of the run; without PostgreSQL's server binaries
every part says "blocked".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from bench import charts, report
from bench.common import Run
from bench.fleet_pinning import usable_cores
from bench.fleet_procs import CpuMeter, child_env, postgres, process_cpu_seconds, start_many, stop_all
from bench.fleet_slack import first_answers
from bench.processes import FakeModel, fake_model
from bench.wiring import bench_app, instruction
from bot.app import App
from bot.domain import SessionKey
from bot.storage.engine import make_engine
from bot.storage.notices import listen_for_turns
from bot.storage.schema import turns

NAME = "fleet"
CAP = 16
TARGET_RATIO = 1.15
TARGET_FIRST_ANSWER_P95_S = 1.0
WORKER_UP = "threadedit worker: taking turns of"
KILLED_CALL_S = 2.0


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:  # about 30 s on two cores, most of it starting processes (tests/test_bench.py)
        return {"sessions": 16, "turns": 3, "latency": 0.5, "workers": (2,), "mentions": 10,
                "lease": 3.0}
    return {"sessions": 100, "turns": 3, "latency": 2.0, "workers": (1, 2, 4), "mentions": 50,
            "lease": 30.0}


async def run(ctx: Run) -> dict[str, Any]:
    size = _sizes(ctx.quick)
    await ctx.photos_ready()
    result: dict[str, Any] = {"sizes": {k: list(v) if isinstance(v, tuple) else v
                                        for k, v in size.items()}, "cap": CAP}
    async with postgres() as cluster:
        if cluster is None:
            result["blocked"] = ("no PostgreSQL server binaries (initdb, pg_ctl) in "
                                 "/usr/lib/postgresql/*/bin or on PATH: apt-get install postgresql")
        else:
            async with fake_model(ctx.work, latency=size["latency"]) as fake:
                if not ctx.first_answer_only:
                    result["throughput"] = [
                        await _throughput(ctx, cluster.new_database(), fake, workers, size)
                        for workers in size["workers"]]
                result["first_answer"] = await first_answers(
                    ctx, cluster.new_database(), fake, size["mentions"], CAP)
                if not ctx.quick or ctx.first_answer_only:
                    # The replicas alone: is the time theirs, or the machine's?
                    result["first_answer_alone"] = await first_answers(
                        ctx, cluster.new_database(), fake, size["mentions"], CAP, workers=0)
                if (not ctx.quick or ctx.first_answer_only) and len(usable_cores()) >= 2:
                    # As in a real fleet, the ingress on a machine of its own: the replicas and
                    # the fake Slack on one core, the workers, model and store on the others.
                    result["first_answer_pinned"] = await first_answers(
                        ctx, cluster.new_database(), fake, size["mentions"], CAP, pinned_in=cluster)
            # A model call of 2 s even in the quick run: the kill must land while the call is
            # under way, and the turn is then one call away from done.
            if not ctx.first_answer_only:
                async with fake_model(ctx.work, latency=KILLED_CALL_S) as fake:
                    result["killed_worker"] = await _killed_worker(
                        ctx, cluster.new_database(), fake, size["lease"], KILLED_CALL_S)
    result["pass"] = _verdict(result)
    _print(result, ctx.quick)
    if not ctx.first_answer_only:  # the chart is the throughput's
        charts.fleet(result, ctx.chart(NAME))
    return result


class TurnWatch:
    """Which of the turns the benchmark recorded have finished: woken by the store's NOTIFY (the
    workers' own signal), looking again every half second in case a notice was missed."""

    def __init__(self, app: App, database_url: str) -> None:
        self.app = app
        self._wake = asyncio.Event()
        self._listen = asyncio.create_task(listen_for_turns(database_url, self._wake.set))

    async def finished(self, turn_ids: list[int]) -> list[int]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await self._wake.wait()
        self._wake.clear()
        return await self.app.service.leases.finished_among(turn_ids)

    async def aclose(self) -> None:
        self._listen.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._listen


def _playground_key() -> SessionKey:
    return SessionKey("playground", "local", "local", uuid.uuid4().hex)


async def _drive(app: App, database_url: str, sessions: int, turns_each: int,
                 within: float) -> dict[str, Any]:
    """Play `sessions` users, each recording its next turn when its previous one finished."""
    keys = [_playground_key() for _ in range(sessions)]
    pending: dict[int, tuple[int, int]] = {}  # turn id -> (session, turn number)
    statuses: Counter[str] = Counter()
    watch = TurnWatch(app, database_url)
    try:
        began = time.time()
        t0 = time.perf_counter()
        for s in range(sessions):
            turn = await app.service.submit_edit(keys[s], f"user-{s}", f"{instruction(1)} [s{s}]")
            pending[turn.id] = (s, 1)
        deadline = t0 + within
        while pending:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(pending)} turns still unfinished after {within:.0f} s")
            for turn_id in await watch.finished(list(pending)):
                s, k = pending.pop(turn_id)
                statuses[(await app.service.result_of(turn_id)).status] += 1
                if k < turns_each:
                    turn = await app.service.submit_edit(
                        keys[s], f"user-{s}", f"{instruction(k + 1)} [s{s}]")
                    pending[turn.id] = (s, k + 1)
        wall = time.perf_counter() - t0
    finally:
        await watch.aclose()
    return {"wall_s": wall, "began": began, "statuses": dict(statuses)}


async def _owners(database_url: str) -> list[str | None]:
    """Who took each turn (the name stays on a finished turn)."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [row.lease_owner for row in await conn.execute(select(turns.c.lease_owner))]
    finally:
        await engine.dispose()


async def _lease_expiry(database_url: str, turn_id: int) -> float:
    """When the turn's lease runs out, as a Unix time."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(select(turns.c.lease_expires_at).where(turns.c.id == turn_id))
            return datetime.fromisoformat(found.scalar_one()).timestamp()
    finally:
        await engine.dispose()


def _pid_of(owner: str | None) -> int | None:
    """A worker's name is host:pid:random (bot/pipeline.py worker_name)."""
    try:
        return int((owner or "").split(":")[-2])
    except (IndexError, ValueError):
        return None


async def _throughput(ctx: Run, database_url: str, fake: FakeModel, workers: int,
                      size: dict[str, Any]) -> dict[str, Any]:
    sessions, turns_each, latency = size["sessions"], size["turns"], size["latency"]
    data_dir = ctx.fresh_dir(f"fleet-throughput-{workers}") / "data"
    settings = {"THREADEDIT_MAX_CONCURRENCY": str(CAP), "THREADEDIT_DATABASE_URL": database_url}
    # The benchmark's own app opens the store first, so the schema is made once, not by every
    # worker at once.
    async with bench_app(data_dir, fake, **settings) as app:
        children = await start_many(ctx.work, child_env(data_dir, fake, database_url, **settings),
                                    workers, "worker", expect=WORKER_UP)
        try:
            await fake.reset()
            first = (await fake.stats())["count"]
            cpu, fake_cpu0, bench_cpu0 = CpuMeter(), process_cpu_seconds(fake.proc.pid), time.process_time()
            workers_cpu0 = sum(c.cpu_seconds() for c in children)
            driven = await _drive(app, database_url, sessions, turns_each,
                                  within=30 + 4 * sessions * turns_each * latency / CAP)
            machine_busy = cpu.busy()
            cpu_s = {"workers": sum(c.cpu_seconds() for c in children) - workers_cpu0,
                     "fake model": process_cpu_seconds(fake.proc.pid) - fake_cpu0,
                     "benchmark": time.process_time() - bench_cpu0}
            stats = await fake.stats(first)
        finally:
            codes = await stop_all(children)
    total = sessions * turns_each
    ideal = total * latency / CAP
    by_pid = Counter(_pid_of(o) for o in await _owners(database_url))
    calls = stats["requests"]
    return {
        "workers": workers, "sessions": sessions, "turns": turns_each, "latency_s": latency,
        "turns_total": total, "turns_ok": driven["statuses"].get("ok", 0),
        "statuses": driven["statuses"], "model_calls": len(calls), "wall_s": driven["wall_s"],
        "ideal_s": ideal, "ratio": driven["wall_s"] / ideal, "peak_calls": stats["max_in_flight"],
        "machine_cpu_busy": machine_busy, "cpu_s": cpu_s,
        "slot_use": sum(c["t_end"] - c["t_start"] for c in calls) / (driven["wall_s"] * CAP),
        "turns_per_worker": [by_pid.get(c.pid, 0) for c in children],
        "clean_stops": all(code == 0 for code in codes) and not any(c.tracebacks() for c in children),
        "calls": [{"t_start": c["t_start"] - driven["began"], "t_end": c["t_end"] - driven["began"]}
                  for c in calls],
        "pass": (driven["statuses"].get("ok", 0) == total and driven["wall_s"] / ideal <= TARGET_RATIO
                 and stats["max_in_flight"] <= CAP),
    }


async def _wait_for(check: Callable[[], Any], what: str, within: float, every: float = 0.02) -> Any:
    """Look until `check` (a coroutine function) gives something true, for at most `within` s."""
    deadline = time.perf_counter() + within
    while not (found := await check()):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} did not happen within {within:.0f} s")
        await asyncio.sleep(every)
    return found


async def _killed_worker(ctx: Run, database_url: str, fake: FakeModel, lease: float,
                         latency: float) -> dict[str, Any]:
    data_dir = ctx.fresh_dir("fleet-killed") / "data"
    settings = {"THREADEDIT_MAX_CONCURRENCY": str(CAP), "THREADEDIT_DATABASE_URL": database_url,
                "THREADEDIT_LEASE_SECONDS": f"{lease:g}"}
    async with bench_app(data_dir, fake, **settings) as app:
        children = await start_many(ctx.work, child_env(data_dir, fake, database_url, **settings),
                                    2, "worker", expect=WORKER_UP)
        try:
            first = (await fake.stats())["count"]
            turn = await app.service.submit_edit(_playground_key(), "user", instruction(1))

            async def reached_model() -> bool:
                return (await fake.stats(first))["count"] >= 1

            await _wait_for(reached_model, "the turn's model call", 30)
            owner = await app.store.read(lambda uow: uow.queue.owner(turn.id))
            holder = next(c for c in children if c.pid == _pid_of(owner))
            holder.kill()
            killed = time.time()
            expires = await _lease_expiry(database_url, turn.id)
            watch = TurnWatch(app, database_url)
            try:
                await _wait_for(lambda: watch.finished([turn.id]), "the turn's finish",
                                lease + 30 + 4 * latency, every=0)
            finally:
                await watch.aclose()
            recorded = time.time()
            outcome = await app.service.result_of(turn.id)
            new_owner = await app.store.read(lambda uow: uow.queue.owner(turn.id))
            calls = (await fake.stats(first))["requests"]
        finally:
            await stop_all(children)
    survivor = next(c for c in children if c is not holder)
    again = [c["t_start"] - killed for c in calls if c["t_start"] > killed]
    # The fake answers `latency` after a call arrived (an answer to a dead worker goes nowhere,
    # and aiohttp may cancel its handler, so its recorded end says nothing).
    in_flight = bool(calls) and calls[0]["t_start"] + latency > killed
    return {
        "lease_s": lease, "latency_s": latency, "seconds": recorded - killed,
        "in_flight_at_kill": in_flight, "lease_ran_out_after_s": expires - killed,
        "second_call_after_s": again[0] if again else None, "model_calls": len(calls),
        "status": outcome.status,
        "version": outcome.version, "taken_by_survivor": _pid_of(new_owner) == survivor.pid,
        "target_s": lease + latency,
        "pass": (outcome.status == "ok" and outcome.version == 1 and in_flight
                 and recorded - killed <= lease + latency),
    }


def _verdict(r: dict[str, Any]) -> bool | None:
    if "blocked" in r:
        return None
    return (all(t["pass"] for t in r.get("throughput", [])) and r["first_answer"]["pass"]
            and r.get("killed_worker", {}).get("pass", True))


def _print(r: dict[str, Any], quick: bool) -> None:
    report.heading("6. The fleet: worker processes on one PostgreSQL store (issue 14)")
    size = r["sizes"]
    if "blocked" in r:
        report.table(["part", "result"], [[p, f"blocked: {r['blocked']}"] for p in
                                          ("throughput", "first visible answer", "killed worker")])
        return
    print(f"Store: a throwaway PostgreSQL on this machine (fsync off). Fake model latency "
          f"{size['latency']:g} s; THREADEDIT_MAX_CONCURRENCY={r['cap']}. Throughput turns are "
          "playground turns recorded by the benchmark, which plays the user: a session's next turn "
          "is recorded when its previous one has finished (as a person replies to a result; the "
          "queue would hold a later turn back anyway, and this also times the wake-up of idle "
          "workers).")
    rows = []
    for t in r.get("throughput", []):
        rows.append([f"throughput, {t['workers']} worker{'s' if t['workers'] > 1 else ''}",
                     f"{t['sessions']}x{t['turns']} turns: {t['wall_s']:.1f} s, {t['ratio']:.2f}x "
                     f"ideal {t['ideal_s']:.1f} s; peak {t['peak_calls']} calls; "
                     f"{t['turns_ok']}/{t['turns_total']} ok",
                     f"<= {TARGET_RATIO:.2f}x, peak <= {r['cap']}", report.verdict(t["pass"])])
    answers = [r[part] for part in ("first_answer", "first_answer_alone", "first_answer_pinned")
               if part in r]
    for f in answers:
        rows.append([f"first visible answer, {f['mentions']} mentions on 2 replicas, "
                     f"{f['workers']} workers"
                     + ("; ingress pinned to a core of its own" if f.get("pinned") else ""),
                     f"p50 {f['p50_s']:.2f} s, p95 {f['p95_s']:.2f} s, max {f['max_s']:.2f} s "
                     f"({f['answered']}/{f['mentions']} answered)",
                     f"p95 < {TARGET_FIRST_ANSWER_P95_S:g} s", report.verdict(f["pass"])])
    k = r.get("killed_worker")
    if k is not None:
        rows.append([f"killed worker's turn, lease {k['lease_s']:g} s",
                     f"{k['seconds']:.1f} s from SIGKILL to v{k['version']} recorded ({k['status']})",
                     f"<= lease + one call = {k['target_s']:g} s", report.verdict(k["pass"])])
    report.table(["measure", "result", "target", "verdict"], rows)
    for t in r.get("throughput", []):
        print(f"{t['workers']} worker(s): turns taken per worker {t['turns_per_worker']}, "
              f"{t['model_calls']} model calls, outcomes {t['statuses']}; model slots in use "
              f"{t['slot_use']:.0%} of the time; machine CPU busy {t['machine_cpu_busy']:.0%} (CPU s: "
              + ", ".join(f"{k} {v:.0f}" for k, v in t["cpu_s"].items()) + "); "
              f"{'clean stops' if t['clean_stops'] else 'a worker did not stop cleanly (see logs)'}.")
    for f in answers:
        print(f"First answers with {f['workers']} workers{' (ingress pinned)' if f.get('pinned') else ''}: "
              f"{f['note']}")
    if k is not None:
        _print_killed(k)
    note = " (quick: smaller than the issue's configuration, indicative only)" if quick else ""
    print(f"Targets: {report.verdict(r['pass'])}{note}")


def _print_killed(k: dict[str, Any]) -> None:
    second = k["second_call_after_s"]
    in_flight = "under way" if k["in_flight_at_kill"] else "NOT under way"
    print(f"Killed worker: its call was {in_flight} at the kill; its lease would have run out "
          f"{k['lease_ran_out_after_s']:.1f} s after the kill; the turn's call reached the model "
          f"again {second:.1f} s after the kill ({k['model_calls']} calls in all), run by the "
          f"{'surviving worker' if k['taken_by_survivor'] else 'UNEXPECTED worker'}."
          if second is not None else "Killed worker: the turn was not called again.")
