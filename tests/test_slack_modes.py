"""The Slack adapter over Socket Mode (a fake websocket that sends envelopes and expects acks),
its fallback when Slack will not show an uploaded file in an image block, and `model pro`."""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bot.domain import SessionKey
from bot.links import LinkCheck, load_link_secret, verify
from tests.conftest import API_KEY
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.processes import free_port, start_run
from tests.slack_harness import CHANNEL, ROOT_TS, SECRET, TOKEN, Harness, eventually, texts
from tests.test_cli import _env


@pytest.fixture
async def socket_bot(slack: FakeSlack, gemini: FakeGemini, data_dir: Path) -> AsyncIterator[Harness]:
    h = await Harness(slack, gemini, data_dir, socket_mode=True).start()
    yield h
    await h.stop()


async def test_socket_mode_connects_with_the_app_token_only(socket_bot: Harness):
    assert socket_bot.started_as == "Slack (Socket Mode)"
    opens = [c for c in socket_bot.slack.calls if c.method == "apps.connections.open"]
    assert [c.status for c in opens] == [200]
    assert opens[0].headers["authorization"] == f"Bearer {socket_bot.slack.app_token}"
    # The app token goes to apps.connections.open and nowhere else.
    others = [c for c in socket_bot.slack.calls if c.method != "apps.connections.open"]
    assert all(socket_bot.slack.app_token not in c.headers.get("authorization", "") for c in others)


async def test_socket_mode_acks_events_and_runs_the_whole_flow(socket_bot: Harness):
    ack = await socket_bot.mention("a paper boat")
    assert set(ack) == {"envelope_id"}  # acknowledged, with nothing for Slack to show
    [v1] = await eventually(socket_bot.versions)
    await socket_bot.reply("on a blue pond", "1700000001.000200")
    v1, v2 = await eventually(lambda: len(socket_bot.versions()) == 2 and socket_bot.versions())
    click_ack = await socket_bot.click(v2, "Undo")
    assert click_ack["envelope_id"]
    await eventually(lambda: any("Back to v1" in t for t in texts(socket_bot)))
    await socket_bot.react("white_check_mark", v1["ts"])
    await eventually(lambda: any("v1 approved by <@UANA>" in t for t in texts(socket_bot)))
    users = [c["parts"][0]["text"] for c in socket_bot.gemini.requests[-1].body["contents"]
             if c["role"] == "user"]
    assert users == ["a paper boat", "on a blue pond"]


async def test_socket_mode_reconnects_when_slack_closes_the_socket(socket_bot: Harness):
    # Slack closes sockets now and then (deploys, refresh): the client asks for a new URL and
    # carries on, through the same retrying connect() as at start.
    slack = socket_bot.slack
    first = slack.sockets[0]
    await first.close()
    await eventually(lambda: slack.sockets and slack.sockets[0] is not first)
    opens = [c for c in slack.calls if c.method == "apps.connections.open"]
    assert len(opens) == 2
    ack = await socket_bot.mention("a paper boat")
    assert set(ack) == {"envelope_id"}
    await eventually(socket_bot.versions)


async def test_socket_mode_redelivery_makes_one_turn(socket_bot: Harness):
    event = {"type": "app_mention", "user": "UANA", "text": "<@UBOT> a kite", "ts": ROOT_TS,
             "channel": CHANNEL, "event_ts": ROOT_TS}
    await socket_bot.event(event, event_id="EvSAME")
    await socket_bot.event(event, event_id="EvSAME")
    await eventually(socket_bot.versions)
    await socket_bot.settle()
    assert len(socket_bot.gemini.requests) == 1 and len(socket_bot.versions()) == 1


async def test_an_image_block_refused_falls_back_to_sharing_the_file(bot: Harness):
    # Slack refuses an image block naming a file it has not finished processing. Make every
    # such block invalid: the bot must wait, then share the file into the thread itself.
    original = bot.slack._check_block

    def refuse_files(block, where, problems):  # type: ignore[no-untyped-def]
        if isinstance(block, dict) and block.get("type") == "image":
            problems.append(f"invalid slack_file [json-pointer:{where}/slack_file]")
            return
        original(block, where, problems)

    bot.slack._check_block = refuse_files  # type: ignore[method-assign]
    await bot.mention("a lantern")
    thread = await eventually(lambda: len(bot.thread()) >= 3 and bot.thread())
    refused = [c for c in bot.slack.calls if c.method == "chat.postMessage"
               and "blocks" in c.args and "image" in str(c.args["blocks"])]
    assert len(refused) == 5  # the first try and one after each of the four waits
    shared = [m for m in thread if m.get("files")]
    assert len(shared) == 1
    upload = bot.slack.uploads[shared[0]["files"][0]["id"]]
    issued = bot.gemini.issued[0]["parts"][-1]["inlineData"]["data"]
    assert upload.content == base64.b64decode(issued)
    [controls] = [m for m in thread if any(b["type"] == "actions" for b in m.get("blocks") or [])]
    assert "v1" in controls["text"] and "a lantern" in controls["text"]
    # The fallback message is a version post: its buttons and reactions still work.
    await bot.click(controls, "Retry")
    await eventually(lambda: len(bot.gemini.requests) == 2)
    await bot.react("white_check_mark", controls["ts"], user="UDIR")
    await eventually(lambda: any("v1 approved by <@UDIR>" in t for t in texts(bot)))


async def test_model_pro_changes_the_model_of_the_next_turn(bot: Harness):
    await bot.mention("a teapot")
    await eventually(bot.versions)
    await bot.reply("help", "1700000001.0")
    await eventually(lambda: any("Commands: `aspect 16:9`" in t for t in texts(bot)))
    await bot.reply("model pro", "1700000001.1")
    await eventually(lambda: any(t.startswith("Settings: Nano Banana Pro") for t in texts(bot)))
    await bot.reply("in porcelain", "1700000001.2")
    await eventually(lambda: len(bot.versions()) == 2)
    assert bot.gemini.requests[0].model == "gemini-3.1-flash-image"
    assert bot.gemini.requests[-1].model == "gemini-3-pro-image"
    await bot.reply("model dall-e", "1700000001.3")
    await eventually(lambda: any("I don't know the model 'dall-e'" in t for t in texts(bot)))
    session = await bot.store.find_session(_key())
    assert session is not None and session.model == "gemini-3-pro-image"


def _key() -> SessionKey:
    return SessionKey("slack", "T1", CHANNEL, ROOT_TS)


async def test_threadedit_run_says_what_it_started_and_stops_on_sigterm(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini):
    port = free_port()
    env = _env(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=slack.api_url, THREADEDIT_PORT=str(port),
               GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url)
    proc, line = await start_run(tmp_path, env)
    assert proc.stderr is not None
    assert line.startswith(f"threadedit: started Slack (HTTP, POST http://127.0.0.1:{port}/slack/events)")
    assert "engine gemini" in line
    async with httpx.AsyncClient() as http:  # it really serves, and answers unsigned requests 401
        r = await http.post(f"http://127.0.0.1:{port}/slack/events", content=b"{}")
    assert r.status_code == 401
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    rest = (await proc.stderr.read()).decode()
    assert TOKEN not in line + rest and "Traceback" not in rest


async def test_threadedit_run_with_nothing_configured_says_how(tmp_path: Path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "run", cwd=tmp_path, env=_env(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "No chat adapter is configured" in err.decode() and "SLACK_BOT_TOKEN" in err.decode()


async def test_with_a_public_url_each_version_links_to_its_signed_gallery(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    h = Harness(slack, gemini, data_dir)
    h.public_url = "https://edit.example.com"
    await h.start()
    await h.mention("a poster")
    [v1] = await eventually(h.versions)
    [link] = [e for b in v1["blocks"] if b["type"] == "actions" for e in b["elements"]
              if e["text"]["text"] == "Gallery"]
    url = urlsplit(link["url"])
    assert (url.scheme, url.netloc, url.path) == ("https", "edit.example.com", "/s/1/gallery")
    query = parse_qs(url.query)
    secret = load_link_secret(h.app.settings)
    assert verify(1, query["exp"][0], query["sig"][0], secret, time.time()) is LinkCheck.VALID
    assert verify(2, query["exp"][0], query["sig"][0], secret, time.time()) is not LinkCheck.VALID
    assert (await h.click(v1, "Gallery")).status_code == 200  # Slack reports the click; acked
    await h.stop()
