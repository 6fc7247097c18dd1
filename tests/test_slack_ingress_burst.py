"""A cold ingress replica and a burst of mentions: what a replica does per event once it is up.

A replica that has just started receives many mentions at once (a deploy during a busy hour, or
Slack re-sending what queued while it was down). Its start-up already asked Slack who the bot is
(auth.test); every event of the burst must reuse that answer rather than ask again, and every
mention must still get its line in its thread."""

from __future__ import annotations

import asyncio

import httpx
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from sqlalchemy import select

from adapters.slack.identity import authorize_result
from bot.storage.engine import make_engine, sqlite_url
from bot.storage.schema import turns
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.processes import free_port, start_run, stop
from tests.slack_harness import eventually
from tests.test_slack_replicas import Mention, Replica, _bot_posts, _deliver, _envelope, _http_env

BURST = 12


async def test_a_cold_replica_asks_slack_who_the_bot_is_once_for_a_burst_of_mentions(
        tmp_path, slack: FakeSlack, gemini: FakeGemini):
    port = free_port()
    env = {**_http_env(tmp_path, slack, gemini, None), "THREADEDIT_PORT": str(port)}
    proc, line = await start_run(tmp_path, env, "run", "--no-worker")
    try:
        assert "no worker: `threadedit worker` processes run the turns" in line, line
        assert [c.method for c in slack.calls] == ["auth.test"]  # the start-up's check
        replica = Replica(proc, port)
        mentions = [Mention(f"17100{n:05d}.000100", f"17100{n:05d}.000100", f"poster {n}")
                    for n in range(BURST)]
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=BURST)) as http:
            answers = await asyncio.gather(*(
                _deliver(http, replica, _envelope(m.event(), f"EvBURST{n:04d}"))
                for n, m in enumerate(mentions)))
        assert [status for status, _ in answers] == [200] * BURST
        await eventually(lambda: all(_bot_posts(slack, m.thread) for m in mentions), within=30)
    finally:
        code, output = await stop(proc)
    assert code == 0 and "Traceback" not in output, output
    for m in mentions:
        assert len(_bot_posts(slack, m.thread)) == 1, _bot_posts(slack, m.thread)
    assert [c.method for c in slack.calls].count("auth.test") == 1
    assert gemini.requests == []
    # Bolt still knew the bot's user id: each instruction was recorded without the mention.
    assert sorted(await _instructions(sqlite_url(tmp_path / "data" / "threadedit.sqlite3"))) == \
        sorted(m.text for m in mentions)


async def _instructions(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(select(turns.c.instruction))).scalars())
    finally:
        await engine.dispose()


def _auth_test_answer(**data: object) -> AsyncSlackResponse:
    return AsyncSlackResponse(client=None, http_verb="POST", api_url="https://slack.com/api/auth.test",
                              req_args={}, data={"ok": True, **data},
                              headers={"x-oauth-scopes": "app_mentions:read,chat:write"}, status_code=200)


def test_bolt_is_given_what_its_own_authorization_would_have_built():
    # slack_bolt's single-workspace authorization turns its auth.test answer into this (a private
    # function: compared here so that a Bolt upgrade that changes it is noticed).
    from slack_bolt.middleware.authorization.internals import _to_authorize_result

    answers = [_auth_test_answer(team_id="T1", user_id="UBOT", bot_id="BBOT", team="Fake", url="u"),
               _auth_test_answer(team_id="T1", user_id="UBOT", bot_id="BBOT", enterprise_id="E1",
                                 is_enterprise_install=False)]
    for answer in answers:
        for user in ("UANA", None):
            assert authorize_result(answer, "xoxb-1-abc", user) == _to_authorize_result(
                auth_test_result=answer, token="xoxb-1-abc", request_user_id=user)
            # A rotating bot token is a bot token too (Bolt takes it for a user's): the listeners
            # know the bot's user id, so a mention of the bot in a thread is recognised.
            rotating = authorize_result(answer, "xoxe.xoxb-1-abc", user)
            assert (rotating.bot_user_id, rotating.bot_token, rotating.user_token, rotating.user_id) \
                == ("UBOT", "xoxe.xoxb-1-abc", None, user)
            assert rotating.bot_scopes == ["app_mentions:read", "chat:write"]
