"""Discord events in, ChatCore calls out. Kept thin: no decisions that Slack would also need."""

from __future__ import annotations

import logging
import re

import discord

from adapters.discord.backend import PUBLIC_REFUSAL_SECONDS as REFUSAL_SECONDS
from adapters.discord.backend import current_interaction, discord_markdown, escape
from bot.chat.backend import AttachmentError, IncomingFile, IncomingMessage, Origin
from bot.chat.core import ChatCore
from bot.domain import SessionKey

log = logging.getLogger(__name__)

MAX_ATTACHMENT_BYTES = 30 * 1024 * 1024  # the core refuses larger files anyway; don't download them
TURN_TYPES = {discord.MessageType.default, discord.MessageType.reply}
DM_ANSWER = "I edit images in servers: mention me in a channel there, or use /edit."


def roles_of(member: object) -> frozenset[str]:
    """A member's roles as ids and names, so DISCORD_APPROVER_ROLE may name either."""
    roles = getattr(member, "roles", None) or []
    return frozenset({str(r.id) for r in roles} | {r.name for r in roles})


def attachment_file(att: discord.Attachment) -> IncomingFile:
    async def fetch() -> bytes:
        if att.size > MAX_ATTACHMENT_BYTES:
            raise AttachmentError(f"{att.filename} is {att.size / 1048576:.0f} MB; the limit is "
                                  f"{MAX_ATTACHMENT_BYTES // 1048576} MB.")
        try:
            return await att.read()
        except discord.HTTPException as exc:
            raise AttachmentError(f"I couldn't download {att.filename} from Discord "
                                  f"(HTTP {exc.status}); please attach it again.") from None

    return IncomingFile(att.filename, att.size, fetch)


def strip_mention(text: str, bot_id: int) -> str:
    return " ".join(re.sub(rf"<@!?{bot_id}>", " ", text).split())


class DiscordListeners:
    def __init__(self, client: discord.Client, core: ChatCore) -> None:
        self.client = client
        self.core = core
        self._parents: dict[int, int | None] = {}  # thread id -> parent channel id (None: not a thread)

    @property
    def bot_id(self) -> int:
        assert self.client.user is not None
        return self.client.user.id

    async def _parent_of(self, channel: object) -> int | None:
        """The parent channel of a thread, or None when `channel` is not a thread. Asks Discord
        when the cache does not know the channel (a thread not seen since the restart)."""
        if isinstance(channel, discord.Thread):
            return channel.parent_id
        if isinstance(channel, discord.TextChannel | discord.VoiceChannel | discord.StageChannel):
            return None
        channel_id = getattr(channel, "id", 0)
        if channel_id not in self._parents:
            try:
                fetched = await self.client.fetch_channel(channel_id)
            except discord.HTTPException:
                return None
            self._parents[channel_id] = fetched.parent_id if isinstance(fetched, discord.Thread) else None
        return self._parents[channel_id]

    async def on_message(self, message: discord.Message) -> None:
        try:
            await self._message(message)
        finally:
            self.core.delivery_finished(f"message:{message.id}")

    async def _message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id or message.type not in TURN_TYPES:
            return
        if message.guild is None:  # a DM (Discord sends those to shard 0 only): say where to go
            try:
                await message.reply(DM_ANSWER, mention_author=False)
            except discord.HTTPException as exc:
                log.warning("could not answer a direct message (HTTP %s)", exc.status)
            return
        mentioned = any(u.id == self.bot_id for u in message.mentions)
        if not mentioned and not self.client.intents.message_content:
            return  # without the privileged intent the text and files of this message are blank
        parent = await self._parent_of(message.channel)
        if parent is None and not mentioned:
            return  # channel chatter: only a mention starts a session there
        if parent is None:  # a mention in a channel: the session gets a thread on this message
            key = SessionKey("discord", str(message.guild.id), str(message.channel.id), str(message.id))
            # There is no thread yet to explain a refusal in, so answer the message itself.
            if refusal := await self.core.channel_refusal(key, str(message.author.id)):
                await message.reply(discord_markdown(refusal), mention_author=False,
                                    delete_after=REFUSAL_SECONDS)
                return
        else:
            key = SessionKey("discord", str(message.guild.id), str(parent), str(message.channel.id))
        await self.core.on_message(IncomingMessage(
            key=key, message_id=str(message.id), author=str(message.author.id),
            text=strip_mention(message.content, self.bot_id),
            files=[attachment_file(a) for a in message.attachments],
            mentioned=mentioned, roles=roles_of(message.author), needs_thread=parent is None))

    async def on_reaction(self, payload: discord.RawReactionActionEvent, added: bool) -> None:
        try:
            await self._reaction(payload, added)
        finally:
            # Discord gives a reaction no id of its own: the message, the person and the emoji.
            self.core.delivery_finished(
                f"reaction:{payload.message_id}:{payload.user_id}:{payload.emoji}")

    async def _reaction(self, payload: discord.RawReactionActionEvent, added: bool) -> None:
        if payload.user_id == self.bot_id or payload.guild_id is None:
            return
        member = payload.member
        if member is None and self.core.service.policy.approver_roles:
            # Removal events carry no member; ask for one only when roles decide anything.
            guild = self.client.get_guild(payload.guild_id)
            try:
                member = await guild.fetch_member(payload.user_id) if guild else None
            except discord.HTTPException:
                member = None
        await self.core.on_reaction(str(payload.channel_id), str(payload.message_id),
                                    str(payload.emoji), str(payload.user_id), added,
                                    roles=roles_of(member))

    async def on_control_button(self, interaction: discord.Interaction, value: str) -> None:
        try:
            await self._control_button(interaction, value)
        finally:
            self.core.delivery_finished(f"interaction:{interaction.id}")

    async def _control_button(self, interaction: discord.Interaction, value: str) -> None:
        # Within Discord's 3 s: acknowledge without a visible answer; the thread shows the result.
        await interaction.response.defer()
        token = current_interaction.set(interaction)
        # A button is on a message in a thread, and a thread is a channel of its own: the
        # interaction's channel is the thread the session lives in (None guild: a DM).
        where = str(interaction.channel_id or "")
        origin = Origin(workspace=str(interaction.guild_id or ""), channel=where, thread=where)
        try:
            await self.core.on_button(value, str(interaction.user.id), origin,
                                      roles_of(interaction.user),
                                      event_key=f"interaction:{interaction.id}")
        finally:
            current_interaction.reset(token)

    async def on_edit_command(self, interaction: discord.Interaction, prompt: str,
                              image: discord.Attachment | None) -> None:
        """`/edit prompt:<text> [image:<file>]`: a session in a new thread (or this thread)."""
        try:
            await self._edit_command(interaction, prompt, image)
        finally:
            self.core.delivery_finished(f"interaction:{interaction.id}")

    async def _edit_command(self, interaction: discord.Interaction, prompt: str,
                            image: discord.Attachment | None) -> None:
        channel, guild = interaction.channel, interaction.guild
        if guild is None or channel is None:
            await interaction.response.send_message("Use /edit in a server's text channel.",
                                                    ephemeral=True)
            return
        parent = await self._parent_of(channel)
        key_channel = str(parent if parent is not None else channel.id)
        refusal = await self.core.channel_refusal(
            SessionKey("discord", str(guild.id), key_channel, ""), str(interaction.user.id))
        if refusal:
            await interaction.response.send_message(discord_markdown(refusal), ephemeral=True)
            return
        if parent is None and not interaction.app_permissions.create_public_threads:
            await interaction.response.send_message(
                "I can't open threads in this channel (I need the Create Public Threads "
                "permission); run /edit inside an existing thread instead.", ephemeral=True)
            return
        await interaction.response.send_message(
            f"{interaction.user.mention} started an edit session: {escape(prompt[:1800])}",
            allowed_mentions=discord.AllowedMentions.none())
        starter = await interaction.original_response()
        thread = str(starter.id) if parent is None else str(channel.id)
        await self.core.on_message(IncomingMessage(
            key=SessionKey("discord", str(guild.id), key_channel, thread),
            message_id=f"interaction:{interaction.id}", author=str(interaction.user.id),
            text=prompt, files=[attachment_file(image)] if image else [], mentioned=True,
            roles=roles_of(interaction.user), needs_thread=parent is None))
