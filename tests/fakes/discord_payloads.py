"""Payload builders for the fake Discord (tests/fakes/discord_server.py).

Each function returns a dict shaped as Discord's API v10 sends it over REST or the gateway
(snowflakes as strings, ISO-8601 timestamps, permissions as decimal strings), so discord.py 2.7's
parsers (state.py, guild.py, message.py, threads.py, interactions.py) accept it unchanged.
"""

from __future__ import annotations

import io
import itertools
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from PIL import Image

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000
MESSAGE_CONTENT = 1 << 15  # the privileged intent that un-blanks other people's messages
# Message flags: what a bot may set when sending (SUPPRESS_EMBEDS, EPHEMERAL - interactions only -,
# SUPPRESS_NOTIFICATIONS, IS_COMPONENTS_V2), change by editing, and what Discord sets itself.
EPHEMERAL, LOADING, HAS_THREAD = 1 << 6, 1 << 7, 1 << 5
SENDABLE_FLAGS, EDITABLE_FLAGS = 1 << 2 | EPHEMERAL | 1 << 12 | 1 << 15, 1 << 2 | 1 << 15

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
CREATE_PUBLIC_THREADS, CREATE_PRIVATE_THREADS = 1 << 35, 1 << 36
EVERYONE_PERMISSIONS = sum(1 << bit for bit in (
    0,   # create instant invite
    6,   # add reactions
    10,  # view channel
    11,  # send messages
    14,  # embed links
    15,  # attach files
    16,  # read message history
    18,  # use external emojis
    26,  # change nickname
    31,  # use application commands
    35,  # create public threads
    36,  # create private threads
    38,  # send messages in threads
))
ALL_PERMISSIONS = (1 << 51) - 1

_MENTION = re.compile(r"<@!?(\d+)>")
_counter = itertools.count()


def snowflake() -> str:
    """A fresh, increasing snowflake whose timestamp is now (discord.py derives created_at from it)."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_counter) % (1 << 22)))


def iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).isoformat()


def error(code: int, message: str, errors: Json | None = None) -> Json:
    body: Json = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return body


def field_error(field: str, code: str, message: str) -> Json:
    """Discord's 50035 "Invalid Form Body" with one field error (discord.py flattens `errors`)."""
    return error(50035, "Invalid Form Body", {field: {"_errors": [{"code": code, "message": message}]}})


def user(user_id: str, username: str, *, bot: bool = False) -> Json:
    data: Json = {"id": user_id, "username": username, "discriminator": "0", "global_name": None if bot
                  else username.title(), "avatar": None, "public_flags": 0, "flags": 0, "banner": None,
                  "accent_color": None, "avatar_decoration_data": None, "primary_guild": None}
    if bot:
        data["bot"] = True
    return data


def role(role_id: str, name: str, *, permissions: int = 0, position: int = 0) -> Json:
    return {"id": role_id, "name": name, "permissions": str(permissions), "position": position,
            "color": 0, "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False, "managed": False, "mentionable": False, "icon": None, "unicode_emoji": None,
            "flags": 0, "description": None}


def member(roles: Iterable[str], *, user_obj: Json | None = None, joined_at: str | None = None) -> Json:
    """A guild member; with `user_obj` it is the full form (GUILD_CREATE, reactions, interactions),
    without it the partial form that rides along a MESSAGE_CREATE."""
    data: Json = {"roles": list(roles), "joined_at": joined_at or iso(1_600_000_000), "nick": None,
                  "avatar": None, "banner": None, "premium_since": None, "deaf": False, "mute": False,
                  "pending": False, "flags": 0, "communication_disabled_until": None}
    if user_obj is not None:
        data["user"] = user_obj
    return data


def overwrite(target_id: str, *, allow: int = 0, deny: int = 0, member_target: bool = False) -> Json:
    return {"id": target_id, "type": 1 if member_target else 0, "allow": str(allow), "deny": str(deny)}


def text_channel(channel_id: str, guild_id: str, name: str, *, position: int = 0,
                 overwrites: list[Json] | None = None) -> Json:
    return {"id": channel_id, "type": 0, "guild_id": guild_id, "name": name, "position": position,
            "parent_id": None, "topic": None, "nsfw": False, "rate_limit_per_user": 0,
            "last_message_id": None, "permission_overwrites": overwrites or [], "flags": 0,
            "default_auto_archive_duration": 1440, "default_thread_rate_limit_per_user": 0}


def thread(thread_id: str, parent: Json, owner_id: str, name: str, *, kind: int = 11,
           auto_archive_duration: int = 1440) -> Json:
    now = iso()
    return {"id": thread_id, "type": kind, "guild_id": parent["guild_id"], "parent_id": parent["id"],
            "owner_id": owner_id, "name": name, "last_message_id": None, "rate_limit_per_user": 0,
            "flags": 0, "message_count": 0, "member_count": 1, "total_message_sent": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": auto_archive_duration,
                                "archive_timestamp": now, "locked": False, "create_timestamp": now,
                                **({"invitable": True} if kind == 12 else {})}}


def thread_member(thread_id: str, user_id: str) -> Json:
    return {"id": thread_id, "user_id": user_id, "join_timestamp": iso(), "flags": 1}


def attachment(attachment_id: str, filename: str, data: bytes, content_type: str | None, url: str,
               *, ephemeral: bool = False) -> Json:
    att: Json = {"id": attachment_id, "filename": filename, "size": len(data), "url": url,
                 "proxy_url": url, "content_type": content_type}
    if content_type and content_type.startswith("image/"):
        try:  # Discord reports image dimensions; undecodable "images" simply get none
            with Image.open(io.BytesIO(data)) as img:
                att["width"], att["height"] = img.size
        except Exception:  # noqa: BLE001 - any decode failure means "no dimensions"
            pass
    if ephemeral:
        att["ephemeral"] = True
    return att


def mentioned_ids(content: str) -> list[str]:
    return list(dict.fromkeys(_MENTION.findall(content or "")))


def message(message_id: str, channel_id: str, author: Json, content: str, **fields: Any) -> Json:
    """A message as REST returns it (gateway events add guild_id and member on top)."""
    data: Json = {"id": message_id, "type": 0, "channel_id": channel_id, "author": author,
                  "content": content, "timestamp": iso(), "edited_timestamp": None, "tts": False,
                  "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [],
                  "embeds": [], "components": [], "pinned": False, "flags": 0}
    data.update(fields)
    return data


def number_components(components: list[Json]) -> list[Json]:
    """Discord gives every component without one a numeric `id`, depth first, starting at 1."""
    taken = {c["id"] for c in walk(components) if isinstance(c.get("id"), int)}
    free = (n for n in itertools.count(1) if n not in taken)
    for comp in walk(components):
        if not isinstance(comp.get("id"), int):
            comp["id"] = next(free)
    return components


def walk(components: list[Json]) -> Iterable[Json]:
    """Every component, depth first (action rows, their children, section accessories)."""
    for comp in components:
        yield comp
        yield from walk(comp.get("components", []))
        if isinstance(comp.get("accessory"), dict):
            yield comp["accessory"]


def custom_ids(components: list[Json]) -> list[str]:
    return [c["custom_id"] for c in walk(components) if "custom_id" in c]


def emoji(text: str) -> Json:
    """'👍' -> {"id": None, "name": "👍"}; custom '<:name:id>' or 'name:id' -> {"id", "name", "animated"}."""
    m = re.fullmatch(r"<?(a?):?(\w+):(\d+)>?", text)
    return {"id": m[3], "name": m[2], "animated": bool(m[1])} if m else {"id": None, "name": text}


def option_type(value: Any) -> int:
    """The application command option type Discord would use for a Python value."""
    for kind, number in ((bool, 5), (int, 4), (float, 10)):  # bool first: it is an int too
        if isinstance(value, kind):
            return number
    return 3


def permissions(guild_id: str, roles: Mapping[str, Json], member_roles: Iterable[str], user_id: str,
                overwrites: Iterable[Json] = ()) -> int:
    """Discord's algorithm: @everyone + roles, then channel overwrites (@everyone, roles, member)."""
    member_roles = set(member_roles)
    base = int(roles[guild_id]["permissions"]) if guild_id in roles else 0
    for rid in member_roles & roles.keys():
        base |= int(roles[rid]["permissions"])
    if base & ADMINISTRATOR:
        return ALL_PERMISSIONS
    by_id = {o["id"]: o for o in overwrites}
    for group in ([by_id.get(guild_id)], [by_id.get(r) for r in member_roles], [by_id.get(user_id)]):
        allow = deny = 0
        for o in filter(None, group):
            allow, deny = allow | int(o["allow"]), deny | int(o["deny"])
        base = (base & ~deny) | allow
    return base


def guild_create(guild: Json, channels: list[Json], threads: list[Json], members: list[Json]) -> Json:
    roles = list(guild["roles"].values())
    return {"id": guild["id"], "name": guild["name"], "icon": None, "splash": None,
            "discovery_splash": None, "banner": None, "description": None, "owner_id": guild["owner_id"],
            "region": None, "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0,
            "nsfw_level": 0, "features": [], "roles": roles, "emojis": [], "stickers": [],
            "application_id": None, "system_channel_id": None, "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "vanity_url_code": None, "premium_tier": guild["premium_tier"],
            "premium_subscription_count": 0, "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US", "max_members": 500000, "max_video_channel_users": 25,
            "joined_at": iso(1_600_000_000), "large": False, "unavailable": False,
            "member_count": guild["member_count"], "lazy": True, "voice_states": [], "members": members,
            "channels": channels, "threads": threads, "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [], "embedded_activities": [],
            "incidents_data": None}


def ready(bot_user: Json, guild_ids: Iterable[str], session_id: str, resume_url: str,
          application: Json) -> Json:
    return {"v": 10, "user": {**bot_user, "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": gid, "unavailable": True} for gid in guild_ids],
            "session_id": session_id, "session_type": "normal", "resume_gateway_url": resume_url,
            "shard": [0, 1], "application": {"id": application["id"], "flags": application["flags"]},
            "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["us-east"], "user_settings": {}, "auth": {},
            "_trace": ['["gateway-prd-fake",{"micros":1}]']}


def application(app_id: str, bot_user: Json, owner: Json, flags: int) -> Json:
    return {"id": app_id, "name": bot_user["username"], "icon": None, "description": "",
            "summary": "", "type": None, "bot_public": True, "bot_require_code_grant": False,
            "verify_key": "0" * 64, "flags": flags, "owner": owner, "team": None, "bot": bot_user,
            "hook": True, "tags": [], "redirect_uris": [], "interactions_endpoint_url": None,
            "role_connections_verification_url": None, "approximate_guild_count": 1,
            "integration_types_config": {"0": {}}, "install_params": None}


def app_command(spec: Json, command_id: str, application_id: str, guild_id: str | None) -> Json:
    cmd: Json = {"type": 1, "options": [], "default_member_permissions": None, "nsfw": False,
                 "name_localizations": None, "description_localizations": None, "contexts": None,
                 "integration_types": [0], **spec, "id": command_id, "application_id": application_id,
                 "version": snowflake()}
    if guild_id is not None:
        cmd["guild_id"] = guild_id
    else:
        cmd.setdefault("dm_permission", True)
    return cmd


def interaction(kind: int, data: Json, *, application_id: str, guild_id: str, channel: Json,
                member_obj: Json, app_permissions: int, size_limit: int, message_obj: Json | None = None,
                locale: str = "en-US") -> Json:
    payload: Json = {"id": snowflake(), "application_id": application_id, "type": kind, "data": data,
                     "guild_id": guild_id, "guild": {"id": guild_id, "locale": locale, "features": []},
                     "channel_id": channel["id"], "channel": channel, "member": member_obj,
                     "token": "aW50ZXJhY3Rpb246" + snowflake() + ":" + snowflake(), "version": 1,
                     "app_permissions": str(app_permissions), "locale": locale, "guild_locale": locale,
                     "entitlements": [], "authorizing_integration_owners": {"0": guild_id},
                     "context": 0, "attachment_size_limit": size_limit}
    if message_obj is not None:
        payload["message"] = message_obj
    return payload


def filesize_limit(premium_tier: int) -> int:
    """As discord.py's Guild.filesize_limit: 10 MiB up to tier 1, 50 MiB tier 2, 100 MiB tier 3."""
    return {2: 50, 3: 100}.get(premium_tier, 10) * 1024 * 1024
