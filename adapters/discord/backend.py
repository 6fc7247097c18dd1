"""DiscordBackend: how ChatCore's posts look in a Discord thread.

Everything goes through partial objects built from ids, so posting works with a cold cache
(after a restart, or for threads the client never saw).
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import re
from collections.abc import Mapping

import discord

from bot.chat.backend import Buttons, IncomingMessage, VersionPost
from bot.chat.controls import Control
from bot.chat.text import Code, Link, Mention, Plain, Strong, Text
from bot.domain import SessionKey
from bot.images import reencode_to_fit

log = logging.getLogger(__name__)

MAX_CONTENT = 2000  # Discord's limit on a message's text
# The upload limit is for the whole request; leave room for the multipart envelope and JSON.
UPLOAD_HEADROOM = 64 * 1024
THREAD_ARCHIVE_MINUTES = 1440
# Where there is no interaction to answer privately, a refusal is posted in the thread and
# removed after this long.
PUBLIC_REFUSAL_SECONDS = 60.0
# Never let text from users (instructions echoed in captions) ping @everyone, roles or anyone: a
# post notifies only the people its text mentions (see `allowed_mentions`).
ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=False,
                                           replied_user=False)
# Discord sends a reaction's character (with or without the emoji variation selector).
REACTIONS: Mapping[str, Control] = {
    "\u21a9\ufe0f": Control.UNDO,
    "\u21a9": Control.UNDO,
    "\U0001f501": Control.RETRY,
    "\u2705": Control.APPROVE,
}

# The interaction being handled in this task, if any: a refusal then answers it privately.
current_interaction: contextvars.ContextVar[discord.Interaction | None] = contextvars.ContextVar(
    "current_interaction", default=None)

_SNOWFLAKE = re.compile(r"[0-9]{1,20}")


def escape(text: str) -> str:
    """Plain words for Discord markdown: formatting characters, quotes, headings, list marks and
    masked links escaped with a backslash (discord.py's own escaping); @everyone, @here and long
    ids broken with a zero-width space (discord.py's escape_mentions); and every < escaped, so a
    typed <@123>, <@&123> or <#123> shows as typed instead of as a mention."""
    text = discord.utils.escape_mentions(discord.utils.escape_markdown(text))
    return text.replace("<", "\\<")


def _is_user_id(user: str) -> bool:
    return _SNOWFLAKE.fullmatch(user) is not None


def discord_markdown(text: Text) -> str:
    """The neutral text as Discord markdown."""
    out: list[str] = []
    for span in text.spans:
        match span:
            case Plain(words):
                out.append(escape(words))
            case Strong(words):
                out.append(f"**{escape(words)}**")
            case Code(words):
                out.append(f"`{words}`" if "`" not in words and words.strip() else escape(words))
            case Mention(user):
                out.append(f"<@{user}>" if _is_user_id(user) else escape(user))
            case Link(url, label):
                target = url.replace("(", "%28").replace(")", "%29").replace(" ", "%20")
                out.append(f"[{escape(label)}]({target})")
    return "".join(out)


def allowed_mentions(text: Text) -> discord.AllowedMentions:
    """Only the people the text itself mentions may be notified; never everyone, roles, or a
    user whose mention was typed in an instruction."""
    users = [discord.Object(int(u)) for u in dict.fromkeys(text.mentions()) if _is_user_id(u)]
    return discord.AllowedMentions(everyone=False, roles=False, users=users, replied_user=False)


def clip(text: str, limit: int = MAX_CONTENT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def thread_name(instruction: str) -> str:
    words = " ".join(instruction.split()) or "image edit"
    return clip(words, 90)


class ControlButton(discord.ui.DynamicItem[discord.ui.Button],
                    template=r"te:(?P<control>[a-z0-9]+):(?P<session>[0-9]+):(?P<version>[0-9]+)"):
    """A version's button (or a failed turn's Retry). Its custom_id carries control, session and
    version (or turn), so a click is understood by any running client, after a restart and with
    an empty cache."""

    def __init__(self, value: str, label: str) -> None:
        style = discord.ButtonStyle.success if label == "Approve" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(label=label, custom_id=value, style=style))
        self.value = value

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str], /) -> ControlButton:
        return cls(item.custom_id or match.string, item.label or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        handler = getattr(interaction.client, "on_control_button", None)
        if handler is not None:
            await handler(interaction, self.value)


def version_view(post: VersionPost) -> discord.ui.View:
    return buttons_view(post.buttons, post.gallery_url)


def buttons_view(buttons: Buttons, gallery_url: str | None = None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for label, value in buttons:
        view.add_item(ControlButton(value, label))
    if gallery_url:
        view.add_item(discord.ui.Button(label="Gallery", url=gallery_url))
    return view


class DiscordBackend:
    platform = "discord"
    reactions = REACTIONS

    def __init__(self, client: discord.Client) -> None:
        self.client = client

    def post_channel(self, key: SessionKey) -> str:
        return key.thread  # a thread is a channel of its own; reactions report its id

    def _thread(self, key: SessionKey) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(key.thread), guild_id=int(key.workspace))

    async def open_thread(self, msg: IncomingMessage) -> bool:
        channel = self.client.get_partial_messageable(int(msg.key.channel),
                                                      guild_id=int(msg.key.workspace))
        starter = channel.get_partial_message(int(msg.key.thread))
        try:
            await starter.create_thread(name=thread_name(msg.text),
                                        auto_archive_duration=THREAD_ARCHIVE_MINUTES)
        except discord.Forbidden:
            await self._say_in_channel(starter, (
                "I can't open a thread in this channel (I need the Create Public Threads and Send "
                "Messages in Threads permissions). Mention me inside an existing thread instead, or "
                "ask an admin to allow threads for me here."))
            return False
        except discord.HTTPException as exc:
            if exc.code == 160004:  # a thread already exists on this message: use it
                return True
            said = escape(clip(exc.text or str(exc.status), 200))
            await self._say_in_channel(starter, "I couldn't open a thread for this session "
                                                f"(Discord said: {said}).")
            return False
        return True

    async def _say_in_channel(self, starter: discord.PartialMessage, text: str) -> None:
        try:
            await starter.reply(text, allowed_mentions=ALLOWED_MENTIONS, mention_author=False)
        except discord.HTTPException:
            log.warning("could not explain a thread failure in channel %s", starter.channel.id)

    async def post_text(self, key: SessionKey, text: Text, *, buttons: Buttons = ()) -> str:
        # A line with buttons (a turn that made no version, and its Retry) carries them as a
        # version post does; without, no components at all.
        extra = {"view": buttons_view(buttons)} if buttons else {}
        message = await self._thread(key).send(clip(discord_markdown(text)),
                                               allowed_mentions=allowed_mentions(text), **extra)
        return str(message.id)

    async def update_text(self, key: SessionKey, message_id: str, text: Text, *,
                          buttons: Buttons = ()) -> None:
        # An edit without `view` leaves the message's components as they are.
        extra = {"view": buttons_view(buttons)} if buttons else {}
        await self._thread(key).get_partial_message(int(message_id)).edit(
            content=clip(discord_markdown(text)), allowed_mentions=allowed_mentions(text), **extra)

    async def show_working(self, key: SessionKey) -> None:
        await self._thread(key).typing()  # awaited once: shows "typing" for up to 10 s

    def upload_limit(self, key: SessionKey) -> int:
        guild = self.client.get_guild(int(key.workspace))
        limit = guild.filesize_limit if guild else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        return limit - UPLOAD_HEADROOM

    async def post_version(self, key: SessionKey, post: VersionPost) -> str:
        data = await asyncio.to_thread(post.image_path.read_bytes)
        ext = post.image_path.suffix or ".jpg"
        caption = discord_markdown(post.caption)
        limit = self.upload_limit(key)
        if len(data) > limit:
            # The original stays in the store and in export; only the posted copy is smaller.
            fitted = await asyncio.to_thread(reencode_to_fit, data, limit)
            data, ext = fitted.data, ".jpg"
            caption += (f"\n-# Posted as a smaller copy: {escape(fitted.note or 're-encoded.')} "
                        "The original is in the export.")
        file = discord.File(io.BytesIO(data), filename=f"v{post.version}{ext}",
                            description=clip(post.alt_text, 1024))
        message = await self._thread(key).send(clip(caption), file=file, view=version_view(post),
                                               allowed_mentions=allowed_mentions(post.caption))
        return str(message.id)

    async def post_ephemeral(self, key: SessionKey, user: str, text: Text) -> None:
        interaction = current_interaction.get()
        if interaction is not None and str(interaction.user.id) == user:
            await interaction.followup.send(clip(discord_markdown(text)), ephemeral=True,
                                            allowed_mentions=allowed_mentions(text))
            return
        # Reactions and messages have no private reply on Discord: say it in the thread, briefly.
        said = Text.of(Mention(user), " ", text)
        await self._thread(key).send(clip(discord_markdown(said)), allowed_mentions=allowed_mentions(said),
                                     delete_after=PUBLIC_REFUSAL_SECONDS)
