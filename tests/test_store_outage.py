"""A mention received while PostgreSQL is down past the store's retries is not lost (issue 14): a real
`threadedit run` Slack process (HTTP mode) acknowledges it, keeps it in memory, says so in the thread,
and records it once PostgreSQL is back: one turn, one version, one model call, even when Slack's
retry of the same event arrives afterwards."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bot.chat import presenter
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.postgres import Cluster
from tests.processes import stop
from tests.slack_harness import SECRET, TOKEN, eventually
from tests.test_fleet_faults import WITHIN, _said, _stderr_until, own_cluster  # noqa: F401 - a fixture
from tests.test_slack_replicas import (
    Mention,
    _asked,
    _bot_posts,
    _deliver,
    _done,
    _envelope,
    _http_env,
    _start_replicas,
    _versions,
    _versions_recorded,
)

KEPT = presenter.KEPT.plain()


async def test_a_mention_while_postgresql_is_down_past_the_retries_is_kept_and_made_one_turn_after(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, own_cluster: Cluster):  # noqa: F811
    url = own_cluster.new_database()
    [replica] = await _start_replicas(tmp_path, _http_env(tmp_path, slack, gemini, url), count=1)
    mention = Mention("1700000800.000100", "1700000800.000100", "a poster asked while the store is down")
    later = Mention("1700000900.000100", "1700000900.000100", "a poster asked once it is back")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.to_thread(own_cluster.stop_server)
            # Slack's ack comes at once; recording the mention fails once the store's retries ran
            # out (about 9 s): it is kept, with one line in the log and one sentence in the thread.
            assert (await _deliver(http, replica, _envelope(mention.event(), "EvKEPT")))[0] == 200
            lines = await _stderr_until(replica.proc, "is kept until the store answers")
            assert "Traceback" not in "".join(lines), "".join(lines)
            await eventually(lambda: _said(slack, mention.thread, KEPT), within=WITHIN)
            assert _asked(gemini, mention.text) == 0
            await asyncio.to_thread(own_cluster.start_server)
            await eventually(lambda: _done(slack, mention.thread), within=WITHIN)
            # Slack's retry of the event once the store is back: the store's event claim refuses it.
            assert (await _deliver(http, replica, _envelope(mention.event(), "EvKEPT"), retry=1))[0] == 200
            assert (await _deliver(http, replica, _envelope(mention.event("message"), "EvTWIN")))[0] == 200
            # Handled after those two (an observable end for them): a mention of another thread.
            assert (await _deliver(http, replica, _envelope(later.event(), "EvLATER")))[0] == 200
            await eventually(lambda: _done(slack, later.thread), within=WITHIN)
    finally:
        code, output = await stop(replica.proc)
    assert code == 0 and "Traceback" not in output, output
    assert TOKEN not in output and SECRET not in output
    # The process has stopped: nothing more can be posted or recorded.
    versions = _versions(slack, mention.thread)
    assert len(versions) == 1
    lines = [m["text"] for m in _bot_posts(slack, mention.thread) if m not in versions]
    assert lines == [f"<@UANA> {KEPT}", "v1 is ready."], lines
    assert _asked(gemini, mention.text) == 1 and len(gemini.requests) == 2
    assert await _versions_recorded(url) == {mention.thread: [1], later.thread: [1]}


async def test_a_stop_while_a_mention_is_kept_says_so_in_the_log_and_the_thread(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, own_cluster: Cluster):  # noqa: F811
    url = own_cluster.new_database()
    [replica] = await _start_replicas(tmp_path, _http_env(tmp_path, slack, gemini, url), count=1)
    mention = Mention("1700001000.000100", "1700001000.000100", "a poster asked before a stop")
    try:
        await asyncio.to_thread(own_cluster.stop_server)
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _deliver(http, replica, _envelope(mention.event(), "EvSTOPPED")))[0] == 200
        await _stderr_until(replica.proc, "is kept until the store answers")
        await eventually(lambda: _said(slack, mention.thread, KEPT), within=WITHIN)
    finally:
        code, output = await stop(replica.proc)  # SIGTERM with the mention still kept
        await asyncio.to_thread(own_cluster.start_server)
    assert code == 0 and "Traceback" not in output, output
    given_up = [line for line in output.splitlines() if "EvSTOPPED" in line or "1700001000" in line]
    assert len(given_up) == 1 and given_up[0].endswith("was not recorded: the process is stopping"), output
    lines = [m["text"] for m in _bot_posts(slack, mention.thread)]
    assert lines == [f"<@UANA> {KEPT}", f"<@UANA> {presenter.NOT_KEPT_STOPPED.plain()}"], lines
    assert _asked(gemini, mention.text) == 0
    assert await _versions_recorded(url) == {}
