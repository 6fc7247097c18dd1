"""Promise 1, crash safety: a process killed (SIGKILL) while a turn runs loses nothing. The next
start resumes the turn at once (not after the killed process's lease) and posts its result
exactly once, or, past the configured age, reports it failed in its thread. Real `threadedit run`
processes serve Slack's HTTP events; the model is the fake Gemini, slowed so that the kill lands
mid-call."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from tests.conftest import API_KEY
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.fakes.slack_server import FakeSlack, SlackError
from tests.processes import free_port, start_run
from tests.slack_harness import CHANNEL, ROOT_TS, SECRET, TOKEN, eventually
from tests.test_cli import _env


class BotProcess:
    """`threadedit run` in HTTP mode, as an operator would start it."""

    def __init__(self, tmp: Path, slack: FakeSlack, gemini: FakeGemini, **env: str) -> None:
        # A lease no test could wait out: a killed process's turn is taken again at once because
        # its worker is gone (its lock on the data directory's workers/ file went with it), not
        # because its lease ran out.
        env.setdefault("THREADEDIT_LEASE_SECONDS", "600")
        self.port = free_port()
        self.env = _env(tmp, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                        SLACK_API_URL=slack.api_url, THREADEDIT_PORT=str(self.port),
                        GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url, **env)
        self.tmp = tmp

    async def __aenter__(self) -> BotProcess:
        self.proc, line = await start_run(self.tmp, self.env)
        assert line.startswith("threadedit: started Slack"), line
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no handler runs, nothing is flushed on purpose
        await self.proc.wait()

    async def mention(self, text: str) -> None:
        event = {"type": "app_mention", "user": "UANA", "text": f"<@UBOT> {text}", "ts": ROOT_TS,
                 "channel": CHANNEL, "event_ts": ROOT_TS}
        body = json.dumps({"type": "event_callback", "team_id": "T1", "api_app_id": "A1",
                           "event": event, "event_id": "EvCRASH1", "event_time": int(time.time())})
        ts = str(int(time.time()))
        sig = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
        async with httpx.AsyncClient() as http:
            r = await http.post(f"http://127.0.0.1:{self.port}/slack/events", content=body.encode(),
                                headers={"content-type": "application/json",
                                         "x-slack-request-timestamp": ts, "x-slack-signature": sig})
        assert r.status_code == 200


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=TOKEN, bot_user_id="UBOT", team_id="T1") as fake:
        yield fake


def _thread(slack: FakeSlack) -> list[dict]:
    return slack.messages_in_thread(CHANNEL, ROOT_TS)


def _versions(slack: FakeSlack) -> list[dict]:
    return [m for m in _thread(slack) if any(b.get("type") == "image" for b in m.get("blocks") or [])]


def _refuse_versions(slack: FakeSlack) -> Any:
    """Make Slack refuse every post carrying a version's buttons; the handler it replaced."""
    original = slack._handlers["chat.postMessage"]

    async def refuse_versions(args: dict) -> dict:
        if "te:" in str(args.get("blocks") or ""):
            raise SlackError("internal_error")
        return await original(args)

    slack._handlers["chat.postMessage"] = refuse_versions
    return original


def _refused(slack: FakeSlack) -> int:
    return sum(c.method == "chat.postMessage" and "te:" in str(c.args.get("blocks")) for c in slack.calls)


async def _kill_mid_turn(tmp_path: Path, slack: FakeSlack, gemini: FakeGemini) -> None:
    gemini.script.append(Behaviour.slow(60))
    async with BotProcess(tmp_path, slack, gemini) as bot:
        await bot.mention("a lighthouse at dusk")
        await eventually(lambda: gemini.requests)  # the model call is under way
        await eventually(lambda: any(m["text"].startswith("Working on v1") for m in _thread(slack)))
        await bot.kill()
    assert _versions(slack) == []


async def test_a_turn_killed_mid_call_is_resumed_and_posted_exactly_once(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini):
    await _kill_mid_turn(tmp_path, slack, gemini)
    async with BotProcess(tmp_path, slack, gemini):
        [v1] = await eventually(lambda: _versions(slack), within=30)
        # The last thing the turn does, after it is recorded as shown.
        await eventually(lambda: any(m["text"] == "v1 is ready." for m in _thread(slack)))
    # One more start: before it says "started" it shows every outcome not recorded as shown, so
    # a wrong second post would be there by the time it is up.
    async with BotProcess(tmp_path, slack, gemini):
        pass
    assert len(_versions(slack)) == 1 and len(gemini.requests) == 2
    assert "a lighthouse at dusk" in json.dumps(v1["blocks"])
    # The progress message of the killed run was reused, not duplicated.
    assert sum(m["text"].startswith(("Working on v1", "v1 is ready")) for m in _thread(slack)) == 1


async def test_a_turn_older_than_the_resume_age_is_reported_failed_in_its_thread(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini):
    await _kill_mid_turn(tmp_path, slack, gemini)
    async with BotProcess(tmp_path, slack, gemini, THREADEDIT_RESUME_MAX_AGE_SECONDS="0"):
        await eventually(lambda: any("interrupted by a restart" in m["text"] for m in _thread(slack)),
                         within=30)
    assert len(gemini.requests) == 1 and _versions(slack) == []
    assert not any(m["text"].startswith("Working on") for m in _thread(slack))


async def test_a_result_stored_but_not_shown_is_shown_at_the_next_start(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini):
    # Slack refuses every post that carries a version's buttons (as if the process had died
    # right after storing the result): the turn is done in SQLite but its thread never saw it.
    original = _refuse_versions(slack)
    async with BotProcess(tmp_path, slack, gemini) as bot:
        await bot.mention("a red kite")
        await eventually(lambda: _refused(slack) >= 2)  # the image message, then its fallback
        await bot.kill()
    assert _versions(slack) == []
    slack._handlers["chat.postMessage"] = original
    async with BotProcess(tmp_path, slack, gemini):
        [v1] = await eventually(lambda: _versions(slack), within=30)
    assert len(gemini.requests) == 1  # shown from the store, not generated again
    assert "a red kite" in json.dumps(v1["blocks"])


async def test_an_outcome_a_killed_process_left_unshown_is_shown_by_one_still_running(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini):
    """A process finished the turn and died before its thread saw it: another process on the same
    data directory, already running, shows it once that one is gone, and never while it runs."""
    original = _refuse_versions(slack)
    async with BotProcess(tmp_path, slack, gemini) as first:
        await first.mention("a blue heron")
        await eventually(lambda: _refused(slack) >= 2)  # its post, then the fallback
        slack._handlers["chat.postMessage"] = original
        async with BotProcess(tmp_path, slack, gemini):
            # Its start looked for unshown outcomes before saying it started: this one is still
            # the first process's, which runs.
            assert _versions(slack) == []
            await first.kill()
            [v1] = await eventually(lambda: _versions(slack), within=30)
            await eventually(lambda: any(m["text"] == "v1 is ready." for m in _thread(slack)))
    assert len(gemini.requests) == 1 and len(_versions(slack)) == 1
    assert "a blue heron" in json.dumps(v1["blocks"])
