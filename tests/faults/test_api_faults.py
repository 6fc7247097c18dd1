"""Promise 4, API faults: 429 storms, 500/503, timeouts, cut-off or non-JSON bodies, empty answers
and a retired model each end in the right retry or a clear sentence in the thread. The progress
line never stays at "Working on ...", no version is posted for a failure, and the next
instruction replays only the versions (the failed turn is not part of the history).

Waits between retries are planned but not slept (the harness engine's sleep is a no-op), so the
retry budget is exercised in full without taking time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.backend import escape as slack_escape
from bot.domain import TurnState
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.faults._support import (
    FaultHarness,
    assert_replays_only_versions,
    caption_of,
    finished_turns,
    posted_texts,
    progress_message,
    slack_bot,
    slack_state,
    versions_in,
    wait_versions,
)
from tests.slack_harness import eventually

CUT_OFF = b'{"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mimeType": "ima'
PROXY_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


@dataclass(frozen=True)
class Fault:
    script: list[Behaviour]
    tries: int  # model calls the failing instruction makes, retries included
    outcome: str  # "ok" (retried into a version) or the failed turn's reason code
    words: list[str] = field(default_factory=list)  # phrases the sentence in the thread contains
    engine: dict[str, Any] = field(default_factory=dict)


FAULTS = {
    # retryDelay 2 s against a 5 s budget: a third wait would end past it, so it is not started
    # (well before max_attempts); the budget, not the try count, ends it.
    "429 storm past the retry budget": Fault(
        [Behaviour.rate_limited("2s")] * 3, 3, "rate_limited",
        ["Gemini is rate-limiting requests right now.", "Gave up after 3 tries",
         "the session is unchanged"], {"retry_budget": 5.0}),
    "429 per-day quota (never retried)": Fault(
        [Behaviour.rate_limited(None, per_day=True)], 1, "quota_exhausted",
        ["daily quota is used up", "resets at midnight Pacific time"]),
    "500 then success": Fault([Behaviour.server_error(500)], 2, "ok"),
    "503 storm": Fault(
        [Behaviour.server_error(503)] * 6, 6, "unavailable",
        ["Gemini is unavailable right now (HTTP 503).", "Gave up after 6 tries"]),
    # Each try times out after 0.5 s; the planned back-off (1-2 s, then 2-3 s) lets one retry
    # into a 2.9 s budget and not a second, whatever the jitter.
    "timeouts": Fault(
        [Behaviour.slow(5.0)] * 2, 2, "timeout",
        ["Gemini did not answer in time.", "Gave up after 2 tries"],
        {"timeout": 0.5, "retry_budget": 2.9}),
    "a cut-off JSON body, then success": Fault([Behaviour.raw(200, CUT_OFF)], 2, "ok"),
    "non-JSON 200 bodies": Fault(
        [Behaviour.raw(200, PROXY_PAGE, "text/html")] * 6, 6, "bad_response",
        ["Gemini's answer was cut off or not JSON.", "Gave up after 6 tries"]),
    "a proxy's HTML 502 pages": Fault(
        [Behaviour.raw(502, PROXY_PAGE, "text/html")] * 6, 6, "unavailable",
        ["Gemini is unavailable right now (HTTP 502).", "Gave up after 6 tries"]),
    "empty candidates": Fault(
        [Behaviour.empty_candidates()], 1, "empty", ["Gemini sent back an empty answer."]),
}


async def assert_no_stuck_progress(bot: FaultHarness) -> None:
    for turn in (await slack_state(bot)).turns:
        text = (await progress_message(bot, turn.id))["text"]
        assert not text.startswith(("Working on", "Queued behind")), (turn.instruction, text)


@pytest.mark.parametrize("name", list(FAULTS))
async def test_a_model_fault_ends_in_a_retry_or_a_sentence_and_history_stays_intact(
        name: str, slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    fault = FAULTS[name]
    async with slack_bot(slack, gemini, data_dir, engine=fault.engine) as bot:
        await bot.mention("a lighthouse")
        await wait_versions(bot, 1)
        await bot.settle()
        gemini.script.extend(fault.script)
        await bot.reply("paint it at night", "1700000001.000100")
        turns = await finished_turns(bot, 2)
        await bot.settle()  # the outcome is stored before it is shown: wait for it to be shown
        assert gemini.script == []  # every scripted answer was asked for: the tries counted
        assert len(gemini.requests) == 1 + fault.tries
        failed = turns[1]
        progress = (await progress_message(bot, failed.id))["text"]
        if fault.outcome == "ok":
            assert failed.state is TurnState.DONE and failed.version == 2
            await wait_versions(bot, 2)
            assert progress == "v2 is ready."
        else:
            assert (failed.state, failed.reason, failed.version) == (
                TurnState.FAILED, fault.outcome, None)
            assert progress == f"<@UANA> {slack_escape(failed.message or '')}"  # as words, never mrkdwn
            for words in fault.words:
                assert words in progress
            assert "Traceback" not in progress and "Exception" not in progress
            assert len(versions_in(bot)) == 1
        # The thread carries on from the last version, and only versions are replayed.
        state = await slack_state(bot)
        await bot.reply("add a ship", "1700000001.000200")
        expected = 2 if fault.outcome != "ok" else 3
        await wait_versions(bot, expected)
        await bot.settle()
        assert_replays_only_versions(gemini.requests[-1], gemini, state, "add a ship")
        assert f"*v{expected} (from v{expected - 1})* · add a ship" in caption_of(
            versions_in(bot)[-1])
        await assert_no_stuck_progress(bot)


async def test_a_retired_model_is_explained_once_and_the_session_carries_on(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    retired = "gemini-2.0-flash-preview-image-generation"  # not served: the fake answers 404
    async with slack_bot(slack, gemini, data_dir) as bot:
        await bot.mention("a lighthouse")
        await wait_versions(bot, 1)
        await bot.reply(f"model {retired}", "1700000001.000100")
        await eventually(lambda: any(t.startswith("Settings: ") and retired in t
                                     for t in posted_texts(bot)))
        await bot.reply("paint it at night", "1700000001.000200")
        turns = await finished_turns(bot, 2)
        await bot.settle()
        failed = turns[1]
        assert (failed.state, failed.reason) == (TurnState.FAILED, "model_not_found")
        assert len(gemini.requests) == 2 and gemini.requests[1].model == retired  # not retried
        assert gemini.requests[1].status == 404
        progress = (await progress_message(bot, failed.id))["text"]
        assert progress.startswith(f"<@UANA> The model {retired} is not available")
        assert '"model flash"' in progress
        state = await slack_state(bot)
        await bot.reply("model flash", "1700000001.000300")
        await eventually(lambda: "Settings: Nano Banana 2 · auto aspect · 1K" in posted_texts(bot))
        await bot.reply("add a ship", "1700000001.000400")
        await wait_versions(bot, 2)
        await bot.settle()
        assert gemini.requests[-1].model == "gemini-3.1-flash-image"
        assert_replays_only_versions(gemini.requests[-1], gemini, state, "add a ship")
        await assert_no_stuck_progress(bot)
