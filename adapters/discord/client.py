"""The discord.py client: intents, the gateway address, persistent buttons and `/edit`."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import discord
import yarl
from discord import app_commands

from adapters.discord.backend import ALLOWED_MENTIONS, ControlButton
from adapters.discord.listeners import DiscordListeners
from adapters.discord.settings import DISCORD_API
from bot.deliveries import Deliveries

log = logging.getLogger(__name__)

COMMANDS_DIGEST = "discord.commands.digest"

# The bot never joins voice; without these, every start warns that voice libraries are missing.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


def intents_for(message_content: bool) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True  # channels, threads and roles in the cache
    intents.guild_messages = True
    intents.guild_reactions = True
    intents.message_content = message_content  # privileged: replies without a mention
    intents.dm_messages = True  # to answer a DM with where the bot works (DMs come on shard 0)
    return intents


class ThreadeditClient(discord.Client):
    def __init__(self, *, api_base: str, message_content: bool, deliveries: Deliveries,
                 registers_commands: bool = True, **shards: Any) -> None:
        super().__init__(intents=intents_for(message_content), allowed_mentions=ALLOWED_MENTIONS,
                         max_messages=None, **shards)  # nothing depends on the message cache
        self.api_base = api_base
        self.deliveries = deliveries
        # One process of a sharded bot registers the slash commands: the one running shard 0.
        self.registers_commands = registers_commands
        self.tree = app_commands.CommandTree(self)
        self.listeners: DiscordListeners | None = None
        self.commands_synced: bool | None = None  # None until setup ran

        @self.tree.command(name="edit", description="Start an image edit session in a new thread")
        @app_commands.describe(prompt="What to make or change",
                               image="An image to edit or use as a reference")
        @app_commands.guild_only()
        async def edit(interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 4000],
                       image: discord.Attachment | None = None) -> None:
            assert self.listeners is not None
            await self.listeners.on_edit_command(interaction, prompt, image)

    async def setup_hook(self) -> None:
        if self.api_base != DISCORD_API:
            # discord.py connects to Discord's gateway unless told otherwise; with another API
            # base (a proxy, a test server) the gateway must come from that base too.
            _shards, url, _limits = await self.http.get_bot_gateway()
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.add_dynamic_items(ControlButton)
        self.commands_synced = await self.sync_commands_if_changed() if self.registers_commands else False

    async def sync_commands_if_changed(self) -> bool:
        """Discord limits command registrations per day: register only when ours changed."""
        payload = [c.to_dict(self.tree) for c in self.tree.get_commands()]
        digest = hashlib.sha256(json.dumps([self.application_id, payload], sort_keys=True,
                                           default=str).encode()).hexdigest()
        if await self.deliveries.recall(COMMANDS_DIGEST) == digest:
            return False
        await self.tree.sync()
        await self.deliveries.remember(COMMANDS_DIGEST, digest)
        log.info("registered the slash commands with Discord")
        return True

    async def on_message(self, message: discord.Message) -> None:
        if self.listeners is not None:
            await self.listeners.on_message(message)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.listeners is not None:
            await self.listeners.on_reaction(payload, True)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        if self.listeners is not None:
            await self.listeners.on_reaction(payload, False)

    async def on_control_button(self, interaction: discord.Interaction, value: str) -> None:
        if self.listeners is not None:
            await self.listeners.on_control_button(interaction, value)


class ShardedThreadeditClient(ThreadeditClient, discord.AutoShardedClient):
    """The same bot on some shards of the whole (`shard_count=`, `shard_ids=`): discord.py opens one
    gateway connection per shard and Discord sends each a share of the servers' events."""
