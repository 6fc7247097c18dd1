"""Faults, proven across processes (issue 14): a fleet of real `python -m threadedit` processes on
one store, the fakes on 127.0.0.1, and something going wrong mid-run: a Slack retry landing on
the other replica, a worker killed with SIGKILL mid-call (its turn taken at once), PostgreSQL
restarted (and down past the store's retries), the S3 endpoint down, two processes on one SQLite
data directory. Each test checks what a user sees (thread posts, the playground's page) and what
went on the wire (Gemini's requests), and that every process still running stops with exit 0 on
SIGTERM, without a traceback and without a secret in its output."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
import pytest
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select, text

from bot.storage.engine import make_engine
from bot.storage.presence import RESTART_GRACE_SECONDS
from bot.storage.schema import sessions, turns, usage
from tests.conftest import API_KEY
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.postgres import DATABASE_URL_ENV, Cluster, require_postgres
from tests.processes import free_port, run_to_end, start_playground, start_run, stop
from tests.slack_harness import SECRET, TOKEN, block_actions, eventually
from tests.test_cli import _env
from tests.test_s3_blobs import BUCKET, S3, s3  # noqa: F401 - s3 is the moto server fixture
from tests.test_s3_blobs import SECRET as S3_SECRET
from tests.test_slack_replicas import (
    Mention,
    Replica,
    _asked,
    _bot_posts,
    _deliver,
    _done,
    _envelope,
    _http_env,
    _mentions,
    _one_turn_each,
    _versions,
    _versions_recorded,
)

SECRETS = (TOKEN, SECRET, API_KEY, S3_SECRET)
WITHIN = 45.0  # the longest any observable end may take on a busy 2-core machine


# The fleet's processes

async def _ingress(tmp_path: Path, env: dict[str, str]) -> Replica:
    """`threadedit run --no-worker`: Slack's HTTP endpoint, recording turns, never calling the model."""
    port = free_port()
    proc, line = await start_run(tmp_path, {**env, "THREADEDIT_PORT": str(port)}, "run", "--no-worker")
    assert "no worker: `threadedit worker` processes run the turns" in line, line
    return Replica(proc, port)


async def _worker(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc, line = await start_run(tmp_path, env, "worker")
    assert line.startswith("threadedit worker: taking turns of playground, slack"), line
    return proc


async def _fleet(tmp_path: Path, env: dict[str, str], ingresses: int,
                 workers: int) -> tuple[list[Replica], list[asyncio.subprocess.Process]]:
    started = await asyncio.gather(*(_ingress(tmp_path, env) for _ in range(ingresses)),
                                   *(_worker(tmp_path, env) for _ in range(workers)))
    return list(started[:ingresses]), list(started[ingresses:])  # type: ignore[arg-type]


async def _stop_clean(procs: list[asyncio.subprocess.Process]) -> list[str]:
    """SIGTERM each process still running: each exits 0, with no traceback and no secret said.
    Returns what each one wrote."""
    stopped = await asyncio.gather(*(stop(p) for p in procs))
    for code, output in stopped:
        assert code == 0 and "Traceback" not in output, output
        assert not [s for s in SECRETS if s in output], output
    return [output for _, output in stopped]


# What the store holds

async def _rows(url: str, query: Any) -> list[Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(query)).all())
    finally:
        await engine.dispose()


async def _lease_owner(url: str, thread: str) -> str | None:
    """Which worker holds the thread's turn: `host:pid:uuid`."""
    found = await _rows(url, select(turns.c.lease_owner).join(sessions, sessions.c.id == turns.c.session_id)
                        .where(sessions.c.thread == thread))
    return found[0][0] if found else None


async def _charges(url: str) -> list[tuple[int, str]]:
    return [(r.turn_id, r.state) for r in await _rows(url, select(usage.c.turn_id, usage.c.state)
                                                             .order_by(usage.c.id))]


def _said(slack: FakeSlack, thread: str, words: str) -> list[str]:
    return [m["text"] for m in _bot_posts(slack, thread) if words in (m.get("text") or "")]


# 1. Two ingress replicas and two workers; every mention retried on the other replica

async def test_two_ingress_replicas_and_two_workers_make_one_turn_of_each_mention_retried_across(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, pg_url: str):
    replicas, workers = await _fleet(tmp_path, _http_env(tmp_path, slack, gemini, pg_url), 2, 2)
    mentions = _mentions(slack)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            deliveries = []
            for n, mention in enumerate(mentions):
                # Slack's first try reaches one replica, its retry (same event id) the other, and
                # the mention's `message` twin (its own id) the other too: all at once.
                first, other = replicas[n % 2], replicas[(n + 1) % 2]
                deliveries += [_deliver(http, first, _envelope(mention.event(), f"EvM{n}")),
                               _deliver(http, other, _envelope(mention.event(), f"EvM{n}"), retry=1),
                               _deliver(http, other, _envelope(mention.event("message"), f"EvT{n}"))]
            answers = await asyncio.gather(*deliveries)
        assert all(status == 200 for status, _ in answers), answers
        await eventually(lambda: all(_done(slack, m.thread) for m in mentions), within=WITHIN)
    finally:
        await _stop_clean([r.proc for r in replicas] + workers)
    # Every process has stopped: nothing more can be posted, called or recorded.
    await _one_turn_each(slack, gemini, pg_url, mentions)


# 2. A worker killed mid-call: its turn is taken again at once (its worker is gone), and posted once

async def _server_up_for(url: str, seconds: float) -> None:
    """Wait until the server has been up `seconds`: for a grace after a start nobody is judged
    gone (bot/storage/presence.py), and the shared test server may have just started."""
    async def uptime() -> float:
        [(up,)] = await _rows(url, text("SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())"))
        return float(up)

    if (left := seconds - await uptime()) > 0:
        await asyncio.sleep(left)  # the server's own clock says when; nothing else to watch


async def test_a_worker_killed_mid_call_leaves_its_turn_to_another_at_once(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, pg_url: str):
    # A lease no test could wait out: the survivor takes the turn because the killed worker's
    # presence (a lock its database connection held) went with its process.
    env = {**_http_env(tmp_path, slack, gemini, pg_url), "THREADEDIT_LEASE_SECONDS": "600"}
    gemini.hold = asyncio.Event()
    [ingress], workers = await _fleet(tmp_path, env, 1, 2)
    mention = Mention("1700000300.000100", "1700000300.000100", "a poster of a night ferry")
    try:
        await _server_up_for(pg_url, RESTART_GRACE_SECONDS)
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _deliver(http, ingress, _envelope(mention.event(), "EvFERRY")))[0] == 200
        await eventually(lambda: _asked(gemini, mention.text) == 1, within=WITHIN)  # held
        owner = await _lease_owner(pg_url, mention.thread)
        assert owner is not None
        pid = int(owner.split(":")[1])
        [victim] = [w for w in workers if w.pid == pid]
        os.kill(pid, signal.SIGKILL)
        await victim.wait()
        workers.remove(victim)
        gemini.hold.set()
        await eventually(lambda: _done(slack, mention.thread), within=WITHIN)
        # The survivor has taken it: the store names it as the holder of the finished turn.
        assert (await _lease_owner(pg_url, mention.thread)).split(":")[1] == str(workers[0].pid)
    finally:
        gemini.hold.set()
        outputs = await _stop_clean([ingress.proc, *workers])
    assert re.search(r"turns \d+: their worker is gone; any worker may take them now", outputs[1]), outputs[1]
    # Gemini saw the instruction twice: the killed worker's call reached it and was cut off
    # unanswered (its connection died with the process), so the turn had no answer to keep and the
    # survivor, taking it, had to ask again. The user sees one of everything.
    assert _asked(gemini, mention.text) == 2
    assert [r.status for r in gemini.requests] == [499, 200]
    versions = _versions(slack, mention.thread)
    assert len(versions) == 1
    assert [m["text"] for m in _bot_posts(slack, mention.thread) if m not in versions] == ["v1 is ready."]
    assert await _versions_recorded(pg_url) == {mention.thread: [1]}
    [(turn_id, state)] = await _charges(pg_url)  # one charge, not one per call
    assert state == "charged"


# 3. PostgreSQL restarted while one turn runs and another waits in the queue

@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of this test alone: the shared one must not restart under other tests."""
    cluster = Cluster(require_postgres()).start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_postgresql_restarted_mid_run_loses_nothing(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, own_cluster: Cluster):
    url = own_cluster.new_database()
    # One model call at a time across the fleet: the second mention is queued, the first running.
    env = {**_http_env(tmp_path, slack, gemini, url), "THREADEDIT_MAX_CONCURRENCY": "1"}
    gemini.hold = asyncio.Event()
    [ingress], workers = await _fleet(tmp_path, env, 1, 2)
    running, queued, down, after = (
        Mention(f"17000004{n}0.000100", f"17000004{n}0.000100", text) for n, text in
        enumerate(("a running poster", "a queued poster", "a poster asked while down", "a later poster")))
    mentions = [running, queued, down, after]
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _deliver(http, ingress, _envelope(running.event(), "EvRUN")))[0] == 200
            await eventually(lambda: _asked(gemini, running.text) == 1, within=WITHIN)
            assert (await _deliver(http, ingress, _envelope(queued.event(), "EvQUEUED")))[0] == 200
            await eventually(lambda: _bot_posts(slack, queued.thread), within=WITHIN)  # recorded
            # The restart (pg_ctl stop -m fast, then start): every connection is cut. While the
            # server is down, the model answers the running turn (its finish must wait for the
            # store) and a mention arrives (its recording must too).
            await asyncio.to_thread(own_cluster.stop_server)
            gemini.hold.set()
            asked_while_down = asyncio.create_task(
                _deliver(http, ingress, _envelope(down.event(), "EvDOWN")))
            await asyncio.to_thread(own_cluster.start_server)
            await asked_while_down
            # Slack retries a delivery answered late or not at all: the retry makes no second turn.
            assert (await _deliver(http, ingress, _envelope(down.event(), "EvDOWN"), retry=1))[0] == 200
            assert (await _deliver(http, ingress, _envelope(after.event(), "EvAFTER")))[0] == 200
            await eventually(lambda: all(_done(slack, m.thread) for m in mentions), within=WITHIN)
    finally:
        gemini.hold.set()
        outputs = await _stop_clean([ingress.proc, *workers])
    # The restart reached them: each worker lost its LISTEN connection (and made it again).
    assert all("not listening for queued turns" in output for output in outputs[1:]), outputs
    await _one_turn_each(slack, gemini, url, mentions)


async def _stderr_until(proc: asyncio.subprocess.Process, words: str) -> list[str]:
    """The lines a process writes to stderr up to the one holding `words`."""
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(WITHIN):
        while not seen or words not in seen[-1]:
            line = (await proc.stderr.readline()).decode()
            assert line, "".join(seen)  # the process ended
            seen.append(line)
    return seen


async def test_postgresql_down_past_the_store_retries_is_a_line_and_the_turn_runs_again(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, own_cluster: Cluster):
    url = own_cluster.new_database()
    env = {**_http_env(tmp_path, slack, gemini, url), "THREADEDIT_LEASE_SECONDS": "3"}
    gemini.hold = asyncio.Event()
    [ingress], [worker] = await _fleet(tmp_path, env, 1, 1)
    running = Mention("1700000600.000100", "1700000600.000100", "a poster through a long outage")
    down = Mention("1700000700.000100", "1700000700.000100", "a poster asked during a long outage")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _deliver(http, ingress, _envelope(running.event(), "EvLONG")))[0] == 200
            await eventually(lambda: _asked(gemini, running.text) == 1, within=WITHIN)
            await asyncio.to_thread(own_cluster.stop_server)
            gemini.hold.set()  # the model answers; the store stays down past every retry
            # Slack's ack comes at once; the mention is kept once the store gave up recording it.
            assert (await _deliver(http, ingress, _envelope(down.event(), "EvDOWN")))[0] == 200
            said = await asyncio.gather(_stderr_until(ingress.proc, "is kept until the store answers"),
                                        _stderr_until(worker, "runs again once its lease runs out"))
            for lines in said:
                assert "Traceback" not in "".join(lines), "".join(lines)
            gave_up = said[1][-1]
            assert gave_up.startswith("WARNING bot.pipeline: turn 1: Cannot open the store: "), gave_up
            await asyncio.to_thread(own_cluster.start_server)
            await eventually(lambda: _done(slack, running.thread) and _done(slack, down.thread),
                             within=WITHIN)
    finally:
        gemini.hold.set()
        await _stop_clean([ingress.proc, worker])
    # The running turn's answer was lost with the store (it could not be recorded), so the turn ran
    # again once its lease ran out: Gemini was asked twice, the thread shows it once, as v1.
    assert _asked(gemini, running.text) == 2
    versions = _versions(slack, running.thread)
    assert len(versions) == 1
    assert [m["text"] for m in _bot_posts(slack, running.thread) if m not in versions] == ["v1 is ready."]
    assert (await _versions_recorded(url))[running.thread] == [1]
    # The mention that arrived while the store was down was acknowledged before it could be
    # recorded (Slack will not send it again): the ingress kept it, said so, and recorded it once
    # the store answered (tests/test_store_outage.py: the same in one `threadedit run`).
    versions = _versions(slack, down.thread)
    assert len(versions) == 1 and _asked(gemini, down.text) == 1
    assert [m["text"] for m in _bot_posts(slack, down.thread) if m not in versions] == [
        "<@UANA> The database is not answering; your instruction is kept and will run when it is back.",
        "v1 is ready."]


# 4. The S3 endpoint down during a turn: a sentence in the thread; Retry works once it is back

async def test_the_image_store_down_during_a_turn_fails_it_with_a_sentence_and_its_retry_works_after(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, pg_url: str, s3: S3):  # noqa: F811
    env = {**_http_env(tmp_path, slack, gemini, pg_url), **s3.env()}
    [ingress], workers = await _fleet(tmp_path, env, 1, 1)
    root = Mention("1700000500.000100", "1700000500.000100", "a red poster")
    sepia = Mention(root.thread, "1700000500.000200", "make it sepia")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _deliver(http, ingress, _envelope(root.event(), "EvRED")))[0] == 200
            await eventually(lambda: _done(slack, root.thread), within=WITHIN)
            [v1] = _versions(slack, root.thread)
            gemini.hold = asyncio.Event()
            assert (await _deliver(http, ingress, _envelope(sepia.event(), "EvSEPIA")))[0] == 200
            await eventually(lambda: _asked(gemini, sepia.text) == 1, within=WITHIN)
            await asyncio.to_thread(s3.stop)
            gemini.hold.set()  # the model answers; its image cannot be kept
            [line] = await eventually(lambda: [m for m in _bot_posts(slack, root.thread)
                                               if "is unreachable" in (m.get("text") or "")], within=WITHIN)
            failed = line["text"]
            assert f"The image store at 127.0.0.1:{s3.port} (bucket {BUCKET}) is unreachable" in failed
            assert "history is intact" in failed and S3_SECRET not in failed
            assert len(_versions(slack, root.thread)) == 1
            await asyncio.to_thread(s3.start)
            # The failure's own Retry, on the line that says it failed (posted by the worker,
            # clicked through the ingress, run by the worker): not the Retry on v1.
            assert await _click(http, ingress, line, "Retry") == 200
            await eventually(lambda: len(_versions(slack, root.thread)) == 2, within=WITHIN)
            await eventually(lambda: _said(slack, root.thread, "v2 is ready."), within=WITHIN)
    finally:
        if gemini.hold is not None:
            gemini.hold.set()
        await _stop_clean([ingress.proc, *workers])
    # v1, the failed sepia turn (no version, history intact), and its retry numbered v2: the
    # sepia instruction again, on v1.
    assert await _versions_recorded(pg_url) == {root.thread: [1, None, 2]}
    assert [_sent(gemini, text) for text in (root.text, sepia.text)] == [1, 2]
    [*_, again] = [r.body["contents"] for r in gemini.requests]
    assert [c["parts"][0]["text"] for c in again if c["role"] == "user"] == [root.text, sepia.text]
    assert [state for _, state in await _charges(pg_url)] == ["charged"] * 3  # the lost image was paid


async def _click(http: httpx.AsyncClient, replica: Replica, message: dict, label: str) -> int:
    """A button click as Slack sends it over HTTP: a signed, form-encoded `payload`."""
    body, ts = "payload=" + quote(json.dumps(block_actions(message, label))), str(int(time.time()))
    headers = {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": ts,
               "x-slack-signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)}
    return (await http.post(replica.url, content=body.encode(), headers=headers)).status_code


# 5. SQLite, one data directory: two playgrounds, and the CLI beside a playground

def _sqlite_env(tmp_path: Path, gemini: FakeGemini) -> dict[str, str]:
    env = _env(tmp_path, GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url)
    env.pop(DATABASE_URL_ENV, None)  # the data directory's SQLite file, whatever the run's database
    return env


async def _playground(tmp_path: Path, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    proc, line = await start_playground(tmp_path, env, "--port", "0")
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found, line
    return proc, found.group(0)


async def _page_versions(http: aiohttp.ClientSession, base: str, sid: int) -> list[int]:
    """The versions the session's page shows, once no turn of it is pending."""
    async def idle() -> bool:
        async with http.get(f"{base}/s/{sid}/state") as r:
            return r.status == 200 and not (await r.json())["busy"]

    deadline = asyncio.get_running_loop().time() + WITHIN
    while not await idle():
        assert asyncio.get_running_loop().time() < deadline, "the session stayed busy"
        await asyncio.sleep(0.1)
    async with http.get(f"{base}/s/{sid}", headers={"Accept": "text/html"}) as r:
        page = await r.text()
    return [int(v) for v in re.findall(r'class="version-card[^"]*" id="v\d+" data-version="(\d+)"', page)]


async def _post_instruction(http: aiohttp.ClientSession, base: str, text: str) -> int:
    form = aiohttp.FormData()
    form.add_field("instruction", text)
    form.add_field("author", "ana")
    async with http.post(f"{base}/messages", data=form, headers={"Accept": "application/json"},
                         allow_redirects=False) as r:
        assert r.status == 200, await r.text()
        return int((await r.json())["session"])


def _sent(gemini: FakeGemini, text: str) -> int:
    """How many model calls asked for this instruction: it is the request's last user turn (an
    edit's request also carries the earlier instructions, as history)."""
    return sum(1 for r in gemini.requests
               if any(p.get("text") == text for p in r.body.get("contents", [{}])[-1].get("parts", [])))


async def test_two_playgrounds_on_one_data_directory_send_an_instruction_once(
        tmp_path: Path, gemini: FakeGemini):
    env = _sqlite_env(tmp_path, gemini)
    (one, base), (two, other) = await asyncio.gather(_playground(tmp_path, env), _playground(tmp_path, env))
    try:
        async with aiohttp.ClientSession() as http:
            sid = await _post_instruction(http, base, "a lighthouse at dusk")
            assert await _page_versions(http, base, sid) == [1]
            assert await _page_versions(http, other, sid) == [1]  # the other reads the same store
    finally:
        await _stop_clean([one, two])
    assert _sent(gemini, "a lighthouse at dusk") == 1 and len(gemini.requests) == 1


async def test_the_cli_beside_a_playground_on_one_data_directory_sends_each_turn_once(
        tmp_path: Path, gemini: FakeGemini):
    env = _sqlite_env(tmp_path, gemini)
    proc, base = await _playground(tmp_path, env)
    try:
        async with aiohttp.ClientSession() as http:
            sid = await _post_instruction(http, base, "a lighthouse at dusk")
            # The CLI adds to the playground's session while the playground runs: whichever
            # process takes the turn, it runs once, after v1.
            code, out, err = await run_to_end(tmp_path, env, "edit", "--session", str(sid), "make it sepia")
            assert code == 0, err
            assert out.startswith(f"v2 of session {sid}: "), out
            assert await _page_versions(http, base, sid) == [1, 2]
    finally:
        await _stop_clean([proc])
    assert "Traceback" not in err and API_KEY not in out + err
    assert [_sent(gemini, t) for t in ("a lighthouse at dusk", "make it sepia")] == [1, 1]
    assert len(gemini.requests) == 2

