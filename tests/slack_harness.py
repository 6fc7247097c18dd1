"""A running threadedit Slack adapter for tests, and ways to send it what Slack would send."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from aiohttp.test_utils import TestServer
from PIL import Image
from slack_sdk.signature import SignatureVerifier

from adapters.slack.app import SlackAdapter
from adapters.slack.settings import SlackSettings
from bot.app import App
from bot.config import load_settings
from bot.service import EditService, SessionDefaults
from bot.spending import SpendLimits
from bot.storage.blobs import BlobStore
from bot.storage.db import make_private_dir
from bot.storage.repository import SessionStore
from tests.conftest import make_engine
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack

TOKEN = "xoxb-9999-secret-token-abc"
SECRET = "signing-secret-123"
CHANNEL = "C0CHAN"
ROOT_TS = "1700000000.000100"


class Harness:
    """One running threadedit Slack adapter, and ways to send it what Slack would send."""

    def __init__(self, slack: FakeSlack, gemini: FakeGemini, data_dir: Path,
                 approvers: str = "", *, socket_mode: bool = False) -> None:
        self.slack, self.gemini, self.data_dir, self.approvers = slack, gemini, data_dir, approvers
        self.socket_mode = socket_mode
        self.event_no = 0
        self.allowed = ""
        self.server: TestServer | None = None
        self.spend_limits: SpendLimits | None = None
        self.settings_changers = ""
        self.public_url = ""
        # Deliveries Slack had accepted (and the app will handle), and those the adapter has
        # handled to their end: settle() waits for the second to catch up with the first.
        self.accepted: Counter[str] = Counter()
        self.handled: Counter[str] = Counter()

    async def start(self) -> Harness:
        engine = make_engine(self.gemini)
        blobs = BlobStore(self.data_dir / "blobs")
        settings = load_settings(THREADEDIT_DATA_DIR=str(self.data_dir),
                                 THREADEDIT_PUBLIC_URL=self.public_url)
        self.store = await SessionStore.open(settings.database_url)  # this test's database
        make_private_dir(self.data_dir)  # as open_app does, whichever database holds the rows
        service = EditService(self.store, blobs, engine, defaults=SessionDefaults(),
                              spend_limits=self.spend_limits)
        self.app = App(settings, self.store, blobs, engine, service)
        self.adapter = SlackAdapter(
            SlackSettings(SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=self.slack.api_url,
                          SLACK_APPROVERS=self.approvers, SLACK_FILE_ORIGINS=self.slack.files_origin,
                          SLACK_ALLOWED_CHANNELS=self.allowed,
                          SLACK_SETTINGS_CHANGERS=self.settings_changers,
                          **({"SLACK_APP_TOKEN": self.slack.app_token} if self.socket_mode
                             else {"SLACK_SIGNING_SECRET": SECRET})),
            self.app, progress_interval=0.05)
        self.adapter.backend._sleep = _no_sleep
        self.adapter.core.delivery_observers.append(lambda delivery: self.handled.update((delivery,)))
        if self.socket_mode:
            self.started_as = await self.adapter.start()
            await self.slack.wait_socket()
            return self
        await self.adapter.core.start()
        self.server = TestServer(self.adapter.web_app(), host="127.0.0.1")
        await self.server.start_server()
        self.http = httpx.AsyncClient(base_url=str(self.server.make_url("/")))
        return self

    async def stop(self) -> None:
        await self.adapter.core.pipeline.join()
        if self.server is not None:
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
                    **kw: Any) -> Any:
        self.event_no += 1
        envelope = {"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                    "event": event, "event_id": event_id or f"Ev{self.event_no:08d}",
                    "event_time": int(time.time())}
        # Bolt drops the bot's own events before any listener, before answering: nothing follows.
        expect = None if self._from_the_bot(event) else envelope["event_id"]
        if self.socket_mode:
            return self._accepted(await self.over_socket(envelope, "events_api"), expect)
        return self._accepted(await self.post(json.dumps(envelope), "application/json", **kw),
                              expect)

    def _from_the_bot(self, event: dict[str, Any]) -> bool:
        user = event.get("user") or (event.get("message") or {}).get("user")
        return event.get("type") not in ("member_joined_channel", "member_left_channel") and (
            user == self.slack.bot_user_id or event.get("bot_id") == self.slack.bot_id)

    def _accepted(self, answer: Any, delivery: str | None) -> Any:
        """Count a delivery the app acknowledged (a socket ack, or HTTP 200): it will be handled."""
        if delivery is not None and (self.socket_mode or answer.status_code == 200):
            self.accepted[delivery] += 1
        return answer

    async def over_socket(self, payload: dict[str, Any], envelope_type: str) -> Any:
        """Send an envelope over Socket Mode and return the app's ack (it must come)."""
        envelope_id = await self.slack.socket_send(payload, envelope_type)
        return await eventually(lambda: self.slack.socket_acks.get(envelope_id))

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
        # A person reacts to a version they saw. The bot records a post right after Slack answers
        # it, so a reaction sent the instant the message appears could beat that record; wait for
        # it, as a person's reaction always does (a test must not depend on that millisecond).
        if any(m["ts"] == message_ts for m in self.versions()):
            deadline = time.monotonic() + 15
            while await self.store.find_post("slack", CHANNEL, message_ts) is None:
                assert time.monotonic() < deadline, f"the bot never recorded its post {message_ts}"
                await asyncio.sleep(0.02)
        return await self.event({"type": "reaction_added" if added else "reaction_removed",
                                 "user": user, "reaction": name, "item_user": "UBOT",
                                 "item": {"type": "message", "channel": CHANNEL, "ts": message_ts},
                                 "event_ts": str(time.time())})

    async def click(self, message: dict, label: str, user: str = "UANA") -> Any:
        payload = block_actions(message, label, user)
        delivery = f"action:{payload['actions'][0]['action_ts']}"
        if self.socket_mode:
            return self._accepted(await self.over_socket(payload, "interactive"), delivery)
        return self._accepted(await self.post("payload=" + quote(json.dumps(payload)),
                                              "application/x-www-form-urlencoded"), delivery)

    def thread(self) -> list[dict]:
        return self.slack.messages_in_thread(CHANNEL, ROOT_TS)

    def versions(self) -> list[dict]:
        return [m for m in self.thread()
                if any(b.get("type") == "image" for b in m.get("blocks") or [])]

    async def handled_all(self) -> None:
        """Wait until every delivery the app accepted has been handled (whatever it decided)."""
        await eventually(lambda: all(self.handled[d] >= n for d, n in self.accepted.items()))

    async def settle(self) -> None:
        """Wait until everything sent so far has run to its end: every delivery the app accepted
        has been handled, and no turn is queued or running."""
        await self.handled_all()
        await self.adapter.core.pipeline.join()


def block_actions(message: dict, label: str, user: str = "UANA") -> dict[str, Any]:
    """The interaction payload Slack sends when `user` clicks the button `label` on `message`."""
    button = next(e for b in message["blocks"] if b["type"] == "actions"
                  for e in b["elements"] if e["text"]["text"] == label)
    return {"type": "block_actions", "user": {"id": user, "team_id": "T1"},
            "team": {"id": "T1"}, "api_app_id": "A1", "token": "x", "trigger_id": "1.2",
            "channel": {"id": CHANNEL},
            "container": {"type": "message", "message_ts": message["ts"],
                          "channel_id": CHANNEL, "is_ephemeral": False,
                          # as Slack sends it for a message in a thread (real/slack/s06)
                          **({"thread_ts": message["thread_ts"]} if message.get("thread_ts")
                             else {})},
            "message": message, "response_url": "http://127.0.0.1:9/r",
            "actions": [{"action_id": button["action_id"], "value": button.get("value", ""),
                         "block_id": "b", "type": "button",
                         "action_ts": f"{time.time():.6f}"}]}


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


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buf, "PNG")
    return buf.getvalue()


def texts(h: Harness) -> list[str]:
    return [m.get("text") or "" for m in h.thread()]


