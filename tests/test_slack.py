"""The Slack adapter end to end: the real AsyncApp behind its real aiohttp endpoint, signed
requests over HTTP, the real AsyncWebClient talking to a fake Slack Web API, file downloads from
a local origin, and the fake Gemini API behind the core."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image
from slack_sdk.signature import SignatureVerifier

from adapters.slack.app import SlackAdapter
from adapters.slack.settings import SlackSettings
from bot.app import App
from bot.config import load_settings
from bot.service import EditService, SessionDefaults
from bot.storage.blobs import BlobStore
from bot.storage.repository import SessionStore
from tests.conftest import make_engine
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.fakes.slack_server import FakeSlack

TOKEN = "xoxb-9999-secret-token-abc"
SECRET = "signing-secret-123"
CHANNEL = "C0CHAN"
ROOT_TS = "1700000000.000100"


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token=TOKEN, bot_user_id="UBOT", team_id="T1") as fake:
        yield fake


class Harness:
    """One running threadedit Slack adapter, and ways to send it what Slack would send."""

    def __init__(self, slack: FakeSlack, gemini: FakeGemini, data_dir: Path,
                 approvers: str = "") -> None:
        self.slack, self.gemini, self.data_dir, self.approvers = slack, gemini, data_dir, approvers
        self.event_no = 0
        self.allowed = ""

    async def start(self) -> Harness:
        self.store = await SessionStore.open(self.data_dir / "threadedit.sqlite3")
        engine = make_engine(self.gemini)
        blobs = BlobStore(self.data_dir / "blobs")
        service = EditService(self.store, blobs, engine, defaults=SessionDefaults())
        settings = load_settings(THREADEDIT_DATA_DIR=str(self.data_dir))
        self.app = App(settings, self.store, blobs, engine, service)
        self.adapter = SlackAdapter(
            SlackSettings(SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                          SLACK_API_URL=self.slack.api_url, SLACK_APPROVERS=self.approvers,
                          SLACK_FILE_ORIGINS=self.slack.files_origin,
                          SLACK_ALLOWED_CHANNELS=self.allowed),
            self.app, progress_interval=0.05)
        self.adapter.backend._sleep = _no_sleep
        await self.adapter.core.start()
        self.server = TestServer(self.adapter.web_app(), host="127.0.0.1")
        await self.server.start_server()
        self.http = httpx.AsyncClient(base_url=str(self.server.make_url("/")))
        return self

    async def stop(self) -> None:
        await self.adapter.core.pipeline.join()
        await self.http.aclose()
        await self.server.close()
        await self.adapter.aclose()
        await self.app.engine.aclose()
        await self.store.close()

    async def post(self, body: str, content_type: str, *, secret: str = SECRET,
                   retry: int | None = None) -> httpx.Response:
        ts = str(int(time.time()))
        headers = {"content-type": content_type, "x-slack-request-timestamp": ts,
                   "x-slack-signature": SignatureVerifier(secret).generate_signature(
                       timestamp=ts, body=body)}
        if retry is not None:
            headers |= {"x-slack-retry-num": str(retry), "x-slack-retry-reason": "http_timeout"}
        return await self.http.post("/slack/events", content=body.encode(), headers=headers)

    async def event(self, event: dict[str, Any], *, event_id: str | None = None,
                    **kw: Any) -> httpx.Response:
        self.event_no += 1
        envelope = {"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                    "event": event, "event_id": event_id or f"Ev{self.event_no:08d}",
                    "event_time": int(time.time())}
        return await self.post(json.dumps(envelope), "application/json", **kw)

    async def mention(self, text: str, ts: str = ROOT_TS, user: str = "UANA") -> httpx.Response:
        return await self.event({"type": "app_mention", "user": user, "text": f"<@UBOT> {text}",
                                 "ts": ts, "channel": CHANNEL, "event_ts": ts})

    async def reply(self, text: str, ts: str, *, user: str = "UANA",
                    files: list[dict] | None = None, **extra: Any) -> httpx.Response:
        event = {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": ROOT_TS,
                 "channel": CHANNEL, "event_ts": ts, "channel_type": "channel", **extra}
        if files:
            event |= {"subtype": "file_share", "files": files}
        return await self.event(event)

    async def react(self, name: str, message_ts: str, user: str = "UANA",
                    added: bool = True) -> httpx.Response:
        return await self.event({"type": "reaction_added" if added else "reaction_removed",
                                 "user": user, "reaction": name, "item_user": "UBOT",
                                 "item": {"type": "message", "channel": CHANNEL, "ts": message_ts},
                                 "event_ts": str(time.time())})

    async def click(self, message: dict, label: str, user: str = "UANA") -> httpx.Response:
        button = next(e for b in message["blocks"] if b["type"] == "actions"
                      for e in b["elements"] if e["text"]["text"] == label)
        payload = {"type": "block_actions", "user": {"id": user, "team_id": "T1"},
                   "team": {"id": "T1"}, "api_app_id": "A1", "token": "x", "trigger_id": "1.2",
                   "channel": {"id": CHANNEL},
                   "container": {"type": "message", "message_ts": message["ts"],
                                 "channel_id": CHANNEL, "is_ephemeral": False},
                   "message": message, "response_url": "http://127.0.0.1:9/r",
                   "actions": [{"action_id": button["action_id"], "value": button["value"],
                                "block_id": "b", "type": "button", "action_ts": "1"}]}
        return await self.post("payload=" + quote(json.dumps(payload)),
                               "application/x-www-form-urlencoded")

    def thread(self) -> list[dict]:
        return self.slack.messages_in_thread(CHANNEL, ROOT_TS)

    def versions(self) -> list[dict]:
        return [m for m in self.thread()
                if any(b.get("type") == "image" for b in m.get("blocks") or [])]

    async def settle(self) -> None:
        await asyncio.sleep(0.05)
        await self.adapter.core.pipeline.join()
        await asyncio.sleep(0.05)


async def _no_sleep(_: float) -> None:
    return None


async def eventually(cond: Callable[[], Any], within: float = 15.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def bot(slack: FakeSlack, gemini: FakeGemini, data_dir: Path) -> AsyncIterator[Harness]:
    h = await Harness(slack, gemini, data_dir, approvers="UDIR,UANA").start()
    yield h
    await h.stop()


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buf, "PNG")
    return buf.getvalue()


def texts(h: Harness) -> list[str]:
    return [m.get("text") or "" for m in h.thread()]


async def test_mention_makes_v1_with_image_and_buttons_on_one_message(bot: Harness):
    r = await bot.mention("a coffee poster, dark blue gradient")
    assert r.status_code == 200
    [v1] = await eventually(bot.versions)
    blocks = {b["type"]: b for b in v1["blocks"]}
    file_id = blocks["image"]["slack_file"]["id"]
    issued = bot.gemini.issued[0]["parts"][-1]["inlineData"]["data"]
    assert bot.slack.uploads[file_id].content == base64.b64decode(issued)
    assert [e["text"]["text"] for e in blocks["actions"]["elements"]] == [
        "Undo", "Retry", "4K", "Approve"]
    caption = blocks["context"]["elements"][0]["text"]
    assert "v1" in caption and "a coffee poster, dark blue gradient" in caption
    assert "<@UANA>" in caption
    first = bot.thread()[0]
    assert first["text"].startswith(("Working on v1", "v1 is ready"))
    assert bot.gemini.requests[0].body["contents"][0]["parts"][0]["text"] == (
        "a coffee poster, dark blue gradient")


async def test_reply_with_an_image_is_a_reference(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    ref = png((250, 0, 0))
    f = bot.slack.add_file(ref, filename="logo.png")
    await bot.reply("put this logo top left", "1700000001.000200", files=[f])
    await eventually(lambda: len(bot.versions()) == 2)
    last_user = bot.gemini.requests[-1].body["contents"][-1]
    assert last_user["parts"][0]["text"] == "put this logo top left"
    assert base64.b64decode(last_user["parts"][1]["inlineData"]["data"]) == ref
    assert bot.slack.file_downloads[-1].authorization == f"Bearer {TOKEN}"


async def test_buttons_undo_retry_and_approve(bot: Harness):
    await bot.mention("a lighthouse")
    await eventually(bot.versions)
    await bot.reply("at night", "1700000001.000200")
    v1, v2 = await eventually(lambda: len(bot.versions()) == 2 and bot.versions())
    assert (await bot.click(v2, "Undo")).status_code == 200
    await eventually(lambda: any("Back to v1" in t for t in texts(bot)))
    await bot.click(v1, "Retry")
    await eventually(lambda: len(bot.versions()) == 3)
    assert len(bot.gemini.requests[-1].body["contents"]) == 1  # a sibling of v1: no history
    await bot.click(v1, "Approve", user="UDIR")
    await eventually(lambda: any("v1 approved by UDIR" in t for t in texts(bot)))
    await bot.click(v2, "4K")
    await eventually(lambda: len(bot.versions()) == 4)
    assert bot.gemini.requests[-1].body["generationConfig"]["imageConfig"]["imageSize"] == "4K"


async def test_reactions_revert_retry_approve_and_withdraw(bot: Harness):
    await bot.mention("a lighthouse")
    await eventually(bot.versions)
    await bot.reply("at night", "1700000001.000200")
    v1, v2 = await eventually(lambda: len(bot.versions()) == 2 and bot.versions())
    await bot.react("leftwards_arrow_with_hook", v1["ts"])  # an older version: revert to it
    await eventually(lambda: any("Back to v1; the next instruction edits it" in t
                                 for t in texts(bot)))
    await bot.reply("in the fog", "1700000002.000300")
    await eventually(lambda: len(bot.versions()) == 3)
    users = [c["parts"][0]["text"] for c in bot.gemini.requests[-1].body["contents"]
             if c["role"] == "user"]
    assert users == ["a lighthouse", "in the fog"]
    await bot.react("repeat", v2["ts"])
    await eventually(lambda: len(bot.versions()) == 4)
    await bot.react("white_check_mark", v2["ts"], user="UDIR")
    await eventually(lambda: any("v2 approved by UDIR" in t for t in texts(bot)))
    await bot.react("white_check_mark", v2["ts"], user="UDIR", added=False)
    await eventually(lambda: any("UDIR withdrew the approval of v2" in t for t in texts(bot)))
    # v4 (the retry of v2, so a child of v1) is the head: ↩️ on it undoes to its parent.
    await bot.react("leftwards_arrow_with_hook", bot.versions()[-1]["ts"])
    await eventually(lambda: any(t.startswith("Back to v1.") for t in texts(bot)))


async def test_a_non_approver_is_refused_privately_and_audited(bot: Harness):
    await bot.mention("a label")
    [v1] = await eventually(bot.versions)
    await bot.react("white_check_mark", v1["ts"], user="UINTERN")
    await eventually(lambda: bot.slack.ephemerals)
    assert bot.slack.ephemerals[0]["user"] == "UINTERN"
    assert "approvers" in bot.slack.ephemerals[0]["text"]
    assert not any("approved by" in t for t in texts(bot))
    session = await bot.store.find_session(_key())
    log = await bot.store.audit_log(session.id)
    assert ("UINTERN", "approve", "refused") in [(e["actor"], e["action"], e["outcome"])
                                                 for e in log]


def _key():
    from bot.domain import SessionKey

    return SessionKey("slack", "T1", CHANNEL, ROOT_TS)


async def test_duplicate_deliveries_make_one_turn(bot: Harness):
    event = {"type": "app_mention", "user": "UANA", "text": "<@UBOT> a kite", "ts": ROOT_TS,
             "channel": CHANNEL, "event_ts": ROOT_TS}
    first = await bot.event(event, event_id="EvSAME")
    again = await bot.event(event, event_id="EvSAME", retry=1)
    # The same mention also arrives as a plain message event with another id.
    as_message = await bot.event({**event, "type": "message", "thread_ts": ROOT_TS},
                                 event_id="EvOTHER")
    assert {first.status_code, again.status_code, as_message.status_code} == {200}
    await eventually(bot.versions)
    await bot.settle()
    assert len(bot.gemini.requests) == 1 and len(bot.versions()) == 1


async def test_bad_signature_is_refused(bot: Harness):
    r = await bot.event({"type": "app_mention", "user": "U", "text": "<@UBOT> x", "ts": ROOT_TS,
                         "channel": CHANNEL}, secret="wrong-secret")
    assert r.status_code == 401
    await bot.settle()
    assert bot.gemini.requests == [] and bot.thread() == []


async def test_own_edited_and_unrelated_messages_are_ignored_with_200(bot: Harness):
    await bot.mention("a boat")
    await eventually(bot.versions)
    await bot.settle()
    before = len(bot.gemini.requests)
    rs = [
        await bot.reply("from the bot itself", "1700000001.1", user="UBOT", bot_id="BBOT"),
        await bot.event({"type": "message", "subtype": "message_changed", "channel": CHANNEL,
                         "ts": "1700000001.2", "hidden": True,
                         "message": {"type": "message", "user": "UANA", "text": "edited",
                                     "ts": ROOT_TS, "thread_ts": ROOT_TS}}),
        await bot.event({"type": "message", "subtype": "message_deleted", "channel": CHANNEL,
                         "ts": "1700000001.3", "hidden": True, "deleted_ts": ROOT_TS}),
        await bot.event({"type": "message", "user": "UBO", "text": "unrelated thread",
                         "ts": "1700000001.4", "thread_ts": "1600000000.000001",
                         "channel": CHANNEL}),
        await bot.event({"type": "channel_join", "user": "UBO"}),
    ]
    assert [r.status_code for r in rs] == [200] * 5
    await bot.settle()
    assert len(bot.gemini.requests) == before


async def test_download_outside_the_allowed_origins_never_gets_the_token(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    f = bot.slack.add_file(png((0, 0, 250)))
    elsewhere = bot.slack.files_origin.replace("127.0.0.1", "localhost")
    f = {**f, "url_private": f["url_private"].replace(bot.slack.files_origin, elsewhere),
         "url_private_download": f["url_private_download"].replace(bot.slack.files_origin,
                                                                   elsewhere)}
    await bot.reply("use this", "1700000001.000200", files=[f])
    await eventually(lambda: any("only send my Slack token there" in t for t in texts(bot)))
    assert bot.slack.file_downloads == []


async def test_a_sign_in_page_is_reported_as_a_setup_problem(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    f = bot.slack.add_file(png((0, 0, 250)), login_page=True)
    await bot.reply("use this", "1700000001.000200", files=[f])
    await eventually(lambda: any("files:read" in t for t in texts(bot)))
    assert len(bot.versions()) == 1


async def test_blocked_answers_and_commands_are_plain_sentences(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    bot.gemini.script.append(Behaviour.finish("IMAGE_SAFETY"))
    await bot.reply("something unsafe", "1700000001.1")
    await eventually(lambda: any("safety filters" in t for t in texts(bot)))
    await bot.reply("size 2K", "1700000001.2")
    await eventually(lambda: any(t.startswith("Settings: Nano Banana 2") and "2K" in t
                                 for t in texts(bot)))
    await bot.reply("aspect 7:3", "1700000001.3")
    await eventually(lambda: any("does not take aspect ratio 7:3" in t for t in texts(bot)))
    await bot.reply("history", "1700000001.4")
    await eventually(lambda: any(t.startswith("Versions (") for t in texts(bot)))
    await bot.settle()
    assert len(bot.gemini.requests) == 2


async def test_restart_between_two_turns_continues_the_session(slack, gemini, data_dir):
    h = await Harness(slack, gemini, data_dir).start()
    await h.mention("a red kite")
    await eventually(h.versions)
    await h.stop()
    h = await Harness(slack, gemini, data_dir).start()  # a new process, the same data
    [v1] = h.versions()
    await h.reply("add a long tail", "1700000001.000200")
    await eventually(lambda: len(h.versions()) == 2)
    sent = gemini.requests[-1].body["contents"]
    assert sent[1] == gemini.issued[0] and len(sent) == 3
    await h.click(v1, "Approve")  # a button on a message posted before the restart
    await eventually(lambda: any("v1 approved by UANA" in t for t in texts(h)))
    await h.stop()


async def test_the_token_never_reaches_the_logs(slack, gemini, data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    h = await Harness(slack, gemini, data_dir).start()
    await h.mention("a poster")
    await eventually(h.versions)
    f = h.slack.add_file(png((1, 2, 3)))
    await h.reply("use this", "1700000001.000200", files=[f])
    await eventually(lambda: len(h.versions()) == 2)
    await h.stop()
    assert caplog.records and TOKEN not in caplog.text and SECRET not in caplog.text


async def test_slack_429_is_retried_after_retry_after(bot: Harness):
    bot.slack.rate_limit_next["chat.postMessage"] = 0
    await bot.mention("a poster")
    await eventually(bot.versions)
    posts = [c.status for c in bot.slack.calls if c.method == "chat.postMessage"]
    assert posts[0] == 429 and posts[1] == 200


async def test_channels_outside_the_allowed_list_are_refused(slack, gemini, data_dir):
    h = Harness(slack, gemini, data_dir)
    h.allowed = "COTHER"
    await h.start()
    await h.mention("a poster")
    await eventually(lambda: slack.ephemerals)
    assert "not enabled in this channel" in slack.ephemerals[0]["text"]
    await h.settle()
    assert gemini.requests == [] and h.versions() == []
    await h.stop()


async def test_progress_line_is_updated_while_the_turn_runs(bot: Harness):
    bot.gemini.script.append(Behaviour.slow(0.4))
    await bot.mention("a slow poster")
    await eventually(bot.versions)
    updates = [c.args["text"] for c in bot.slack.calls if c.method == "chat.update"]
    working = [t for t in updates if t.startswith("Working on v1 · Nano Banana 2 · auto aspect · 1K")]
    assert len(working) >= 2 and updates[-1] == "v1 is ready."
