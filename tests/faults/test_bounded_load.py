"""Promise 3, bounded load: THREADEDIT_MAX_CONCURRENCY caps the model calls in flight; 50 threads
writing at once all finish, in order within each thread, none lost; people whose instruction
waits are told so.

The fake Gemini holds every answer until the test releases it, so "how many calls are in
flight" is read while nothing can finish, not guessed from timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.backend import mrkdwn
from bot.chat import presenter
from bot.domain import SessionKey, Turn, TurnState
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.faults._support import (
    FaultHarness,
    caption_of,
    posted_texts,
    progress_message,
    slack_bot,
    slack_state,
    thread_of,
    user_texts,
    versions_in,
    wait_versions,
)
from tests.slack_harness import CHANNEL, eventually

CAP = 3
THREADS = 50
ROOTS = [f"1700000100.{i:06d}" for i in range(THREADS)]


@pytest.fixture
async def bot(slack: FakeSlack, gemini: FakeGemini, data_dir: Path) -> AsyncIterator[FaultHarness]:
    async with slack_bot(slack, gemini, data_dir,
                         settings={"THREADEDIT_MAX_CONCURRENCY": str(CAP)}) as h:
        yield h


def count_submits(bot: FaultHarness) -> list[Turn]:
    """Turns handed to the pipeline, in order (the last step of accepting an instruction)."""
    pipeline = bot.adapter.core.pipeline
    submitted: list[Turn] = []
    original = pipeline.submit

    def submit(turn: Turn) -> Any:
        submitted.append(turn)
        return original(turn)

    pipeline.submit = submit
    return submitted


async def states_of(bot: FaultHarness) -> list[TurnState]:
    return [t.state for root in ROOTS for t in (await slack_state(
        bot, SessionKey("slack", "T1", CHANNEL, root))).turns]


async def test_fifty_threads_at_once_stay_under_the_cap_and_all_finish_in_order(bot: FaultHarness):
    assert bot.app.settings.max_concurrency == CAP
    submitted = count_submits(bot)
    bot.gemini.hold = asyncio.Event()
    acks = await asyncio.gather(*(bot.mention(f"poster {i}", ts=root) for i, root in enumerate(ROOTS)))
    assert {r.status_code for r in acks} == {200}
    await eventually(lambda: len(submitted) == THREADS)
    # Every thread has a session, so each can take a reply now; they all arrive at once too.
    acks = await asyncio.gather(*(bot.reply(f"make poster {i} darker", f"1700000200.{i:06d}",
                                            thread_ts=root) for i, root in enumerate(ROOTS)))
    assert {r.status_code for r in acks} == {200}
    await eventually(lambda: len(submitted) == 2 * THREADS)
    await eventually(lambda: bot.gemini.in_flight >= CAP)
    # Every other thread's worker has reached the cap and waits there: from now on nothing more
    # can start, so what Gemini sees is final (a broken cap never gets here, or shows more calls).
    pipeline = bot.adapter.core.pipeline
    await eventually(lambda: pipeline.waiting_for_slot() == THREADS - CAP)
    assert bot.gemini.in_flight == CAP
    states = await states_of(bot)
    assert states.count(TurnState.RUNNING) == CAP
    assert states.count(TurnState.QUEUED) == 2 * THREADS - CAP
    bot.gemini.hold.set()
    await eventually(lambda: all(len(versions_in(bot, root)) == 2 for root in ROOTS), within=30)
    await bot.settle()
    assert bot.gemini.max_in_flight == CAP
    assert len(bot.gemini.requests) == 2 * THREADS  # none lost, none made twice
    for i, root in enumerate(ROOTS):
        v1, v2 = versions_in(bot, root)
        assert f"*v1* · poster {i} ·" in caption_of(v1)
        assert f"*v2 (from v1)* · make poster {i} darker ·" in caption_of(v2)
    # Within each thread the reply ran after the mention and edited its result.
    by_thread = {user_texts(r)[0]: user_texts(r) for r in bot.gemini.requests if len(user_texts(r)) == 2}
    assert by_thread == {f"poster {i}": [f"poster {i}", f"make poster {i} darker"]
                         for i in range(THREADS)}


async def test_replies_waiting_in_a_thread_are_told_their_place_and_run_in_order(bot: FaultHarness):
    await bot.mention("a lighthouse")
    await wait_versions(bot, 1)
    await bot.settle()
    bot.gemini.hold = asyncio.Event()
    submitted = count_submits(bot)
    replies = ["paint it at night", "add a ship", "add fog"]
    before = len(posted_texts(bot))
    for n, text in enumerate(replies, 1):
        await bot.reply(text, f"1700000001.00010{n}")
        # Queued, and its first line posted (the post follows the queueing).
        await eventually(lambda n=n: len(submitted) == n and len(posted_texts(bot)) == before + n)
    assert posted_texts(bot)[-3:] == [
        posted_texts(bot)[-3], mrkdwn(presenter.queued_line(1)), mrkdwn(presenter.queued_line(2))]
    assert posted_texts(bot)[-3].startswith("Working on v2")
    assert mrkdwn(presenter.queued_line(1)) == "Queued behind 1 instruction in this thread."
    assert mrkdwn(presenter.queued_line(2)) == "Queued behind 2 instructions in this thread."
    bot.gemini.hold.set()
    await wait_versions(bot, 4)
    await bot.settle()
    assert [user_texts(r) for r in bot.gemini.requests[1:]] == [
        ["a lighthouse", *replies[:1]], ["a lighthouse", *replies[:2]], ["a lighthouse", *replies]]
    assert [caption_of(v).split(" · ")[:2] for v in versions_in(bot)] == [
        ["*v1*", "a lighthouse"], ["*v2 (from v1)*", replies[0]], ["*v3 (from v2)*", replies[1]],
        ["*v4 (from v3)*", replies[2]]]
    # The queued lines became progress lines when their turn started, then pointed at the result.
    assert [(await progress_message(bot, t.id))["text"] for t in submitted] == [
        "v2 is ready.", "v3 is ready.", "v4 is ready."]


async def test_threads_waiting_for_a_model_slot_are_told_they_wait(bot: FaultHarness):
    bot.gemini.hold = asyncio.Event()
    submitted = count_submits(bot)
    roots = ROOTS[: CAP + 2]
    for i, root in enumerate(roots):
        await bot.mention(f"poster {i}", ts=root)
        # The first CAP take every slot (their calls reach Gemini) before the others arrive.
        await eventually(lambda i=i: len(submitted) == i + 1
                         and bot.gemini.in_flight == min(i + 1, CAP))
    # Each thread's first line is posted just after its turn was queued: wait for it to be there.
    waiting = await eventually(lambda: all(thread_of(bot, r) for r in roots[CAP:])
                               and [thread_of(bot, root)[0]["text"] for root in roots[CAP:]])
    try:
        assert waiting == [mrkdwn(presenter.waiting_line(1))] * 2
    finally:
        bot.gemini.hold.set()


async def test_a_failed_model_call_frees_its_slot(bot: FaultHarness):
    # A slot must come back when a call fails, or a few errors would stall every thread.
    bot.gemini.script.extend([Behaviour.empty_candidates()] * CAP)
    for i, root in enumerate(ROOTS[:CAP]):
        await bot.mention(f"poster {i}", ts=root)
    await eventually(lambda: len(bot.gemini.requests) == CAP)
    await bot.settle()
    await bot.mention("one more", ts=ROOTS[CAP])
    await wait_versions(bot, 1, ROOTS[CAP])
    assert all(versions_in(bot, root) == [] for root in ROOTS[:CAP])
