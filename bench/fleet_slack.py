"""The fleet benchmark's second part: the first visible answer when many Slack mentions arrive at
once on two `threadedit run --no-worker` replicas (HTTP mode), with two workers running.

Each mention is a new thread at the top of a channel, POSTed signed as Slack signs an Events API
delivery (tests/test_slack_replicas.py `_deliver`), half to each replica, all at once. The figure
per mention runs from the start of its POST to the bot's first post in its thread, as the fake
Slack (in this process) received it: what a person in the channel waits for. Each replica gets
one mention first, not counted (see _warm_up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import httpx
from slack_sdk.signature import SignatureVerifier

from bench import report
from bench.common import Run
from bench.fleet_pinning import ingress_core
from bench.fleet_procs import CpuMeter, TimedSlack, child_env, start_many, stop_all
from bench.processes import FakeModel
from bench.wiring import bench_app
from bot.app import App

TOKEN = "xoxb-bench-token"
SECRET = "bench-signing-secret"
CHANNEL = "C0BENCH"
TARGET_P95_S = 1.0


def _envelope(n: int, thread: str) -> dict[str, Any]:
    event = {"type": "app_mention", "user": f"U{n:04d}", "text": f"<@UBOT> a poster of lighthouse {n}",
             "ts": thread, "channel": CHANNEL, "event_ts": thread}
    return {"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event": event, "event_id": f"EvBENCH{n:05d}", "event_time": int(time.time())}


async def _deliver(http: httpx.AsyncClient, url: str,
                   envelope: dict[str, Any]) -> tuple[int, float, float]:
    """POST a signed event as Slack does; the status, when (monotonic) the POST began, and how
    long the answer took (Slack retries a delivery not answered within 3 s)."""
    body, ts = json.dumps(envelope), str(int(time.time()))
    headers = {"content-type": "application/json", "x-slack-request-timestamp": ts,
               "x-slack-signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)}
    began = time.monotonic()
    r = await http.post(url, content=body.encode(), headers=headers)
    return r.status_code, began, time.monotonic() - began


async def first_answers(ctx: Run, database_url: str, fake: FakeModel, mentions: int,
                        cap: int, workers: int = 2, pinned_in: Any = None) -> dict[str, Any]:
    """`workers` 0: the replicas alone (the turns stay queued), to tell their own time apart
    from the machine being busy with the workers' model calls. `pinned_in` (the PostgreSQL
    cluster): the replicas and the fake Slack on a core of their own (bench/fleet_pinning.py)."""
    data_dir = ctx.fresh_dir("fleet-slack") / "data"
    settings = {"THREADEDIT_MAX_CONCURRENCY": str(cap), "THREADEDIT_DATABASE_URL": database_url}
    from tests.processes import free_port

    async with TimedSlack(TOKEN) as slack, bench_app(data_dir, fake, **settings) as app:
        env = child_env(data_dir, fake, database_url, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                        SLACK_API_URL=slack.api_url, **settings)
        ports = [free_port(), free_port()]
        children = await start_many(ctx.work, env, 2, "run", "--no-worker", expect="no worker",
                                    extra=[{"THREADEDIT_PORT": str(p)} for p in ports])
        if workers:
            children += await start_many(ctx.work, env, workers, "worker", expect="threadedit worker:")
        placement, pinning = None, contextlib.ExitStack()
        try:
            if pinned_in is not None:
                placement = pinning.enter_context(ingress_core(
                    [c.pid for c in children[:2]], [c.pid for c in children[2:]] + [fake.proc.pid],
                    pinned_in))
            threads = [f"17100{n:05d}.000100" for n in range(mentions)]
            async with httpx.AsyncClient(trust_env=False, timeout=30,
                                         limits=httpx.Limits(max_connections=mentions)) as http:
                await _warm_up(http, slack, ports)
                cpu, cpu0 = CpuMeter(), [c.cpu_seconds() for c in children]
                sent = await asyncio.gather(*(
                    _deliver(http, f"http://127.0.0.1:{ports[n % 2]}/slack/events", _envelope(n, t))
                    for n, t in enumerate(threads)))
                await _posted_in(slack, threads, within=30)
                machine_busy = cpu.busy()
                used = [c.cpu_seconds() - c0 for c, c0 in zip(children, cpu0, strict=True)]
            # The turns run to their end too (a check that the fleet did the work, not timed).
            left = (await _unfinished_left(app, deadline=time.monotonic() + 30 + 8 * mentions / cap)
                    if workers else None)
        finally:
            pinning.close()
            codes = await stop_all(children)
    waits = [slack.first_post[t] - began for t, (_, began, _) in zip(threads, sent, strict=True)
             if t in slack.first_post]
    p95 = report.p95(waits)
    ok = sum(1 for status, _, _ in sent if status == 200)
    acks = [acked for _, _, acked in sent]
    return {
        "mentions": mentions, "workers": workers, "pinned": placement,
        "machine_cpu_busy": machine_busy, "acked": ok,
        "answered": len(waits), "turns_unfinished": left,
        "p50_s": report.median(waits), "p95_s": p95, "max_s": max(waits, default=float("nan")),
        "clean_stops": all(code == 0 for code in codes) and not any(c.tracebacks() for c in children),
        "ack_p95_s": report.p95(acks), "slack_calls": dict(Counter(c.method for c in slack.calls)),
        "note": (f"{ok}/{mentions} POSTs answered 200 (p95 {report.p95(acks):.2f} s)"
                 + (f"; {mentions - left}/{mentions} turns then ran to their end on the {workers} "
                    "workers" if left is not None else "; no workers (the turns stayed queued)")
                 + f"; until the last first post, machine CPU busy {machine_busy:.0%}, CPU s: replicas "
                 f"{sum(used[:2]):.1f}, workers {sum(used[2:]):.1f}"
                 + (f"; pinned: {placement}." if placement else ".")),
        "pass": len(waits) == mentions and p95 < TARGET_P95_S,
    }


async def _warm_up(http: httpx.AsyncClient, slack: TimedSlack, ports: list[int]) -> None:
    """One mention to each replica first, not counted: a replica that has been up a while has
    its connections (to the store, to Slack) open. (Who the bot is needs no warming: Bolt is
    given the start-up's auth.test answer, adapters/slack/identity.py.)"""
    threads = [f"16900{n:05d}.000100" for n in range(len(ports))]
    for n, (port, thread) in enumerate(zip(ports, threads, strict=True)):
        envelope = _envelope(90000 + n, thread)
        await _deliver(http, f"http://127.0.0.1:{port}/slack/events", envelope)
    await _posted_in(slack, threads, within=30)


async def _posted_in(slack: TimedSlack, threads: list[str], within: float) -> None:
    """Until the bot has posted in every one of these threads, or `within` seconds passed."""
    deadline = time.monotonic() + within
    while not all(t in slack.first_post for t in threads) and time.monotonic() < deadline:
        slack.posted.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await slack.posted.wait()


async def _unfinished_left(app: App, deadline: float) -> int:
    """How many of the store's turns are still unfinished, once none is or the deadline passed."""
    while True:
        unfinished = len(await app.service.unfinished_turns())
        if not unfinished or time.monotonic() > deadline:
            return unfinished
        await asyncio.sleep(0.2)
