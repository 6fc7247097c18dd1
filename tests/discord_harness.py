"""A running threadedit Discord adapter for tests: the real discord.py client logged in to the
fake Discord (REST and gateway on 127.0.0.1), the real core, the fake Gemini API."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from adapters.discord.app import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from bot.app import App
from bot.config import load_settings
from bot.service import EditService, SessionDefaults
from bot.storage.blobs import BlobStore
from bot.storage.db import make_private_dir
from bot.storage.repository import SessionStore
from tests.conftest import make_engine
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import FakeGemini
from tests.slack_harness import eventually

GUILD, CHANNEL, NO_THREADS = "1000", "2000", "2001"
ALICE, BOB = "501", "502"
EPHEMERAL = 64  # alice has the Art Director role, bob has none


class DiscordHarness:
    def __init__(self, fake: FakeDiscord, gemini: FakeGemini, data_dir: Path, *,
                 approver_role: str = "Art Director", allowed: str = "",
                 message_content: bool = True, settings_role: str = "") -> None:
        self.fake, self.gemini, self.data_dir = fake, gemini, data_dir
        self.approver_role, self.allowed, self.message_content = approver_role, allowed, message_content
        self.settings_role = settings_role
        self.public_url = ""
        self.handled: Counter[str] = Counter()  # deliveries the adapter handled to their end

    async def start(self) -> DiscordHarness:
        engine = make_engine(self.gemini)
        blobs = BlobStore(self.data_dir / "blobs")
        settings = load_settings(THREADEDIT_DATA_DIR=str(self.data_dir),
                                 THREADEDIT_PUBLIC_URL=self.public_url)
        self.store = await SessionStore.open(settings.database_url)  # this test's database
        make_private_dir(self.data_dir)  # as open_app does, whichever database holds the rows
        service = EditService(self.store, blobs, engine, defaults=SessionDefaults())
        self.app = App(settings, self.store, blobs, engine, service)
        self.adapter = DiscordAdapter(
            DiscordSettings(DISCORD_TOKEN=self.fake.token, DISCORD_API_BASE=self.fake.api_base,
                            DISCORD_APPROVER_ROLE=self.approver_role,
                            DISCORD_ALLOWED_CHANNELS=self.allowed,
                            DISCORD_SETTINGS_ROLE=self.settings_role,
                            DISCORD_MESSAGE_CONTENT=self.message_content),
            self.app, progress_interval=0.05)
        self.adapter.core.delivery_observers.append(lambda delivery: self.handled.update((delivery,)))
        self.started_as = await self.adapter.start()
        return self

    async def stop(self) -> None:
        await self.adapter.core.pipeline.join()
        await self.adapter.aclose()
        await self.app.engine.aclose()
        await self.store.close()

    async def settle(self, *events: dict) -> None:
        """Wait until the given gateway events (what the fake's user_message, add_reaction,
        remove_reaction, click_button and slash_command returned; one dispatched twice, given
        twice) were handled to their end by the adapter, and no turn is queued or running.
        Discord acknowledges nothing the test could see, so the events must be named."""
        if not events:
            raise TypeError("settle() needs the events to wait for")
        wanted = Counter(delivery_of(e) for e in events)
        await eventually(lambda: all(self.handled[d] >= n for d, n in wanted.items()))
        await self.adapter.core.pipeline.join()

    async def mention(self, text: str, *, author: str = ALICE, channel: str = CHANNEL,
                      **kw: Any) -> dict:
        return await self.fake.user_message(channel, author, text, mention_bot=True, **kw)

    def posts(self, thread: str) -> list[dict]:
        """What the bot posted in a thread for everyone to see, oldest first."""
        return [m for m in self.fake.messages.get(thread, [])
                if m["author"]["id"] == self.fake.bot_id and not m.get("flags", 0) & EPHEMERAL]

    def texts(self, thread: str) -> list[str]:
        return [m.get("content") or "" for m in self.posts(thread)]

    def versions(self, thread: str) -> list[dict]:
        return [m for m in self.posts(thread) if m.get("attachments") and m.get("components")]

    async def wait_versions(self, thread: str, n: int) -> list[dict]:
        """The thread's versions once there are `n`, each also recorded by the bot: a person who
        reacts to a version saw it, after the bot recorded its post (the Slack harness's react)."""
        versions = await eventually(lambda: len(self.versions(thread)) >= n and self.versions(thread))
        for message in versions:
            deadline = asyncio.get_running_loop().time() + 15
            while await self.store.find_post("discord", thread, message["id"]) is None:
                assert asyncio.get_running_loop().time() < deadline, f"post {message['id']} never recorded"
                await asyncio.sleep(0.02)
        return versions

    async def wait_text(self, thread: str, needle: str) -> str:
        return await eventually(lambda: next((t for t in self.texts(thread) if needle in t), None))


def delivery_of(event: dict) -> str:
    """The id the Discord listeners report a gateway event by, once handled."""
    if "token" in event and "application_id" in event:  # an interaction
        return f"interaction:{event['id']}"
    if "emoji" in event:  # a reaction added or removed (unicode emoji: its name is the text)
        emoji = event["emoji"]
        text = emoji["name"] if emoji.get("id") is None else f"<:{emoji['name']}:{emoji['id']}>"
        return f"reaction:{event['message_id']}:{event['user_id']}:{text}"
    return f"message:{event['id']}"


def custom_id(message: dict, label: str) -> str:
    return next(c["custom_id"] for row in message["components"] for c in row["components"]
                if c.get("label") == label)
