"""Promise 2, exactly once: the same platform event delivered again (Slack's retries, a Discord
replay after a reconnect) makes one turn, and two replies racing in one thread run in the order
they arrived.

Each test also counts what reached the adapter, so it proves the duplicate was really delivered
and dropped by the bot, not lost on the way."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bot.chat.backend import IncomingMessage
from bot.chat.text import Text
from bot.domain import SessionKey, Turn, TurnState
from tests.discord_harness import ALICE, BOB, CHANNEL, GUILD, DiscordHarness
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.faults._support import (
    FaultHarness,
    caption_of,
    discord_bot,
    slack_bot,
    slack_state,
    user_texts,
    versions_in,
    wait_versions,
)
from tests.slack_harness import CHANNEL as SLACK_CHANNEL
from tests.slack_harness import ROOT_TS, eventually


@pytest.fixture
async def bot(slack: FakeSlack, gemini: FakeGemini, data_dir: Path) -> AsyncIterator[FaultHarness]:
    async with slack_bot(slack, gemini, data_dir) as h:
        yield h


def count_core_messages(bot: Any) -> list[IncomingMessage]:
    """Record every message the adapter hands to the core (after the platform's own plumbing)."""
    core = bot.adapter.core
    seen: list[IncomingMessage] = []
    original = core.on_message

    async def on_message(msg: IncomingMessage) -> None:
        seen.append(msg)
        await original(msg)

    core.on_message = on_message
    return seen


# Slack -------------------------------------------------------------------------------------------

async def test_a_slack_event_delivered_three_times_makes_one_turn(bot: FaultHarness):
    seen = count_core_messages(bot)
    mention = {"type": "app_mention", "user": "UANA", "text": "<@UBOT> a kite", "ts": ROOT_TS,
               "channel": SLACK_CHANNEL, "event_ts": ROOT_TS}
    # Slack retries when the first delivery seemed slow, so copies can overlap: send them at once.
    acks = await asyncio.gather(bot.event(mention, event_id="EvKITE"),
                                bot.event(mention, event_id="EvKITE", retry=1),
                                bot.event(mention, event_id="EvKITE", retry=2))
    assert [r.status_code for r in acks] == [200, 200, 200]
    await wait_versions(bot, 1)
    reply = {"type": "message", "user": "UANA", "text": "add a red tail", "ts": "1700000001.000100",
             "thread_ts": ROOT_TS, "channel": SLACK_CHANNEL, "event_ts": "1700000001.000100",
             "channel_type": "channel"}
    acks = await asyncio.gather(bot.event(reply, event_id="EvTAIL"),
                                bot.event(reply, event_id="EvTAIL", retry=1),
                                bot.event(reply, event_id="EvTAIL", retry=2))
    assert [r.status_code for r in acks] == [200, 200, 200]
    await wait_versions(bot, 2)
    await bot.settle()
    assert len(seen) == 6  # every copy reached the core ...
    assert [user_texts(r) for r in bot.gemini.requests] == [  # ... and each made one model call
        ["a kite"], ["a kite", "add a red tail"]]
    state = await slack_state(bot)
    assert [(t.instruction, t.state, t.version) for t in state.turns] == [
        ("a kite", TurnState.DONE, 1), ("add a red tail", TurnState.DONE, 2)]
    assert len(versions_in(bot)) == 2 and len(bot.thread()) == 4  # 2 progress lines, 2 versions


async def test_a_reaction_delivered_twice_acts_once(bot: FaultHarness):
    await bot.mention("a kite")
    [v1] = await wait_versions(bot, 1)
    await bot.settle()
    retry = {"type": "reaction_added", "user": "UANA", "reaction": "repeat", "item_user": "UBOT",
             "item": {"type": "message", "channel": SLACK_CHANNEL, "ts": v1["ts"]},
             "event_ts": "1700000002.000100"}
    first = await bot.event(retry, event_id="EvREPEAT")
    again = await bot.event(retry, event_id="EvREPEAT", retry=1)
    assert first.status_code == again.status_code == 200
    await wait_versions(bot, 2)
    await bot.settle()
    assert len(bot.gemini.requests) == 2 and len(versions_in(bot)) == 2
    state = await slack_state(bot)
    assert [t.kind.value for t in state.turns] == ["edit", "retry"]


def _button_payload(message: dict, label: str, *, user: str, trigger: str) -> dict[str, Any]:
    """A block_actions payload as Slack sends it: trigger_id and action_ts identify one click."""
    button = next(e for b in message["blocks"] if b["type"] == "actions"
                  for e in b["elements"] if e["text"]["text"] == label)
    return {"type": "block_actions", "user": {"id": user, "team_id": "T1"}, "team": {"id": "T1"},
            "api_app_id": "A1", "token": "x", "trigger_id": trigger,
            "channel": {"id": SLACK_CHANNEL},
            "container": {"type": "message", "message_ts": message["ts"],
                          "channel_id": SLACK_CHANNEL, "is_ephemeral": False,
                          "thread_ts": message["thread_ts"]},
            "message": message, "response_url": "http://127.0.0.1:9/r",
            "actions": [{"action_id": button["action_id"], "value": button["value"],
                         "block_id": "b", "type": "button", "action_ts": trigger}]}


async def test_a_button_click_delivered_twice_acts_once(bot: FaultHarness):
    await bot.mention("a kite")
    [v1] = await wait_versions(bot, 1)
    await bot.settle()
    body = "payload=" + quote(json.dumps(_button_payload(v1, "Retry", user="UANA",
                                                          trigger="1700000003.123456")))
    for _ in range(2):
        r = await bot.post(body, "application/x-www-form-urlencoded")
        assert r.status_code == 200
        bot.accepted["action:1700000003.123456"] += 1  # so settle() waits for both deliveries
    await wait_versions(bot, 2)
    await bot.settle()
    state = await slack_state(bot)
    assert [t.kind.value for t in state.turns] == ["edit", "retry"]
    assert len(bot.gemini.requests) == 2 and len(versions_in(bot)) == 2


async def test_two_replies_racing_in_a_thread_run_in_arrival_order(bot: FaultHarness):
    await bot.mention("a lighthouse")
    await wait_versions(bot, 1)
    await bot.settle()
    # Whichever runs first is slow: if the second were not held back it would finish first.
    bot.gemini.script.append(Behaviour.slow(0.3))
    await asyncio.gather(bot.reply("paint it at night", "1700000001.000100"),
                         bot.reply("add a ship", "1700000001.000200"))
    await wait_versions(bot, 3)
    await bot.settle()
    state = await slack_state(bot)
    arrival = [t.instruction for t in sorted(state.turns, key=lambda t: t.id)][1:]
    assert sorted(arrival) == ["add a ship", "paint it at night"]
    # Each instruction edits the result of the one before it, in the order they were recorded.
    assert [user_texts(r) for r in bot.gemini.requests[1:]] == [
        ["a lighthouse", arrival[0]], ["a lighthouse", arrival[0], arrival[1]]]
    assert [(t.instruction, t.version) for t in state.turns if t.version and t.version > 1] == [
        (arrival[0], 2), (arrival[1], 3)]
    _, v2, v3 = versions_in(bot)
    assert f"*v2 (from v1)* · {arrival[0]}" in caption_of(v2)
    assert f"*v3 (from v2)* · {arrival[1]}" in caption_of(v3)


async def test_a_later_reply_never_overtakes_an_earlier_one_whose_progress_post_is_slow(
        bot: FaultHarness):
    await bot.mention("a lighthouse")
    await wait_versions(bot, 1)
    await bot.settle()
    core = bot.adapter.core
    first_posting, other_submitted = asyncio.Event(), asyncio.Event()
    original_submit, original_post = core.pipeline.submit, core.backend.post_text

    def submit(turn: Turn) -> Any:
        if first_posting.is_set():  # the first reply is held before its submit: this is another
            other_submitted.set()
        return original_submit(turn)

    async def post_text(key: SessionKey, text: Text) -> str:
        # Slack answers the first reply's chat.postMessage late: hold it until the second reply
        # has gone as far as it can. The time limit only keeps a correct (serialising) core from
        # waiting here for ever; the outcome is decided by the order assertions below.
        if text.plain().startswith("Working on v2"):
            first_posting.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(other_submitted.wait(), 3.0)
        return await original_post(key, text)

    core.pipeline.submit, core.backend.post_text = submit, post_text
    await bot.reply("paint it at night", "1700000001.000100")
    await eventually(first_posting.is_set)
    await bot.reply("add a ship", "1700000001.000200")
    await wait_versions(bot, 3)
    await bot.settle()
    state = await slack_state(bot)
    assert [(t.instruction, t.version) for t in state.turns] == [
        ("a lighthouse", 1), ("paint it at night", 2), ("add a ship", 3)]
    assert [user_texts(r)[-1] for r in bot.gemini.requests] == [
        "a lighthouse", "paint it at night", "add a ship"]


# Discord -----------------------------------------------------------------------------------------

@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


async def _discord_turns(h: DiscordHarness, thread: str) -> list[Turn]:
    session = await h.store.find_session(SessionKey("discord", GUILD, CHANNEL, thread))
    assert session is not None
    return (await h.store.load_state(session.id)).turns


async def test_a_discord_message_sent_while_disconnected_is_delivered_once_after_resume(
        fake: FakeDiscord, gemini: FakeGemini, data_dir: Path):
    async with discord_bot(fake, gemini, data_dir) as h:
        thread = (await h.mention("a lighthouse"))["id"]
        await h.wait_versions(thread, 1)
        seen = count_core_messages(h)
        await fake.disconnect_all(4000)  # "unknown error": discord.py reconnects with RESUME
        missed = await fake.user_message(thread, BOB, "paint it at night")
        await eventually(lambda: fake.resumes)
        # A message after the resume arrives after everything replayed before it.
        after = await fake.user_message(thread, ALICE, "history")
        await h.wait_text(thread, "Versions (")
        await h.wait_versions(thread, 2)
        await h.settle(missed, after)
        assert len(fake.identifies) == 1 and len(fake.resumes) == 1  # resumed, not a new session
        assert [m.message_id for m in seen] == [missed["id"], after["id"]]
        turns = await _discord_turns(h, thread)
        assert [(t.instruction, t.version) for t in turns] == [
            ("a lighthouse", 1), ("paint it at night", 2)]
        assert [r.body["contents"][-1]["parts"][0]["text"] for r in gemini.requests] == [
            "a lighthouse", "paint it at night"]


async def test_the_same_discord_message_dispatched_twice_makes_one_turn(
        fake: FakeDiscord, gemini: FakeGemini, data_dir: Path):
    async with discord_bot(fake, gemini, data_dir) as h:
        thread = (await h.mention("a lighthouse"))["id"]
        await h.wait_versions(thread, 1)
        seen = count_core_messages(h)
        payload = await fake.user_message(thread, BOB, "paint it at night")
        await fake.dispatch("MESSAGE_CREATE", payload)
        await eventually(lambda: len(seen) == 2)
        await h.wait_versions(thread, 2)
        await h.settle(payload, payload)
        assert [m.message_id for m in seen] == [payload["id"], payload["id"]]
        turns = await _discord_turns(h, thread)
        assert [(t.instruction, t.version) for t in turns] == [
            ("a lighthouse", 1), ("paint it at night", 2)]
        assert len(gemini.requests) == 2 and len(h.versions(thread)) == 2
