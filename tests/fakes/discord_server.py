"""A fake Discord (REST API v10, gateway websocket and CDN) for the real discord.py 2.7 client.

One aiohttp server on 127.0.0.1 (random port)::

    async with FakeDiscord() as fake:
        client = await connect_client(fake, discord.Intents.default())  # patches Route.BASE + gateway
        await fake.user_message("2000", "501", "make it blue")           # -> on_message
        ...
        await close_client(client)                                        # restores the patches

World: guild 1000 "Studio" (premium tier 0; roles 1000 @everyone, 3000 "Art Director"), text channels
2000 "design" and 2001 "no-threads" (thread creation: 403 50013, and an @everyone overwrite denying
it), users 501 alice (Art Director) and 502 bob, bot 9000. Test-side actions (user_message,
add/remove_reaction, click_button, slash_command, archive_thread, dispatch, disconnect_all) build the
payloads Discord would send and dispatch them; everything the bot did is in calls, messages, uploaded,
threads, interaction_responses/responses_to(), commands, identifies, resumes and typing.

Faithful on the wire: JSON with content-type exactly `application/json`; `Authorization: Bot <token>`
required except on the CDN and on routes authenticated by an interaction token (`/interactions/...`,
`/webhooks/{app}/{token}...`: discord.py sends no Authorization there, nor does Discord want one);
errors as `{"message", "code"}` (404 10003/10008, 403 50013, 400 50006/50035/40060/160004, 413 40005);
429s with `Via` (without it discord.py assumes a Cloudflare ban) and X-RateLimit-* headers. Gateway:
HELLO, IDENTIFY -> READY + one GUILD_CREATE per guild (of the session's shard), heartbeat ACKs,
RESUME replaying missed events then RESUMED, zlib-stream when asked, intent gating per session, and
message content blanked for sessions without the privileged intent. The bot's own non-ephemeral
messages come back as MESSAGE_CREATE/UPDATE, as on Discord. An interaction must be answered within
`callback_deadline` s.

Sharding as Discord does it (docs/events/gateway.mdx, "Sharding", discord/discord-api-docs; the
formula first in discord-api-docs#17; ../shared/research/scale-out.md): IDENTIFY may carry
`shard: [id, count]` (0 <= id < count, else close 4010 Invalid shard); each session gets a guild's
events only when `(guild_id >> 22) % count == id`, computed per session (sessions need not agree on
the count); "Gateway events that do not contain a guild_id will only be sent to the first shard
(shard_id: 0)", DMs included; READY lists, and GUILD_CREATE is sent for, that shard's guilds only.
GET /gateway/bot answers `shards` (recommended_shards). `deliveries` records which shard got what.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import math
import mimetypes
import re
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from tests.fakes import discord_payloads as p

Json = dict[str, Any]
API = "/api/v10"
_DEAD_SESSION_CODES = {4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}
_GUILD_EVENTS = {"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"}  # the guild's id is `id`, not `guild_id`
_INTENT_BITS = {"MESSAGE": (9, 12), "MESSAGE_REACTION": (10, 13), "TYPING": (11, 14),
                "THREAD": (0, 0), "CHANNEL": (0, 0), "GUILD": (0, 0)}


@dataclass
class Call:
    method: str
    path: str  # without /api/v10, URL-decoded, no query string
    query: dict[str, str]
    json: Any  # the JSON body, or the parsed payload_json of a multipart body; None without one
    files: list[tuple[str, str, str, bytes]]  # (form field, filename, content type, bytes)
    headers: dict[str, str]  # names lower-cased
    status: int = 0
    route: str | None = None  # the matched route template, "cdn" for downloads; None: unknown route


class DiscordError(Exception):
    def __init__(self, status: int, body: Json) -> None:
        super().__init__(body.get("message"))
        self.status, self.body = status, body


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    zlib: Any  # a zlib compressobj when the client asked for compress=zlib-stream, else None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None
    server_closed: bool = False


@dataclass(eq=False)
class _Session:
    id: str
    intents: int
    seq: int = 0
    backlog: list[Json] = field(default_factory=list)  # every event sent, for RESUME
    conn: _Conn | None = None
    ready: bool = False
    alive: bool = True
    shard: tuple[int, int] = (0, 1)  # [shard_id, num_shards] from IDENTIFY; (0, 1): not sharded

    def gets(self, guild_id: str | None) -> bool:
        """Whether Discord routes an event of this guild (None: no guild_id, such as a DM) here."""
        shard_id, count = self.shard
        return shard_id == 0 if guild_id is None else (int(guild_id) >> 22) % count == shard_id


@dataclass(frozen=True)
class Delivery:
    event: str
    id: str | None  # the id of what the event is about (a message, an interaction, a guild...)
    shard: tuple[int, int]  # the [shard_id, num_shards] of the session it was sent to


@dataclass(eq=False)
class _Interaction:
    payload: Json
    created: float
    acked: int | None = None
    original: str | None = None  # the message id @original stands for
    messages: set[str] = field(default_factory=set)
    log: list[Json] = field(default_factory=list)


class FakeDiscord:
    def __init__(self, *, token: str = "fake-discord-token", bot_id: str = "9000",
                 application_id: str = "9000", heartbeat_interval_ms: int = 1000) -> None:
        self.token, self.application_id = token, application_id
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.bot_user = p.user(bot_id, "threadedit", bot=True)
        self.base_url = self.api_base = self.gateway_url = ""
        self.callback_deadline: float | None = 3.0  # Discord's 3 s to acknowledge an interaction
        self.disallowed_intents = 0  # privileged intents not enabled "in the portal": IDENTIFY -> 4014
        self.message_content_enabled = True  # False: the app lacks the intent, every session is blanked
        self.calls: list[Call] = []
        self.messages: dict[str, list[Json]] = {}
        self.uploaded: dict[str, bytes] = {}
        self.threads: dict[str, Json] = {}
        self.channels: dict[str, Json] = {}
        self.guilds: dict[str, Json] = {}
        self.users: dict[str, Json] = {bot_id: self.bot_user}
        self.interaction_responses: list[Json] = []
        self.commands: list[Json] = []
        self.command_puts = 0
        self.identifies: list[Json] = []
        self.resumes: list[Json] = []
        self.gateway_connects: list[dict[str, str]] = []  # query of every websocket connection
        self.recommended_shards = 1  # what GET /gateway/bot says in `shards`
        self.deliveries: list[Delivery] = []  # every dispatch, per session it was sent to
        self.typing: list[str] = []
        self._no_threads: set[str] = set()
        self._by_id: dict[str, Json] = {}  # message id -> stored message
        self._files: dict[str, tuple[str, str]] = {}  # attachment id -> (filename, content type)
        self._rate_limits: list[list[Any]] = []  # [method, pattern, retry_after, count]
        self._sessions: list[_Session] = []
        self._conns: set[_Conn] = set()
        self._interactions: dict[str, _Interaction] = {}  # by token
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.add_guild("1000", "Studio", channels={"2000": "design", "2001": "no-threads"},
                       roles={"3000": "Art Director"})
        self.allow_threads("2001", False)
        self.add_user("501", "alice", roles=["3000"])
        self.add_user("502", "bob")

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{aid}/{filename}", self._cdn)
        app.router.add_get("/ephemeral-attachments/{app}/{aid}/{filename}", self._cdn)
        app.router.add_route("*", "/{tail:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.api_base, self.gateway_url = self.base_url + API, f"ws://127.0.0.1:{port}/gateway"
        return self

    async def aclose(self) -> None:
        for conn in list(self._conns):
            conn.server_closed = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # ---- world set-up -------------------------------------------------------------------------
    def add_guild(self, guild_id: str, name: str, *, channels: Mapping[str, str] | None = None,
                  roles: Mapping[str, str] | None = None, premium_tier: int = 0) -> Json:
        """A guild the bot is in (connected clients get a GUILD_CREATE); @everyone has the guild's id."""
        role_map = {guild_id: p.role(guild_id, "@everyone", permissions=p.EVERYONE_PERMISSIONS)}
        for pos, (rid, rname) in enumerate((roles or {}).items(), 1):
            role_map[rid] = p.role(rid, rname, permissions=p.EVERYONE_PERMISSIONS, position=pos)
        self.guilds[guild_id] = {"id": guild_id, "name": name, "premium_tier": premium_tier,
                                 "owner_id": "1", "roles": role_map, "members": {self.bot_id: []}}
        for pos, (cid, cname) in enumerate((channels or {}).items()):
            self.channels[cid] = p.text_channel(cid, guild_id, cname, position=pos)
        if self._sessions:
            self._spawn(self._broadcast("GUILD_CREATE", self._guild_create(guild_id)))
        return self._guild_create(guild_id)

    def add_user(self, user_id: str, username: str, *, guild_id: str = "1000",
                 roles: list[str] | None = None) -> Json:
        self.users[user_id] = p.user(user_id, username)
        self.guilds[guild_id]["members"][user_id] = list(roles or [])
        return self.users[user_id]

    def allow_threads(self, channel_id: str, allowed: bool) -> None:
        """Whether creating threads in the channel works, or answers 403 Missing Permissions; also
        shown as an @everyone overwrite (so permissions_for() agrees), sent as CHANNEL_UPDATE."""
        channel = self.channels[channel_id]
        deny = 0 if allowed else p.CREATE_PUBLIC_THREADS | p.CREATE_PRIVATE_THREADS
        (self._no_threads.discard if allowed else self._no_threads.add)(channel_id)
        channel["permission_overwrites"] = [p.overwrite(channel["guild_id"], deny=deny)] if deny else []
        if self._sessions:
            self._spawn(self._broadcast("CHANNEL_UPDATE", channel))

    @property
    def bot_id(self) -> str:
        return str(self.bot_user["id"])

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        """Recorded calls whose method matches and whose path re.fullmatch-es path_regex."""
        return [c for c in self.calls if c.method == method.upper() and re.fullmatch(path_regex, c.path)]

    @property
    def unknown_calls(self) -> list[Call]:
        """Requests that matched no route (404 Unknown route / 405): tests can assert there are none."""
        return [c for c in self.calls if c.route is None and c.status in (404, 405)]

    def rate_limit_next(self, method: str, path_regex: str, retry_after: float = 0.05, *,
                        count: int = 1) -> None:
        self._rate_limits.append([method.upper(), re.compile(path_regex), retry_after, count])

    def responses_to(self, interaction: Json) -> list[Json]:
        return list(self._interactions[interaction["token"]].log)

    # ---- gateway ------------------------------------------------------------------------------
    async def wait_connected(self, n: int = 1, timeout: float = 10) -> None:  # noqa: ASYNC109 - public API
        await eventually(lambda: sum(bool(s.conn and s.ready) for s in self._sessions) >= n, within=timeout)

    async def dispatch(self, event: str, data: Json) -> None:
        await self._broadcast(event, data)

    async def disconnect_all(self, code: int = 4000) -> None:
        for conn in list(self._conns):
            if (session := conn.session) is None:
                continue
            conn.server_closed, session.conn = True, None  # from now on events only go to the backlog
            session.alive = session.alive and code not in _DEAD_SESSION_CODES
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.gateway_connects.append(dict(request.query))
        conn = _Conn(ws, zlib.compressobj() if request.query.get("compress") == "zlib-stream" else None)
        self._conns.add(conn)
        try:
            if request.query.get("v", "10") != "10" or request.query.get("encoding", "json") != "json":
                return await self._close(conn, 4012, "Invalid API version")
            await self._send(conn, {"op": 10, "s": None, "t": None, "d": {
                "heartbeat_interval": self.heartbeat_interval_ms, "_trace": ['["gateway-prd-fake"]']}})
            async for msg in ws:
                try:
                    frame = json.loads(msg.data) if msg.type is WSMsgType.TEXT else None
                except ValueError:
                    frame = None
                if not isinstance(frame, dict):
                    return await self._close(conn, 4002, "Error while decoding payload.")
                await self._on_frame(conn, frame)
        finally:
            self._conns.discard(conn)
            if (session := conn.session) is not None and session.conn is conn:
                session.conn = None
                if not conn.server_closed and ws.close_code in (1000, 1001):
                    session.alive = False  # a clean client close ends the session, as on Discord
        return ws

    async def _close(self, conn: _Conn, code: int, reason: str) -> web.WebSocketResponse:
        conn.server_closed = True
        if conn.session is not None:
            conn.session.alive = conn.session.alive and code not in _DEAD_SESSION_CODES
        await conn.ws.close(code=code, message=reason.encode())
        return conn.ws

    async def _on_frame(self, conn: _Conn, frame: Json) -> None:
        op, d = frame.get("op"), frame.get("d")
        if op == 1:
            await self._send(conn, {"op": 11, "s": None, "t": None, "d": None})
        elif op in (2, 6) and conn.session is not None:
            await self._close(conn, 4005, "Already authenticated.")
        elif op in (2, 6) and str((d or {}).get("token", "")).removeprefix("Bot ") != self.token:
            await self._close(conn, 4004, "Authentication failed.")
        elif op == 2:
            await self._identify(conn, d)
        elif op == 6:
            await self._resume(conn, d)
        elif conn.session is None:
            await self._close(conn, 4003, "Not authenticated.")
        elif op == 8:
            gid = str(d["guild_id"])
            members = [self._member(gid, uid, full=True) for uid in self.guilds[gid]["members"]]
            await self._emit(conn.session, "GUILD_MEMBERS_CHUNK", {
                "guild_id": gid, "members": members, "chunk_index": 0, "chunk_count": 1, "not_found": [],
                **({"nonce": d["nonce"]} if d.get("nonce") else {})})
        elif op not in (3, 4):
            await self._close(conn, 4001, "Unknown opcode.")

    async def _identify(self, conn: _Conn, d: Json) -> None:
        self.identifies.append(copy.deepcopy(d))
        intents = d.get("intents")
        if not isinstance(intents, int):
            await self._close(conn, 4013, "Invalid intent(s).")
            return
        if intents & self.disallowed_intents:
            await self._close(conn, 4014, "Disallowed intent(s).")
            return
        shard = d.get("shard", [0, 1])
        if (not isinstance(shard, list) or len(shard) != 2 or not all(type(x) is int for x in shard)
                or not 0 <= shard[0] < shard[1]):
            await self._close(conn, 4010, "Invalid shard.")
            return
        session = _Session(secrets.token_hex(16), intents, conn=conn, shard=(shard[0], shard[1]))
        conn.session = session
        mine = [gid for gid in self.guilds if session.gets(gid)]
        ready = p.ready(self.bot_user, mine, session.id, self.gateway_url, self._application())
        await self._emit(session, "READY", ready | {"shard": list(session.shard)})
        self._sessions = [s for s in self._sessions if s.alive] + [session]
        for gid in mine:
            await self._emit(session, "GUILD_CREATE", self._guild_create(gid))
        session.ready = True

    async def _resume(self, conn: _Conn, d: Json) -> None:
        self.resumes.append(copy.deepcopy(d))
        session = next((s for s in self._sessions if s.id == d.get("session_id") and s.alive), None)
        sent = int(d.get("seq") or 0)
        if session is None or (session.backlog and session.backlog[0]["s"] > sent + 1):
            # unknown, ended, or too far behind to replay: discord.py then identifies afresh
            await self._send(conn, {"op": 9, "s": None, "t": None, "d": False})
            return
        conn.session = session
        while missed := [f for f in session.backlog if f["s"] > sent]:
            for frame in missed:
                await self._send(conn, frame)
                sent = frame["s"]
        session.conn = conn  # no await since the last backlog check: nothing can slip in between
        await self._emit(session, "RESUMED", {"_trace": ['["gateway-prd-fake"]']})

    async def _emit(self, session: _Session, event: str, data: Json) -> None:
        session.seq += 1
        self.deliveries.append(Delivery(event, data.get("id") or data.get("message_id"), session.shard))
        frame = {"op": 0, "s": session.seq, "t": event, "d": data}
        session.backlog = session.backlog[-999:] + [frame]
        if session.conn is not None:
            await self._send(session.conn, frame)

    async def _send(self, conn: _Conn, frame: Json) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        async with conn.lock:  # one compressor per connection: frames must go out in compression order
            with contextlib.suppress(ConnectionError, RuntimeError):  # closed: RESUME replays it
                if conn.zlib is None:
                    await conn.ws.send_str(text)
                else:
                    data = conn.zlib.compress(text.encode()) + conn.zlib.flush(zlib.Z_SYNC_FLUSH)
                    await conn.ws.send_bytes(data)

    async def _broadcast(self, event: str, data: Json, *, content_granted: bool = True) -> None:
        group = next((v for k, v in _INTENT_BITS.items() if event.rsplit("_", 1)[0] == k), None)
        guild = data.get("guild_id") or (data.get("id") if event in _GUILD_EVENTS else None)
        for session in [s for s in self._sessions if s.alive and s.gets(guild)]:
            if group is not None and not session.intents >> group[0 if data.get("guild_id") else 1] & 1:
                continue
            await self._emit(session, event, self._redact(session, event, data, content_granted))

    def shards_sent(self, event: str, object_id: str) -> list[tuple[int, int]]:
        """The shards (of live sessions) that were sent `event` about `object_id`, in order."""
        return [d.shard for d in self.deliveries if d.event == event and d.id == object_id]

    def _redact(self, session: _Session, event: str, data: Json, granted: bool) -> Json:
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or not data.get("guild_id"):
            return data
        mentions = [u.get("id") for u in data.get("mentions", [])]
        exempt = (data.get("author") or {}).get("id") == self.bot_id or self.bot_id in mentions
        if exempt or (granted and self.message_content_enabled and session.intents & p.MESSAGE_CONTENT):
            return data
        blank = {k: v for k, v in data.items() if k != "poll"}
        return blank | {"content": "", "embeds": [], "attachments": [], "components": []}

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- test-side user actions ---------------------------------------------------------------
    async def user_message(self, channel_id: str, author_id: str, content: str, *,
                           attachments: Sequence[tuple[str, bytes, str | None]] = (),
                           mention_bot: bool = False, message_content_intent: bool = True) -> Json:
        """A member posts; message_content_intent=False: as if the app lacked the privileged intent."""
        channel = self._channel(channel_id)
        if mention_bot:
            content = f"<@{self.bot_id}> {content}"
        atts = [self._upload(channel_id, name, data, ctype) for name, data, ctype in attachments]
        msg = p.message(p.snowflake(), channel_id, self.users[author_id], content, attachments=atts)
        await self._unarchive(channel)
        self._store(msg)
        event = self._gateway_message(msg, channel)
        await self._broadcast("MESSAGE_CREATE", event, content_granted=message_content_intent)
        return event

    async def user_dm(self, author_id: str, content: str) -> Json:
        """A user writes to the bot in a direct message: MESSAGE_CREATE without guild_id (so only to
        shard 0, and only to sessions with the DIRECT_MESSAGES intent). Content is not blanked: the
        message content intent does not cover DMs."""
        channel = next((c for c in self.channels.values() if c["type"] == 1
                        and c["recipients"][0]["id"] == author_id), None)
        if channel is None:
            cid = p.snowflake()
            channel = self.channels[cid] = {"id": cid, "type": 1, "last_message_id": None, "flags": 0,
                                            "recipients": [self.users[author_id]]}
        msg = self._store(p.message(p.snowflake(), channel["id"], self.users[author_id], content))
        event = self._gateway_message(msg, channel)
        await self._broadcast("MESSAGE_CREATE", event)
        return event

    async def archive_thread(self, thread_id: str, *, locked: bool = False) -> Json:
        """What Discord does after auto_archive_duration idle minutes: THREAD_UPDATE archived=true, so
        clients drop the thread from their cache and GUILD_CREATE leaves it out. A new message
        unarchives it (THREAD_UPDATE first); a locked one refuses the bot's messages."""
        thread = self.threads[thread_id]
        thread["thread_metadata"] |= {"archived": True, "locked": locked, "archive_timestamp": p.iso()}
        await self._broadcast("THREAD_UPDATE", thread)
        return thread

    async def _unarchive(self, channel: Json, *, by_bot: bool = False) -> None:
        meta = channel.get("thread_metadata")
        if not meta or not meta["archived"]:
            return
        if meta["locked"] and by_bot:
            raise DiscordError(400, p.error(50083, "Thread is archived"))
        meta |= {"archived": False, "locked": False, "archive_timestamp": p.iso()}
        await self._broadcast("THREAD_UPDATE", channel)

    async def add_reaction(self, channel_id: str, message_id: str, user_id: str, emoji: str) -> Json:
        return await self._reaction("ADD", channel_id, message_id, user_id, emoji)

    async def remove_reaction(self, channel_id: str, message_id: str, user_id: str, emoji: str) -> Json:
        return await self._reaction("REMOVE", channel_id, message_id, user_id, emoji)

    async def _reaction(self, action: str, channel_id: str, message_id: str, user_id: str,
                        emoji: str) -> Json:
        gid = self._channel(channel_id)["guild_id"]
        data: Json = {"user_id": user_id, "channel_id": channel_id, "message_id": message_id, "guild_id": gid,
                      "emoji": p.emoji(emoji), "burst": False, "type": 0}
        if action == "ADD":
            data |= {"member": self._member(gid, user_id, full=True), "burst_colors": []}
            if (msg := self._by_id.get(message_id)) is not None:
                data["message_author_id"] = msg["author"]["id"]
        self._count_reaction(message_id, emoji, +1 if action == "ADD" else -1, me=False)
        await self._broadcast(f"MESSAGE_REACTION_{action}", data)
        return data

    async def click_button(self, message: Json, custom_id: str, user_id: str) -> Json:
        msg = self._by_id.get(message["id"], message)  # the message as it is now, after any edits
        comp = next((c for c in p.walk(msg.get("components", [])) if c.get("custom_id") == custom_id), None)
        if comp is None:
            raise ValueError(f"no component with custom_id {custom_id!r} on message {msg['id']}")
        data = {"custom_id": custom_id, "component_type": comp["type"], "id": comp.get("id")}
        return await self._interact(3, data, msg["channel_id"], user_id, message=msg)

    async def slash_command(self, channel_id: str, user_id: str, name: str, options: Mapping[str, Any], *,
                            attachment: tuple[str, bytes, str] | None = None) -> Json:
        """Invoke a command registered through PUT .../commands (guild commands first, as Discord shows)."""
        gid = self._channel(channel_id)["guild_id"]
        cmd = next((c for c in sorted(self.commands, key=lambda c: "guild_id" not in c)
                    if c["name"] == name and c.get("guild_id") in (gid, None)), None)
        if cmd is None:
            raise LookupError(f"/{name} was never registered (sync the CommandTree first)")
        specs = {o["name"]: o for o in cmd.get("options", [])}
        opts = [{"name": k, "type": specs.get(k, {}).get("type", p.option_type(v)), "value": v}
                for k, v in options.items()]
        data: Json = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if attachment is not None:
            opt = next((o["name"] for o in specs.values() if o["type"] == 11), "image")
            aid, (filename, raw, ctype) = p.snowflake(), attachment
            self.uploaded[aid], self._files[aid] = raw, (filename, ctype)
            url = f"{self.base_url}/ephemeral-attachments/{self.application_id}/{aid}/{filename}"
            resolved = p.attachment(aid, filename, raw, ctype, url, ephemeral=True)
            data["resolved"] = {"attachments": {aid: resolved}}
            opts.append({"name": opt, "type": 11, "value": aid})
        if "guild_id" in cmd:
            data["guild_id"] = gid
        return await self._interact(2, data, channel_id, user_id)

    async def _interact(self, kind: int, data: Json, channel_id: str, user_id: str, *,
                        message: Json | None = None) -> Json:
        channel = self._channel(channel_id)
        gid = channel["guild_id"]
        member = self._member(gid, user_id, full=True) | {"permissions": str(self._perms(channel, user_id))}
        payload = p.interaction(kind, data, application_id=self.application_id, guild_id=gid,
                                channel={**channel, "permissions": member["permissions"]}, member_obj=member,
                                app_permissions=self._perms(channel, self.bot_id), message_obj=message,
                                size_limit=p.filesize_limit(self.guilds[gid]["premium_tier"]))
        self._interactions[payload["token"]] = _Interaction(payload, time.monotonic())
        await self._broadcast("INTERACTION_CREATE", payload)
        return payload

    # ---- REST plumbing ------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        in_api = request.path.startswith(API + "/")
        headers = {k.lower(): v for k, v in request.headers.items()}
        call = Call(request.method, request.path[len(API):] if in_api else request.path,
                    dict(request.query), None, [], headers)
        self.calls.append(call)
        extra: dict[str, str] = {}
        try:
            call.json, call.files = await _read_body(request)
            handler, params = self._route(call, in_api)
            token_route = call.route.startswith(("/interactions/", "/webhooks/"))
            if not token_route and headers.get("authorization") != f"Bot {self.token}":
                raise DiscordError(401, p.error(0, "401: Unauthorized"))
            if (wait := self._take_rate_limit(call)) is not None:
                extra = _ratelimit_headers(call, wait)
                raise DiscordError(429, {"message": "You are being rate limited.", "retry_after": wait,
                                         "global": False})
            result = await handler(call, **params)
            extra = _ratelimit_headers(call, None)
            status, payload = result if isinstance(result, tuple) else (200, result)
            status = 204 if payload is None else status
        except DiscordError as e:
            status, payload = e.status, e.body
        call.status = status
        if payload is None:
            return web.Response(status=status, headers=extra)
        return web.Response(status=status, body=json.dumps(payload).encode(),
                            headers={**extra, "Content-Type": "application/json"})

    def _route(self, call: Call, in_api: bool) -> tuple[Callable[..., Awaitable[Any]], dict[str, str]]:
        wrong_method = False
        for method, template, pattern, handler in _ROUTES if in_api else ():
            if (m := pattern.fullmatch(call.path)) is not None:
                if method == call.method:
                    call.route = template
                    return getattr(self, handler), m.groupdict()
                wrong_method = True
        if wrong_method:
            raise DiscordError(405, p.error(0, "405: Method Not Allowed"))
        raise DiscordError(404, p.error(0, "Unknown route" if in_api else "404: Not Found"))

    def _take_rate_limit(self, call: Call) -> float | None:
        for entry in self._rate_limits:
            if entry[0] == call.method and entry[1].fullmatch(call.path) and entry[3] > 0:
                entry[3] -= 1
                return float(entry[2])
        return None

    async def _cdn(self, request: web.Request) -> web.Response:
        aid, name = request.match_info["aid"], request.match_info["filename"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        ok = aid in self.uploaded and self._files[aid][0] == name
        status = 200 if ok else 404
        self.calls.append(Call("GET", request.path, dict(request.query), None, [], headers, status, "cdn"))
        if not ok:  # the CDN answers in plain text, not Discord's JSON errors
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=self.uploaded[aid], headers={"Content-Type": self._files[aid][1]})

    # ---- model helpers ------------------------------------------------------------------------
    def _channel(self, channel_id: str) -> Json:
        channel = self.channels.get(channel_id) or self.threads.get(channel_id)
        if channel is None:
            raise DiscordError(404, p.error(10003, "Unknown Channel"))
        return channel

    def _message(self, channel_id: str, message_id: str) -> Json:
        msg = self._by_id.get(message_id)
        if msg is None or msg["channel_id"] != channel_id or msg["flags"] & p.EPHEMERAL:
            raise DiscordError(404, p.error(10008, "Unknown Message"))
        return msg

    def _member(self, guild_id: str, user_id: str, *, full: bool = False) -> Json:
        roles = self.guilds[guild_id]["members"].get(user_id, [])
        return p.member(roles, user_obj=self.users[user_id] if full else None)

    def _perms(self, channel: Json, user_id: str) -> int:
        parent = self.channels.get(channel.get("parent_id") or "", channel)
        gid = channel["guild_id"]
        roles = self.guilds[gid]["members"].get(user_id, [])
        return p.permissions(gid, self.guilds[gid]["roles"], roles, user_id, parent["permission_overwrites"])

    def _guild_create(self, gid: str) -> Json:
        guild = self.guilds[gid] | {"member_count": len(self.guilds[gid]["members"])}
        channels = [c for c in self.channels.values() if c.get("guild_id") == gid]
        threads = [t for t in self.threads.values()
                   if t["guild_id"] == gid and not t["thread_metadata"]["archived"]]
        return p.guild_create(guild, channels, threads, [self._member(gid, self.bot_id, full=True)])

    def _application(self) -> Json:
        flags = 1 << 23 | (0 if self.disallowed_intents & p.MESSAGE_CONTENT else 1 << 19)
        return p.application(self.application_id, self.bot_user, self.users.get("501", self.bot_user), flags)

    def _gateway_message(self, msg: Json, channel: Json) -> Json:
        """REST messages lack guild_id/member; MESSAGE_CREATE/UPDATE carry both (and members in mentions)."""
        gid, author = channel.get("guild_id"), msg["author"]["id"]
        if gid is None:  # a DM: no guild_id, no member
            return copy.deepcopy(msg)
        event = copy.deepcopy(msg) | {"guild_id": gid}
        if author in self.guilds[gid]["members"]:
            event["member"] = self._member(gid, author)
        for user in event["mentions"]:
            if user["id"] in self.guilds[gid]["members"]:
                user["member"] = self._member(gid, user["id"])
        return event

    def _upload(self, channel_id: str, filename: str, data: bytes, ctype: str | None) -> Json:
        aid, filename = p.snowflake(), filename.replace(" ", "_")  # Discord swaps spaces for underscores
        ctype = ctype if ctype and ctype != "application/octet-stream" else mimetypes.guess_type(filename)[0]
        self.uploaded[aid], self._files[aid] = data, (filename, ctype or "application/octet-stream")
        url = f"{self.base_url}/attachments/{channel_id}/{aid}/{filename}"
        return p.attachment(aid, filename, data, ctype, url)

    def _store(self, msg: Json) -> Json:
        msg["mentions"] = [self.users[u] for u in p.mentioned_ids(msg["content"]) if u in self.users]
        channel = self._channel(msg["channel_id"])
        if channel["type"] in (11, 12):  # thread counters, and the position discord.py reads
            msg["position"] = channel["total_message_sent"]
            channel["message_count"] += 1
            channel["total_message_sent"] += 1
        channel["last_message_id"] = msg["id"]
        self.messages.setdefault(msg["channel_id"], []).append(msg)
        self._by_id[msg["id"]] = msg
        return msg

    def _count_reaction(self, message_id: str, emoji: str, delta: int, *, me: bool) -> None:
        if (msg := self._by_id.get(message_id)) is None:
            return
        reactions = msg.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"] == p.emoji(emoji)), None)
        if entry is None:
            entry = {"emoji": p.emoji(emoji), "count": 0, "count_details": {"burst": 0, "normal": 0},
                     "me": False, "me_burst": False, "burst_colors": []}
            reactions.append(entry)
        entry["count"] = max(0, entry["count"] + delta)
        entry["count_details"]["normal"] = entry["count"]
        entry["me"] = (delta > 0) if me else entry["me"]
        msg["reactions"] = [r for r in reactions if r["count"]]

    def _apply(self, channel: Json, payload: Json, files: list[tuple[str, str, str, bytes]], msg: Json,
               mask: int) -> Json:
        """`msg` updated by a create/edit payload, validated as Discord does; new files are uploaded."""
        content = payload["content"] if "content" in payload else msg["content"]
        content = "" if content is None else str(content)
        if len(content) > 2000:
            raise DiscordError(400, p.field_error("content", "BASE_TYPE_MAX_LENGTH",
                                                  "Must be 2000 or fewer in length."))
        guild = self.guilds.get(channel.get("guild_id") or "")
        limit = p.filesize_limit(guild["premium_tier"] if guild else 0)
        if any(len(f[3]) > limit for f in files):  # per file, as Guild.filesize_limit says
            raise DiscordError(413, p.error(40005, "Request entity too large"))
        uploads = {f[0]: f for f in files}
        kept = {str(a["id"]): a for a in msg["attachments"]}
        atts: list[Json] = [] if "attachments" in payload else list(msg["attachments"])
        for entry in payload.get("attachments") or []:  # {"id": n} -> files[n]; an existing id -> keep it
            if (part := uploads.pop(f"files[{entry['id']}]", None)) is not None:
                atts.append(self._upload(channel["id"], entry.get("filename") or part[1], part[3], part[2]))
            elif str(entry["id"]) in kept:
                atts.append(kept[str(entry["id"])])
        atts += [self._upload(channel["id"], f[1], f[3], f[2]) for f in uploads.values()]
        components = msg["components"]
        if "components" in payload:
            components = p.number_components(copy.deepcopy(payload["components"] or []))
            ids = p.custom_ids(components)
            if any(not 1 <= len(i) <= 100 for i in ids) or len(set(ids)) != len(ids):
                raise DiscordError(400, p.field_error("components", "COMPONENT_CUSTOM_ID_INVALID",
                                                      "custom_id must be 1-100 characters and unique"))
        flags = msg["flags"] if "flags" not in payload else \
            (msg["flags"] & ~mask) | (int(payload["flags"] or 0) & mask)
        embeds = (payload["embeds"] or []) if "embeds" in payload else msg["embeds"]
        if not (content or atts or embeds or components or payload.get("sticker_ids") or payload.get("poll")
                or flags & p.LOADING):
            raise DiscordError(400, p.error(50006, "Cannot send an empty message"))
        mentions = [self.users[u] for u in p.mentioned_ids(content) if u in self.users]
        return msg | {"content": content, "attachments": atts, "components": components, "flags": flags,
                      "embeds": embeds, "mentions": mentions}

    async def _create(self, channel: Json, payload: Json, files: list[tuple[str, str, str, bytes]], *,
                      mask: int = p.SENDABLE_FLAGS & ~p.EPHEMERAL, **fields: Any) -> Json:
        await self._unarchive(channel, by_bot=True)
        blank = p.message(p.snowflake(), channel["id"], self.bot_user, "", **fields)
        msg = self._apply(channel, payload, files, blank, mask)
        ref = payload.get("message_reference")
        if ref and (target := self._by_id.get(str(ref.get("message_id")))):
            msg |= {"type": 19, "referenced_message": copy.deepcopy(target), "message_reference": {
                "type": 0, "message_id": target["id"], "channel_id": target["channel_id"],
                **({"guild_id": channel["guild_id"]} if "guild_id" in channel else {})}}
        elif ref and ref.get("fail_if_not_exists", True):
            raise DiscordError(400, p.field_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                                  "Unknown message"))
        if payload.get("nonce") is not None:
            msg["nonce"] = payload["nonce"]
        self._store(msg)
        if not msg["flags"] & p.EPHEMERAL:  # Discord never sends ephemeral messages over the gateway
            await self._broadcast("MESSAGE_CREATE", self._gateway_message(msg, channel))
        return msg

    async def _edit(self, msg: Json, payload: Json, files: list[tuple[str, str, str, bytes]]) -> Json:
        channel = self._channel(msg["channel_id"])
        # any edit ends a deferred response's "thinking…" state; ephemerality can't change
        unloaded = msg | {"flags": msg["flags"] & ~p.LOADING}
        new = self._apply(channel, payload, files, unloaded, p.EDITABLE_FLAGS)
        msg.update(new | {"edited_timestamp": p.iso()})
        if not msg["flags"] & p.EPHEMERAL:
            await self._broadcast("MESSAGE_UPDATE", self._gateway_message(msg, channel))
        return msg

    async def _delete(self, msg: Json) -> None:
        self.messages[msg["channel_id"]].remove(msg)
        del self._by_id[msg["id"]]
        if not msg["flags"] & p.EPHEMERAL:
            gid = self._channel(msg["channel_id"]).get("guild_id")
            await self._broadcast("MESSAGE_DELETE", {"id": msg["id"], "channel_id": msg["channel_id"],
                                                     **({"guild_id": gid} if gid else {})})

    async def _open_thread(self, thread: Json, starter: Json | None) -> tuple[int, Json]:
        if thread["parent_id"] in self._no_threads:
            raise DiscordError(403, p.error(50013, "Missing Permissions"))
        name = thread["name"]
        if not 1 <= len(name) <= 100:
            raise DiscordError(400, p.field_error("name", "BASE_TYPE_BAD_LENGTH",
                                                  "Must be between 1 and 100 in length."))
        self.threads[thread["id"]] = thread
        if starter is not None:  # the starter message now points at its thread, as Discord shows it
            starter |= {"thread": thread, "flags": starter["flags"] | p.HAS_THREAD}
        me = p.thread_member(thread["id"], self.bot_id)
        await self._broadcast("THREAD_CREATE", thread | {"newly_created": True, "member": me})
        return 201, thread | {"member": me}

    # ---- REST handlers (see _ROUTES) ----------------------------------------------------------
    async def _get_me(self, call: Call) -> Json:
        return self.bot_user | {"verified": True, "mfa_enabled": False, "email": None, "locale": "en-US"}

    async def _get_app(self, call: Call) -> Json:
        return self._application()

    async def _get_gateway(self, call: Call) -> Json:
        if not call.path.endswith("/bot"):
            return {"url": self.gateway_url}
        return {"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": {
            "total": 1000, "remaining": 1000 - len(self.identifies), "reset_after": 86_400_000,
            "max_concurrency": 1}}

    async def _get_channel(self, call: Call, cid: str) -> Json:
        return self._channel(cid)

    async def _get_member(self, call: Call, gid: str, uid: str) -> Json:
        if uid not in self.guilds.get(gid, {}).get("members", {}):
            raise DiscordError(404, p.error(10007, "Unknown Member"))
        return self._member(gid, uid, full=True)

    async def _list_messages(self, call: Call, cid: str) -> list[Json]:
        self._channel(cid)
        q, limit = call.query, min(max(int(call.query.get("limit", 50)), 1), 100)
        found = sorted((m for m in self.messages.get(cid, []) if not m["flags"] & p.EPHEMERAL),
                       key=lambda m: int(m["id"]))
        if "after" in q:  # the oldest `limit` after it, still answered newest first
            return [m for m in found if int(m["id"]) > int(q["after"])][:limit][::-1]
        return [m for m in found if "before" not in q or int(m["id"]) < int(q["before"])][::-1][:limit]

    async def _post_message(self, call: Call, cid: str) -> Json:
        return await self._create(self._channel(cid), call.json or {}, call.files)

    async def _get_message(self, call: Call, cid: str, mid: str) -> Json:
        return self._message(cid, mid)

    async def _patch_message(self, call: Call, cid: str, mid: str) -> Json:
        msg = self._message(cid, mid)
        if msg["author"]["id"] != self.bot_id:
            raise DiscordError(403, p.error(50005, "Cannot edit a message authored by another user"))
        return await self._edit(msg, call.json or {}, call.files)

    async def _delete_message(self, call: Call, cid: str, mid: str) -> None:
        await self._delete(self._message(cid, mid))

    async def _thread_from_message(self, call: Call, cid: str, mid: str) -> tuple[int, Json]:
        channel, body = self._channel(cid), call.json or {}
        if channel["type"] not in (0, 5):
            raise DiscordError(400, p.error(50024, "Cannot execute action on this channel type"))
        starter = self._message(cid, mid)
        if mid in self.threads:
            raise DiscordError(400, p.error(160004, "A thread has already been created for this message"))
        archive = body.get("auto_archive_duration") or channel["default_auto_archive_duration"]
        thread = p.thread(mid, channel, self.bot_id, str(body.get("name") or ""),
                          auto_archive_duration=archive)
        return await self._open_thread(thread, starter)

    async def _thread_alone(self, call: Call, cid: str) -> tuple[int, Json]:
        channel, body = self._channel(cid), call.json or {}
        if channel["type"] not in (0, 5):
            raise DiscordError(400, p.error(50024, "Cannot execute action on this channel type"))
        archive = body.get("auto_archive_duration") or channel["default_auto_archive_duration"]
        thread = p.thread(p.snowflake(), channel, self.bot_id, str(body.get("name") or ""),
                          kind=int(body.get("type") or 12), auto_archive_duration=archive)
        return await self._open_thread(thread, None)

    async def _typing(self, call: Call, cid: str) -> None:
        self._channel(cid)
        self.typing.append(cid)

    async def _react(self, call: Call, cid: str, mid: str, emoji: str) -> None:
        msg = self._message(cid, mid)
        mine = any(r["emoji"] == p.emoji(emoji) and r["me"] for r in msg.get("reactions", []))
        if mine != (call.method == "PUT"):  # adding twice / removing what isn't there changes nothing
            self._count_reaction(mid, emoji, +1 if call.method == "PUT" else -1, me=True)

    def _ix(self, token: str, *, iid: str | None = None, app: str | None = None) -> _Interaction:
        ix = self._interactions.get(token)
        if ix is None or iid not in (None, ix.payload["id"]) or app not in (None, self.application_id):
            body = p.error(10062, "Unknown interaction") if iid else p.error(10015, "Unknown Webhook")
            raise DiscordError(404, body)
        return ix

    async def _callback(self, call: Call, iid: str, token: str) -> Json | None:
        ix = self._ix(token, iid=iid)
        if self.callback_deadline is not None and time.monotonic() - ix.created > self.callback_deadline:
            raise DiscordError(404, p.error(10062, "Unknown interaction"))
        if ix.acked is not None:
            raise DiscordError(400, p.error(40060, "Interaction has already been acknowledged."))
        body = call.json if isinstance(call.json, dict) else {}
        kind, data = body.get("type"), body.get("data") or {}
        if kind not in {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,), 5: (4, 5, 6, 7)}[ix.payload["type"]]:
            raise DiscordError(400, p.field_error("type", "BASE_TYPE_CHOICES",
                                                  "Value must be one of (4, 5, 6, 7, 9)."))
        msg, channel = None, self._channel(ix.payload["channel_id"])
        if kind == 4 or kind == 5:
            meta = {"id": iid, "type": ix.payload["type"], "user": ix.payload["member"]["user"],
                    "authorizing_integration_owners": {"0": channel["guild_id"]}}
            if "message" in ix.payload:
                meta["interacted_message_id"] = ix.payload["message"]["id"]
            payload = data if kind == 4 else {"flags": (data.get("flags") or 0) & p.EPHEMERAL | p.LOADING}
            msg = await self._create(channel, payload, call.files, mask=p.SENDABLE_FLAGS | p.LOADING,
                                     type=20 if ix.payload["type"] == 2 else 0, interaction_metadata=meta,
                                     webhook_id=self.application_id, application_id=self.application_id)
            ix.messages.add(msg["id"])
        elif kind in (6, 7):  # @original is now the message the component sits on
            msg = self._by_id.get(ix.payload.get("message", {}).get("id", ""))
            if kind == 7 and msg is not None:
                msg = await self._edit(msg, data, call.files)
        ix.acked, ix.original = kind, msg["id"] if msg else None
        record = {"interaction_id": iid, "type": kind, "data": data, "files": call.files}
        self.interaction_responses.append(record)
        ix.log.append({"kind": "callback", **record})
        if call.query.get("with_response", "").lower() not in ("1", "true"):
            return None
        resource = {"type": kind} | ({"message": msg} if kind in (4, 7) and msg else {})
        return {"interaction": {"id": iid, "type": ix.payload["type"], "response_message_id": ix.original,
                                "response_message_loading": kind == 5,
                                "response_message_ephemeral": bool(msg and msg["flags"] & p.EPHEMERAL)},
                "resource": resource}

    async def _followup(self, call: Call, app: str, token: str) -> Json | None:
        ix = self._ix(token, app=app)
        if ix.acked is None:  # the followup webhook exists only once the interaction is acknowledged
            raise DiscordError(404, p.error(10015, "Unknown Webhook"))
        original, body = self._by_id.get(ix.original or ""), call.json or {}
        if ix.acked == 5 and original is not None and original["flags"] & p.LOADING:
            msg = await self._edit(original, body, call.files)  # the first followup replaces "thinking…"
        else:
            channel = self._channel(ix.payload["channel_id"])
            msg = await self._create(channel, body, call.files, mask=p.SENDABLE_FLAGS,
                                     webhook_id=self.application_id, application_id=self.application_id)
            ix.messages.add(msg["id"])
        ix.log.append({"kind": "followup", "message": copy.deepcopy(msg), "files": call.files})
        return msg if call.query.get("wait", "").lower() in ("1", "true") else None

    async def _webhook_message(self, call: Call, app: str, token: str, mid: str) -> Json | None:
        ix = self._ix(token, app=app)
        target = ix.original if mid == "@original" else mid
        if target is None or target not in ix.messages | {ix.original} or target not in self._by_id:
            raise DiscordError(404, p.error(10008, "Unknown Message"))
        msg = self._by_id[target]
        if call.method == "DELETE":
            await self._delete(msg)
            return None
        if call.method == "PATCH":
            msg = await self._edit(msg, call.json or {}, call.files)
            ix.log.append({"kind": "edit", "message_id": mid, "message": copy.deepcopy(msg),
                           "files": call.files})
        return msg

    async def _commands(self, call: Call, app: str, gid: str | None = None) -> list[Json]:
        if app != self.application_id or (gid is not None and gid not in self.guilds):
            raise DiscordError(403, p.error(50001, "Missing Access"))
        scope = [c for c in self.commands if c.get("guild_id") == gid]
        if call.method == "GET":
            return scope
        if not isinstance(call.json, list):
            raise DiscordError(400, p.error(50035, "Invalid Form Body"))
        ids = {(c["name"], c["type"]): c["id"] for c in scope}  # Discord keeps ids across overwrites
        new = [p.app_command(spec, ids.get((spec["name"], spec.get("type", 1))) or p.snowflake(),
                             self.application_id, gid) for spec in call.json]
        self.commands = [c for c in self.commands if c.get("guild_id") != gid] + new
        self.command_puts += 1
        return new


def _compile_routes(*routes: tuple[str, str, str]) -> list[tuple[str, str, re.Pattern[str], str]]:
    return [(m, t, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t)), h) for m, t, h in routes]


_ROUTES = _compile_routes(
    ("GET", "/users/@me", "_get_me"),
    ("GET", "/oauth2/applications/@me", "_get_app"),
    ("GET", "/gateway", "_get_gateway"),
    ("GET", "/gateway/bot", "_get_gateway"),
    ("GET", "/channels/{cid}", "_get_channel"),
    ("GET", "/guilds/{gid}/members/{uid}", "_get_member"),
    ("GET", "/channels/{cid}/messages", "_list_messages"),
    ("POST", "/channels/{cid}/messages", "_post_message"),
    ("GET", "/channels/{cid}/messages/{mid}", "_get_message"),
    ("PATCH", "/channels/{cid}/messages/{mid}", "_patch_message"),
    ("DELETE", "/channels/{cid}/messages/{mid}", "_delete_message"),
    ("POST", "/channels/{cid}/messages/{mid}/threads", "_thread_from_message"),
    ("POST", "/channels/{cid}/threads", "_thread_alone"),
    ("POST", "/channels/{cid}/typing", "_typing"),
    ("PUT", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", "_react"),
    ("DELETE", "/channels/{cid}/messages/{mid}/reactions/{emoji}/@me", "_react"),
    ("POST", "/interactions/{iid}/{token}/callback", "_callback"),
    ("POST", "/webhooks/{app}/{token}", "_followup"),
    ("GET", "/webhooks/{app}/{token}/messages/{mid}", "_webhook_message"),
    ("PATCH", "/webhooks/{app}/{token}/messages/{mid}", "_webhook_message"),
    ("DELETE", "/webhooks/{app}/{token}/messages/{mid}", "_webhook_message"),
    ("GET", "/applications/{app}/commands", "_commands"),
    ("PUT", "/applications/{app}/commands", "_commands"),
    ("GET", "/applications/{app}/guilds/{gid}/commands", "_commands"),
    ("PUT", "/applications/{app}/guilds/{gid}/commands", "_commands"),
)


def _ratelimit_headers(call: Call, retry_after: float | None) -> dict[str, str]:
    """X-RateLimit-* as Discord sends them; a 429 also gets Retry-After and Via (discord.py reads a 429
    without Via as a Cloudflare ban and gives up instead of retrying)."""
    wait = 1.0 if retry_after is None else retry_after
    headers = {"X-RateLimit-Bucket": hashlib.md5(f"{call.method} {call.route}".encode()).hexdigest(),
               "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "4" if retry_after is None else "0",
               "X-RateLimit-Reset": f"{time.time() + wait:.3f}", "X-RateLimit-Reset-After": f"{wait:.3f}",
               "Via": "1.1 google"}
    if retry_after is not None:
        headers |= {"Retry-After": str(math.ceil(retry_after)), "X-RateLimit-Scope": "user"}
    return headers


async def _read_body(request: web.Request) -> tuple[Any, list[tuple[str, str, str, bytes]]]:
    if not request.body_exists:
        return None, []
    if request.content_type == "multipart/form-data":
        body, files = None, []
        for name, value in (await request.post()).items():
            if isinstance(value, str):
                body = json.loads(value) if name == "payload_json" else body
            else:
                files.append((name, value.filename, value.content_type, value.file.read()))
        return body, files
    raw = await request.read()
    try:
        return (json.loads(raw) if raw else None), []
    except ValueError:
        raise DiscordError(400, p.error(50109, "The request body contains invalid JSON.")) from None


# ---- driving a real discord.Client against the fake ------------------------------------------------
async def eventually(cond: Callable[[], Any], within: float = 5.0, interval: float = 0.01) -> Any:
    """Poll until cond() is truthy (returning it); AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while not (result := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)
    return result


class _Patch:
    """Route.BASE and DEFAULT_GATEWAY are process-wide: patched while any client runs, restored after
    the last one stops, so a second client can't unpatch the first one's REST calls to discord.com."""

    depth = 0
    fake: FakeDiscord | None = None
    saved: tuple[str, yarl.URL] = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)

    @classmethod
    def enter(cls, fake: FakeDiscord) -> None:
        if cls.depth and cls.fake is not fake:
            raise RuntimeError("discord.py is already pointed at another FakeDiscord")
        if not cls.depth:
            cls.fake, cls.saved = fake, (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = fake.api_base, yarl.URL(fake.gateway_url)
        cls.depth += 1

    @classmethod
    def exit(cls) -> None:
        cls.depth -= 1
        if not cls.depth:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = cls.saved
            cls.fake = None


_running: dict[discord.Client, asyncio.Task[None]] = {}


async def connect_client(fake: FakeDiscord, intents: discord.Intents | None = None, *,
                         client: discord.Client | None = None, timeout: float = 10.0,  # noqa: ASYNC109
                         **client_kwargs: Any) -> discord.Client:
    """Point discord.py at `fake`, run `client.start(fake.token)` in a task and wait until on_ready.

    Pass a prepared `client` (views, CommandTree, event handlers) or let one be built from `intents`
    (default Intents.default()) and `client_kwargs` (guild_ready_timeout defaults to 0.1 s, for speed).
    Always pair with close_client()."""
    if client is None:
        client_kwargs.setdefault("guild_ready_timeout", 0.1)
        chosen = discord.Intents.default() if intents is None else intents
        client = discord.Client(intents=chosen, **client_kwargs)
    _Patch.enter(fake)
    task = _running[client] = asyncio.create_task(client.start(fake.token))
    try:
        await eventually(lambda: client.is_ready() or task.done(), within=timeout)
        if not client.is_ready():
            task.result()  # re-raises why the client stopped (LoginFailure, PrivilegedIntentsRequired...)
            raise RuntimeError("discord.Client stopped before it became ready")
    except BaseException:
        await close_client(client)
        raise
    return client


async def close_client(client: discord.Client) -> None:
    """Close the client (the fake sees a 1000 close and forgets the session), then restore discord.py."""
    task = _running.pop(client, None)
    try:
        await client.close()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
    finally:
        if task is not None:
            _Patch.exit()


@contextlib.asynccontextmanager
async def running_client(fake: FakeDiscord, intents: discord.Intents | None = None,
                         **kwargs: Any) -> AsyncIterator[discord.Client]:
    client = await connect_client(fake, intents, **kwargs)
    try:
        yield client
    finally:
        await close_client(client)
