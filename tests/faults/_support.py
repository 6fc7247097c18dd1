"""What the fault suite shares: harnesses with tunable engine and settings, and readers for what
the fake Gemini was sent and what a thread shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

from bot.config import load_settings
from bot.domain import FINISHED, SessionKey, SessionState, Turn, TurnState
from tests import slack_harness
from tests.conftest import make_engine
from tests.discord_harness import DiscordHarness
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import FakeGemini, RecordedRequest
from tests.fakes.slack_server import FakeSlack
from tests.slack_harness import CHANNEL, ROOT_TS, Harness, eventually

SLACK_KEY = SessionKey("slack", "T1", CHANNEL, ROOT_TS)


class FaultHarness(Harness):
    """The Slack harness with the engine's timeout/retry budget and core settings (such as
    THREADEDIT_MAX_CONCURRENCY) chosen by the test. The stock harness builds both inside
    start(); swapping its two factories for that one call keeps its wiring the single truth."""

    def __init__(self, slack: FakeSlack, gemini: FakeGemini, data_dir: Path, approvers: str = "",
                 *, engine: dict[str, Any] | None = None, settings: dict[str, str] | None = None,
                 ) -> None:
        super().__init__(slack, gemini, data_dir, approvers)
        self.engine_kw = engine or {}
        self.settings_kw = settings or {}

    async def start(self) -> FaultHarness:
        def engine(gemini: FakeGemini) -> Any:
            return make_engine(gemini, **self.engine_kw)

        def settings(**kw: Any) -> Any:
            return load_settings(**kw, **self.settings_kw)

        with patch.object(slack_harness, "make_engine", engine), \
                patch.object(slack_harness, "load_settings", settings):
            await super().start()
        return self


@asynccontextmanager
async def slack_bot(slack: FakeSlack, gemini: FakeGemini, data_dir: Path, *,
                    approvers: str = "UDIR,UANA", engine: dict[str, Any] | None = None,
                    settings: dict[str, str] | None = None) -> AsyncIterator[FaultHarness]:
    h = await FaultHarness(slack, gemini, data_dir, approvers, engine=engine,
                           settings=settings).start()
    try:
        yield h
    finally:
        release(gemini)
        await h.stop()


def release(gemini: FakeGemini) -> None:
    """Let held model calls answer, so a test that failed mid-way still shuts down."""
    if gemini.hold is not None:
        gemini.hold.set()


@asynccontextmanager
async def discord_bot(fake: FakeDiscord, gemini: FakeGemini, data_dir: Path,
                      ) -> AsyncIterator[DiscordHarness]:
    h = await DiscordHarness(fake, gemini, data_dir).start()
    try:
        yield h
    finally:
        release(gemini)
        await h.stop()


# What Gemini was sent ---------------------------------------------------------------------

def user_texts(request: RecordedRequest) -> list[str]:
    """The text of every user turn in one request: the history replayed, then the new turn."""
    return ["".join(p.get("text", "") for p in c["parts"])
            for c in request.body["contents"] if c.get("role", "user") == "user"]


def model_turns(request: RecordedRequest) -> list[dict[str, Any]]:
    return [c for c in request.body["contents"] if c.get("role") == "model"]


def assert_replays_only_versions(request: RecordedRequest, gemini: FakeGemini,
                                 state: SessionState, new_text: str) -> None:
    """The request carries exactly the path to the head: each version's user turn as recorded
    and each model turn exactly as Gemini issued it, then the new instruction. Failed, blocked
    and words-only turns are absent."""
    path = []
    turn = state.head
    while turn is not None:
        path.append(turn)
        turn = state.by_id.get(turn.parent_turn_id) if turn.parent_turn_id else None
    path.reverse()
    assert all(t.state is TurnState.DONE for t in path)
    assert user_texts(request) == [t.instruction for t in path] + [new_text]
    issued = [m for m in gemini.issued if m in model_turns(request)]
    assert model_turns(request) == issued and len(issued) == len(path)


# What a Slack thread shows ---------------------------------------------------------------

def thread_of(h: Harness, root: str = ROOT_TS) -> list[dict]:
    return h.slack.messages_in_thread(CHANNEL, root)


def versions_in(h: Harness, root: str = ROOT_TS) -> list[dict]:
    return [m for m in thread_of(h, root)
            if any(b.get("type") == "image" for b in m.get("blocks") or [])]


def caption_of(message: dict) -> str:
    return next(e["text"] for b in message["blocks"] if b["type"] == "context"
                for e in b["elements"])


async def wait_versions(h: Harness, n: int, root: str = ROOT_TS) -> list[dict]:
    return await eventually(lambda: len(versions_in(h, root)) >= n and versions_in(h, root))


def posted_texts(h: Harness) -> list[str]:
    """Every text the bot posted with chat.postMessage (first wording, before any update)."""
    return [str(c.args.get("text") or "") for c in h.slack.calls if c.method == "chat.postMessage"]


async def progress_message(h: Harness, turn_id: int) -> dict:
    ts = await h.store.post_for_turn(turn_id, "progress")
    assert ts is not None, f"turn {turn_id} never got a progress message"
    return next(m for m in h.slack.messages[CHANNEL] if m["ts"] == ts)


async def slack_state(h: Harness, key: SessionKey = SLACK_KEY) -> SessionState:
    session = await h.store.find_session(key)
    assert session is not None
    return await h.store.load_state(session.id)


async def until(cond: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    """`eventually` for conditions that must ask the store (async)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if value := await cond():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def finished_turns(h: Harness, n: int, key: SessionKey = SLACK_KEY) -> list[Turn]:
    """The session's turns once there are n and all have finished (whatever their outcome)."""
    async def done() -> list[Turn] | None:
        session = await h.store.find_session(key)
        turns = (await h.store.load_state(session.id)).turns if session else []
        return turns if len(turns) == n and all(t.state in FINISHED for t in turns) else None

    return await until(done)
