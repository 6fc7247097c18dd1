"""A running threadedit Discord adapter for tests: the real discord.py client logged in to the
fake Discord (REST and gateway on 127.0.0.1), the real core, the fake Gemini API."""

from __future__ import annotations

import asyncio
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

    async def start(self) -> DiscordHarness:
        engine = make_engine(self.gemini)
        blobs = BlobStore(self.data_dir / "blobs")
        settings = load_settings(THREADEDIT_DATA_DIR=str(self.data_dir),
                                 THREADEDIT_PUBLIC_URL=self.public_url)
        self.store = await SessionStore.open(settings.database_url)  # this test's database
        make_private_dir(self.data_dir)  # as open_app does, whichever database holds the rows
        service = EditService(self.store, blobs, engine, defaults=SessionDefaults())
        self.app = App(settings, self.store, blobs, engine, service, asyncio.Semaphore(4))
        self.adapter = DiscordAdapter(
            DiscordSettings(DISCORD_TOKEN=self.fake.token, DISCORD_API_BASE=self.fake.api_base,
                            DISCORD_APPROVER_ROLE=self.approver_role,
                            DISCORD_ALLOWED_CHANNELS=self.allowed,
                            DISCORD_SETTINGS_ROLE=self.settings_role,
                            DISCORD_MESSAGE_CONTENT=self.message_content),
            self.app, progress_interval=0.05)
        self.started_as = await self.adapter.start()
        return self

    async def stop(self) -> None:
        await self.adapter.core.pipeline.join()
        await self.adapter.aclose()
        await self.app.engine.aclose()
        await self.store.close()

    async def settle(self) -> None:
        await asyncio.sleep(0.1)
        await self.adapter.core.pipeline.join()
        await asyncio.sleep(0.1)

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
        return await eventually(lambda: len(self.versions(thread)) >= n and self.versions(thread))

    async def wait_text(self, thread: str, needle: str) -> str:
        return await eventually(lambda: next((t for t in self.texts(thread) if needle in t), None))


def custom_id(message: dict, label: str) -> str:
    return next(c["custom_id"] for row in message["components"] for c in row["components"]
                if c.get("label") == label)
