"""Slack across processes: two real `threadedit run` processes on one store, as replicas behind a
load balancer (HTTP mode) or as two Socket Mode connections, against one fake Slack and one fake
Gemini. Slack delivers an event at least once, and its retry (or the `message` twin of a mention)
may reach the other process: the store's event claims must make it one turn, one progress line
and one version, whichever process answers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select

from bot.storage.engine import make_engine, sqlite_url
from bot.storage.schema import sessions, turns
from tests.conftest import API_KEY
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.postgres import DATABASE_URL_ENV
from tests.processes import free_port, start_run, stop
from tests.slack_harness import CHANNEL, SECRET, TOKEN, eventually
from tests.test_cli import _env

THREADS = 5
SLACK_ACK_SECONDS = 3.0  # Slack retries a delivery not answered within 3 s


@dataclass
class Replica:
    proc: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"


@dataclass(frozen=True)
class Mention:
    """A mention that starts a thread: at the top of the channel, or as a reply in a person's
    thread (then Slack also sends its `message` twin, which the bot must not take as a second
    instruction)."""

    thread: str
    ts: str
    text: str

    def event(self, kind: str = "app_mention") -> dict[str, Any]:
        event = {"type": kind, "user": "UANA", "text": f"<@UBOT> {self.text}", "ts": self.ts,
                 "channel": CHANNEL, "event_ts": self.ts}
        if self.thread != self.ts:
            event["thread_ts"] = self.thread
        if kind == "message":
            event["channel_type"] = "channel"
        return event


def _mentions(slack: FakeSlack) -> list[Mention]:
    found = []
    for i in range(THREADS):
        root = f"17000{i:05d}.000100"
        if i % 2:  # a reply in a thread a person started
            slack.add_message(CHANNEL, f"thread {i}", user="UBEA", ts=root)
            found.append(Mention(root, f"17000{i:05d}.000200", f"poster number {i}"))
        else:
            found.append(Mention(root, root, f"poster number {i}"))
    return found


def _envelope(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event": event, "event_id": event_id, "event_time": int(time.time())}


async def _deliver(http: httpx.AsyncClient, replica: Replica, envelope: dict[str, Any],
                   retry: int | None = None) -> tuple[int, float]:
    """POST a signed event as Slack does; return the status and how long the answer took."""
    body, ts = json.dumps(envelope), str(int(time.time()))
    headers = {"content-type": "application/json", "x-slack-request-timestamp": ts,
               "x-slack-signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)}
    if retry is not None:
        headers |= {"x-slack-retry-num": str(retry), "x-slack-retry-reason": "http_timeout"}
    began = time.monotonic()
    r = await http.post(replica.url, content=body.encode(), headers=headers)
    return r.status_code, time.monotonic() - began


def _bot_posts(slack: FakeSlack, thread: str) -> list[dict]:
    return [m for m in slack.messages_in_thread(CHANNEL, thread) if m["user"] == slack.bot_user_id]


def _versions(slack: FakeSlack, thread: str) -> list[dict]:
    return [m for m in _bot_posts(slack, thread)
            if any(b.get("type") == "image" for b in m.get("blocks") or [])]


def _approvals(slack: FakeSlack, thread: str) -> list[dict]:
    return [m for m in _bot_posts(slack, thread) if "v1 approved by <@UANA>" in (m.get("text") or "")]


def _done(slack: FakeSlack, thread: str) -> bool:
    """The thread's turn has run to its end: a version is posted and a progress line says one is
    ready (whichever number: a turn run twice may end as "v2 is ready.", which the checks refuse)."""
    return bool(_versions(slack, thread)) and any(
        re.fullmatch(r"v\d+ is ready\.", m.get("text") or "") for m in _bot_posts(slack, thread))


async def _versions_recorded(url: str) -> dict[str, list[int | None]]:
    """Each thread's turns as the store numbered them."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(sessions.c.thread, turns.c.version)
                .join(turns, turns.c.session_id == sessions.c.id).order_by(turns.c.id))).all()
    finally:
        await engine.dispose()
    found: dict[str, list[int | None]] = {}
    for thread, version in rows:
        found.setdefault(thread, []).append(version)
    return found


async def _one_turn_each(slack: FakeSlack, gemini: FakeGemini, url: str, mentions: list[Mention]) -> None:
    """Each mention made one turn: one progress line (now saying it is ready) and one version in
    its thread, one model call, one turn recorded, numbered v1."""
    for mention in mentions:
        posts, versions = _bot_posts(slack, mention.thread), _versions(slack, mention.thread)
        assert len(versions) == 1, posts
        lines = [m["text"] for m in posts if m not in versions and m not in _approvals(slack, mention.thread)]
        assert lines == ["v1 is ready."], posts
    assert len(gemini.requests) == len(mentions)
    assert await _versions_recorded(url) == {m.thread: [1] for m in mentions}


async def _start_replicas(tmp_path: Path, env: dict[str, str], count: int = 2) -> list[Replica]:
    """Start `count` HTTP replicas at once, each on its own port, and wait for each one's
    "started" line."""
    ports = [free_port() for _ in range(count)]
    started = await asyncio.gather(*(start_run(tmp_path, {**env, "THREADEDIT_PORT": str(port)})
                                     for port in ports))
    replicas = [Replica(proc, port) for (proc, _), port in zip(started, ports, strict=True)]
    for (_, line), port in zip(started, ports, strict=True):
        assert line.startswith(f"threadedit: started Slack (HTTP, POST http://127.0.0.1:{port}/"), line
    return replicas


async def _stop_all(replicas: list[Replica]) -> None:
    stopped = await asyncio.gather(*(stop(r.proc) for r in replicas))
    for code, output in stopped:
        assert code == 0 and "Traceback" not in output, output
        assert TOKEN not in output and SECRET not in output


def _http_env(tmp_path: Path, slack: FakeSlack, gemini: FakeGemini,
              database_url: str | None) -> dict[str, str]:
    env = _env(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url,
               SLACK_APPROVERS="UANA", GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url)
    env.pop(DATABASE_URL_ENV, None)  # SQLite: the shared data directory's file
    if database_url is not None:
        env[DATABASE_URL_ENV] = database_url
    return env


async def _each_mention_on_both_replicas(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, database_url: str | None) -> None:
    replicas = await _start_replicas(tmp_path, _http_env(tmp_path, slack, gemini, database_url))
    a, b = replicas
    mentions = _mentions(slack)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            deliveries = []
            for n, mention in enumerate(mentions):
                event_id = f"EvMENTION{n:04d}"
                # Slack's first try reaches A; its retry, with the same event id, reaches B; and
                # the `message` twin of the mention (its own event id) reaches B too. All at once.
                deliveries += [_deliver(http, a, _envelope(mention.event(), event_id)),
                               _deliver(http, b, _envelope(mention.event(), event_id), retry=1),
                               _deliver(http, b, _envelope(mention.event("message"), f"EvTWIN{n:04d}"))]
            answers = await asyncio.gather(*deliveries)
        assert all(status == 200 for status, _ in answers), answers
        assert max(seconds for _, seconds in answers) < SLACK_ACK_SECONDS, answers
        await eventually(lambda: all(_done(slack, m.thread) for m in mentions), within=60)
        # A reaction on a version, tried on A and retried on B: one approval, whichever replica
        # posted the version (the post is found through the store).
        first = mentions[0]
        [version] = _versions(slack, first.thread)
        reaction = _envelope({"type": "reaction_added", "user": "UANA", "reaction": "white_check_mark",
                              "item_user": "UBOT", "event_ts": f"{time.time():.6f}",
                              "item": {"type": "message", "channel": CHANNEL, "ts": version["ts"]}},
                             "EvREACTION")
        async with httpx.AsyncClient(timeout=30) as http:
            answers = await asyncio.gather(_deliver(http, a, reaction), _deliver(http, b, reaction, retry=1))
        assert [status for status, _ in answers] == [200, 200]
        await eventually(lambda: _approvals(slack, first.thread))
    finally:
        await _stop_all(replicas)
    assert len(_approvals(slack, first.thread)) == 1
    # Both processes have stopped: nothing more can be posted or recorded.
    url = database_url or sqlite_url(tmp_path / "data" / "threadedit.sqlite3")
    await _one_turn_each(slack, gemini, url, mentions)


async def test_replicas_on_one_postgresql_store_make_one_turn_of_a_mention_delivered_to_both(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, pg_url: str):
    await _each_mention_on_both_replicas(tmp_path, slack, gemini, pg_url)


async def test_replicas_on_one_sqlite_data_directory_make_one_turn_of_a_mention_delivered_to_both(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini):
    await _each_mention_on_both_replicas(tmp_path, slack, gemini, None)


# Socket Mode: each process holds one of the app's connections (Slack allows up to 10), and Slack
# sends an envelope to any one of them, again on another when the ack did not come in time.

async def _start_socket_processes(tmp_path: Path, slack: FakeSlack, gemini: FakeGemini,
                                  database_url: str, count: int = 2) -> list[asyncio.subprocess.Process]:
    env = _env(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_APP_TOKEN=slack.app_token,
               SLACK_API_URL=slack.api_url, GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url)
    env[DATABASE_URL_ENV] = database_url
    started = await asyncio.gather(*(start_run(tmp_path, env) for _ in range(count)))
    for _, line in started:
        assert line.startswith("threadedit: started Slack (Socket Mode)"), line
    # Each process has opened its own connection (apps.connections.open, then the socket).
    await eventually(lambda: len(slack.sockets) == count)
    assert len([c for c in slack.calls if c.method == "apps.connections.open"]) == count
    return [proc for proc, _ in started]


async def test_socket_mode_processes_on_one_store_make_one_turn_of_an_envelope_sent_on_both_connections(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, pg_url: str):
    procs = await _start_socket_processes(tmp_path, slack, gemini, pg_url)
    mentions = _mentions(slack)
    try:
        sent = []
        for n, mention in enumerate(mentions):
            event_id = f"EvMENTION{n:04d}"
            # The first try on one connection; Slack's redelivery (same event) on the other, as
            # when the first ack was late; and the mention's `message` twin there too.
            sent += await asyncio.gather(
                slack.socket_send(_envelope(mention.event(), event_id), on=0),
                slack.socket_send(_envelope(mention.event(), event_id), on=1,
                                  retry_attempt=1, retry_reason="timeout"),
                slack.socket_send(_envelope(mention.event("message"), f"EvTWIN{n:04d}"), on=1))
        # Both processes acknowledge what they were sent, the duplicates included.
        await eventually(lambda: all(envelope in slack.socket_acks for envelope in sent))
        await eventually(lambda: all(_done(slack, m.thread) for m in mentions), within=60)
    finally:
        stopped = await asyncio.gather(*(stop(proc) for proc in procs))
    for code, output in stopped:
        assert code == 0 and "Traceback" not in output, output
        assert TOKEN not in output and slack.app_token not in output
    await _one_turn_each(slack, gemini, pg_url, mentions)


def _asked(gemini: FakeGemini, text: str) -> int:
    """How many model calls Gemini received for an instruction (held ones included)."""
    return sum(1 for r in gemini.requests
               if any(p.get("text") == text for c in r.body.get("contents", []) for p in c.get("parts", [])))


async def test_a_replica_started_while_the_other_runs_a_turn_leaves_that_turn_alone(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, pg_url: str):
    # A rolling deploy: replica A is mid-call when replica B starts on the same store.
    env = _http_env(tmp_path, slack, gemini, pg_url)
    gemini.hold = asyncio.Event()
    [a] = await _start_replicas(tmp_path, env, count=1)
    replicas = [a]
    busy, later = Mention("1700000100.000100", "1700000100.000100", "a busy poster"), \
        Mention("1700000200.000100", "1700000200.000100", "a later poster")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _deliver(http, a, _envelope(busy.event(), "EvBUSY")))[0] == 200
            await eventually(lambda: _asked(gemini, busy.text) == 1)  # A's call, held
            [b] = await _start_replicas(tmp_path, env, count=1)
            replicas.append(b)
            # B is up and working: a mention it receives reaches the model (after anything B
            # took up at its start).
            assert (await _deliver(http, b, _envelope(later.event(), "EvLATER")))[0] == 200
            await eventually(lambda: _asked(gemini, later.text) == 1)
        gemini.hold.set()
        await eventually(lambda: _done(slack, busy.thread) and _done(slack, later.thread), within=60)
    finally:
        gemini.hold.set()
        await _stop_all(replicas)
    # Seen with the in-memory pipeline: B resumes A's running turn and sends it to the model too;
    # the store then numbers it v2 (one charge, no v1), and the thread shows "v1" or both "v1"
    # and "v2" posts for the one mention, depending on which process finishes first.
    assert _asked(gemini, busy.text) == 1, "the busy turn was sent to the model twice"
    await _one_turn_each(slack, gemini, pg_url, [busy, later])
