"""A fake of Slack's Web API (plus files.slack.com) for the real slack_sdk / slack_bolt clients.

Served by a real aiohttp server on 127.0.0.1 (random port)::

    async with FakeSlack() as fake:
        client = AsyncWebClient(token="xoxb-test-token", base_url=fake.api_url)
        await client.files_upload_v2(channel="C1", thread_ts=ts, content=png, filename="out.png")
        fake.messages_in_thread("C1", ts)[-1]["files"][0]["id"] in fake.uploads

Like Slack: errors are HTTP 200 `{"ok": false, "error": ...}` (`not_authed`/`invalid_auth` first);
a `rate_limit_next` entry gives the next call one 429 + Retry-After; args may come as query string,
form or JSON (merged); `url_private` serves bytes only with `Authorization: Bearer <bot token>`, else
a 200 HTML sign-in page. files_upload_v2 = files.getUploadURLExternal -> POST raw bytes to upload_url
(no token) -> files.completeUploadExternal (query-string args, `files` a JSON string), whose file
objects still have empty `shares` (Slack shares asynchronously); the posted message and files.info
show the share.

Socket Mode: `apps.connections.open` (app token only) hands out `ws://.../link` (or `socket_url`
when set, e.g. a closed port); the socket says `hello`, `socket_send` pushes an envelope (to every
open socket, or to one of them: several processes may each hold one) and `socket_acks` records
each envelope's ack. `refused_tokens` maps a token to the error every method gives it
(`token_revoked`, `account_inactive`, ...). `add_connect_file` makes a Slack Connect file: events
carry a stub, files.info the object (`file_info_errors` makes it fail).
"""

from __future__ import annotations

import asyncio
import copy
import json
import mimetypes
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any
from urllib.parse import quote

from aiohttp import web

Json = dict[str, Any]

SIGN_IN_PAGE = (
    '<!DOCTYPE html>\n<html lang="en-US"><head><meta charset="utf-8"><title>Slack</title></head><body>'
    '<h1>Sign in to Slack</h1><form id="signin_form" action="/signin" method="post"></form></body></html>\n'
)


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]  # query string + form fields + JSON body, merged
    headers: dict[str, str]  # names lower-cased
    status: int


@dataclass
class UploadedFile:
    id: str
    filename: str
    title: str
    content: bytes
    channel: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    blocks: list[Json] | None = None
    completed: bool = False  # files.completeUploadExternal has been called for it


@dataclass
class FileDownload:
    path: str
    authorization: str | None


class SlackError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.body: Json = {"ok": False, "error": error, **extra}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _filetype(filename: str) -> str:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "binary"
    return {"jpeg": "jpg", "txt": "text"}.get(ext, ext)


def _ts_key(ts: str) -> tuple[int, int]:
    secs, _, micros = ts.partition(".")
    return int(secs or 0), int((micros or "0").ljust(6, "0")[:6])


class FakeSlack:
    def __init__(
        self, bot_token: str = "xoxb-test-token", *, bot_user_id: str = "UBOT", team_id: str = "T1",
        app_token: str = "xapp-1-test-app-token",
    ) -> None:
        self.bot_token, self.bot_user_id, self.team_id = bot_token, bot_user_id, team_id
        self.app_token = app_token
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_acks: dict[str, Json] = {}  # envelope id -> the ack the app sent
        self._socket_open = asyncio.Event()
        self.bot_id = "B" + bot_user_id.lstrip("UW")
        self.api_url = ""
        self.files_origin = ""
        self.calls: list[ApiCall] = []
        self.messages: dict[str, list[Json]] = {}
        self.uploads: dict[str, UploadedFile] = {}
        self.ephemerals: list[Json] = []
        self.reactions: list[Json] = []  # {"action": "add"|"remove", "channel", "timestamp", "name"}
        self.users: dict[str, Json] = {}  # user id -> users.info "user" object overrides
        self.rate_limit_next: dict[str, float] = {}
        self.refused_tokens: dict[str, str] = {}  # token -> the error Slack gives it (token_revoked, ...)
        self.socket_url: str | None = None  # what apps.connections.open hands out, when set
        self.file_info_errors: dict[str, str] = {}  # file id -> the error files.info gives it
        self.file_downloads: list[FileDownload] = []
        self._files: dict[str, Json] = {}  # file id -> Slack file object (completed or add_file)
        self._contents: dict[str, bytes] = {}
        self._login_pages: set[str] = set()
        self._pending: dict[str, Json] = {}  # upload key -> {"id", "filename", "length", "alt_txt"}
        self._reaction_set: set[tuple[str, str, str]] = set()
        self._last_us = 0  # last ts handed out, in microseconds
        self._next_id = 0
        self._runner: web.AppRunner | None = None
        self._handlers: dict[str, Callable[[Json], Awaitable[Json]]] = {
            "auth.test": self._auth_test, "chat.postMessage": self._post_message,
            "chat.update": self._update, "chat.postEphemeral": self._post_ephemeral,
            "reactions.add": partial(self._react, "add"), "reactions.remove": partial(self._react, "remove"),
            "files.getUploadURLExternal": self._get_upload_url, "files.info": self._files_info,
            "files.completeUploadExternal": self._complete_upload, "users.info": self._users_info,
            "conversations.replies": self._replies, "apps.connections.open": self._connections_open,
        }

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/v1/{key}", self._upload)
        app.router.add_get("/files-pri/{team_file}/{tail:.+}", self._download)
        app.router.add_get("/link", self._socket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.files_origin = f"http://127.0.0.1:{port}"
        self.api_url = f"{self.files_origin}/api/"

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- test helpers -------------------------------------------------------------------------
    def add_file(
        self, content: bytes, *, filename: str = "ref.png", mimetype: str = "image/png",
        file_id: str | None = None, login_page: bool = False,
    ) -> Json:
        """A file someone shared: returns its Slack file object, downloadable from files_origin."""
        fid = file_id or self._new_id("F")
        obj = self._file_object(fid, filename, filename, mimetype, len(content), user="UUSER")
        self._files[fid], self._contents[fid] = obj, content
        if login_page:
            self._login_pages.add(fid)
        return dict(obj)

    def add_connect_file(
        self, content: bytes, *, filename: str = "ref.png", mimetype: str = "image/png",
        file_id: str | None = None, other_team: str = "T0OTHERORG",
    ) -> Json:
        """A file shared from a Slack Connect channel (another organisation's). Events carry only
        the stub returned here, shaped as recorded (../shared/real/slack/s03_...): no name, no
        URL, `file_access: check_file_info`. files.info gives the full object, downloadable."""
        obj = self.add_file(content, filename=filename, mimetype=mimetype, file_id=file_id)
        self._files[obj["id"]].update(user="U0OTHERUSER", user_team=other_team,
                                      source_team=other_team, is_external=False)
        return {"id": obj["id"], "mode": "file_access", "file_access": "check_file_info",
                "created": 0, "timestamp": 0, "user": ""}

    def add_message(
        self, channel: str, text: str = "", *, user: str = "UUSER", thread_ts: str | None = None,
        ts: str | None = None, files: list[Json] | None = None,
    ) -> Json:
        """Seed a message someone else posted (e.g. a thread parent), so conversations.replies has it."""
        return self._store(channel, text=text, blocks=None, thread_ts=thread_ts, user=user,
                           files=files, ts=ts, subtype="file_share" if files else None)

    def messages_in_thread(self, channel: str, thread_ts: str) -> list[Json]:
        found = [m for m in self.messages.get(channel, [])
                 if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]
        return sorted(found, key=lambda m: _ts_key(m["ts"]))

    # ---- plumbing -----------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        self._next_id += 1
        return f"{prefix}{self._next_id:010d}"

    def _new_ts(self) -> str:
        self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
        return f"{self._last_us // 10**6}.{self._last_us % 10**6:06d}"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, extra_headers = 200, {}
        try:
            args = await self._parse_args(request)
        except ValueError:
            args, body = {}, {"ok": False, "error": "invalid_json"}
        else:
            body = await self._dispatch(method, args, headers)
        if "retry_after" in body:  # Slack: HTTP 429 + Retry-After header, body {"ok": false, ...}
            status, extra_headers = 429, {"Retry-After": body.pop("retry_after")}
        self.calls.append(ApiCall(method, args, headers, status))
        return web.json_response(body, status=status, headers=extra_headers)

    async def _parse_args(self, request: web.Request) -> Json:
        args: Json = dict(request.query)
        if not request.body_exists:
            return args
        if request.content_type == "application/json":
            body = json.loads(await request.text() or "{}")  # JSONDecodeError is a ValueError
            if not isinstance(body, dict):
                raise ValueError("JSON body is not an object")
            args.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            for key, value in (await request.post()).items():
                args[key] = value if isinstance(value, str) else f"<file {value.filename}>"
        return args

    async def _dispatch(self, method: str, args: Json, headers: dict[str, str]) -> Json:
        handler = self._handlers.get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method", "req_method": method}
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else _text(args.get("token"))
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token in self.refused_tokens:
            return {"ok": False, "error": self.refused_tokens[token]}
        # apps.connections.open takes the app-level token and nothing else, as on Slack.
        if token != (self.app_token if method == "apps.connections.open" else self.bot_token):
            return {"ok": False, "error": "invalid_auth"}
        if method in self.rate_limit_next:
            seconds = self.rate_limit_next.pop(method)
            return {"ok": False, "error": "ratelimited", "retry_after": f"{seconds:g}"}
        try:
            return {"ok": True, **await handler(args)}
        except SlackError as e:
            return e.body

    def _channel(self, args: Json) -> str:
        if not (channel := _text(args.get("channel")).strip()):
            raise SlackError("channel_not_found")
        return channel

    def _find(self, channel: str, ts: str) -> Json | None:
        return next((m for m in self.messages.get(channel, []) if m["ts"] == ts), None)

    def _store(
        self, channel: str, *, text: str, blocks: list[Json] | None, thread_ts: str | None,
        user: str | None = None, files: list[Json] | None = None, ts: str | None = None,
        subtype: str | None = None,
    ) -> Json:
        if ts:  # a seeded message: later ones must still sort after it
            secs, micros = _ts_key(ts)
            self._last_us = max(self._last_us, secs * 10**6 + micros)
        msg: Json = {"ts": ts or self._new_ts(), "thread_ts": thread_ts or None, "text": text,
                     "blocks": blocks, "user": user or self.bot_user_id, "files": list(files or [])}
        if subtype:
            msg["subtype"] = subtype
        self.messages.setdefault(channel, []).append(msg)
        parent = self._find(channel, thread_ts) if thread_ts else None
        if parent is not None and parent is not msg:  # Slack marks the parent as a thread root
            parent["thread_ts"] = thread_ts
            parent["reply_count"] = parent.get("reply_count", 0) + 1
            parent["latest_reply"] = msg["ts"]
        return msg

    def _public(self, msg: Json) -> Json:
        out: Json = {"type": "message", "team": self.team_id}
        out.update({k: v for k, v in msg.items() if v is not None and v != []})
        if msg["user"] == self.bot_user_id:
            out["bot_id"] = self.bot_id
        return out

    def _blocks(self, value: Any) -> list[Json] | None:
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise SlackError("invalid_blocks_format") from None
        if not isinstance(value, list):
            raise SlackError("invalid_blocks_format")
        problems: list[str] = []
        if len(value) > 50:
            problems.append("no more than 50 items allowed [json-pointer:/blocks]")
        for i, block in enumerate(value):
            self._check_block(block, f"/blocks/{i}", problems)
        if problems:
            raise SlackError("invalid_blocks", errors=problems,
                             response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
        return value

    def _check_block(self, block: Any, where: str, problems: list[str]) -> None:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"missing required field: type [json-pointer:{where}]")
            return
        if block["type"] == "image":
            has_url, slack_file = "image_url" in block, block.get("slack_file")
            if has_url == (slack_file is not None):
                problems.append(f"must provide exactly one of image_url or slack_file [json-pointer:{where}]")
            elif slack_file is not None and not (
                isinstance(slack_file, dict) and ("id" in slack_file) != ("url" in slack_file)
                and (slack_file.get("id") in self._files or _text(slack_file.get("url")).strip())
            ):
                problems.append(f"invalid slack_file [json-pointer:{where}/slack_file]")
            if not _text(block.get("alt_text")).strip():
                problems.append(f"missing required field: alt_text [json-pointer:{where}]")
        if isinstance(block.get("accessory"), dict):
            self._check_block(block["accessory"], f"{where}/accessory", problems)
        if block["type"] == "context":
            for j, element in enumerate(block.get("elements") or []):
                self._check_block(element, f"{where}/elements/{j}", problems)

    def _file_object(self, fid: str, name: str, title: str, mimetype: str, size: int, *, user: str) -> Json:
        path = f"{self.files_origin}/files-pri/{self.team_id}-{fid}"
        return {
            "id": fid, "created": int(time.time()), "timestamp": int(time.time()), "name": name,
            "title": title, "mimetype": mimetype, "filetype": _filetype(name), "user": user,
            "user_team": self.team_id, "mode": "hosted", "is_external": False, "size": size,
            "url_private": f"{path}/{quote(name)}", "url_private_download": f"{path}/download/{quote(name)}",
            "permalink": f"https://fake-team.slack.com/files/{user}/{fid}/{quote(name)}",
            "channels": [], "groups": [], "ims": [], "shares": {},
        }

    # ---- Web API methods ----------------------------------------------------------------------
    async def _auth_test(self, args: Json) -> Json:
        return {"url": "https://fake-team.slack.com/", "team": "Fake Team", "user": "threadedit",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _content(self, args: Json) -> tuple[str, list[Json] | None]:
        text, blocks = _text(args.get("text")), self._blocks(args.get("blocks"))
        if not text.strip() and not blocks and not args.get("attachments"):
            raise SlackError("no_text")
        if len(text) > 40000:
            raise SlackError("msg_too_long")
        return text, blocks

    async def _post_message(self, args: Json) -> Json:
        channel = self._channel(args)
        text, blocks = self._content(args)
        msg = self._store(channel, text=text, blocks=blocks, thread_ts=_text(args.get("thread_ts")))
        return {"channel": channel, "ts": msg["ts"], "message": self._public(msg)}

    async def _update(self, args: Json) -> Json:
        channel = self._channel(args)
        if (msg := self._find(channel, _text(args.get("ts")))) is None:
            raise SlackError("message_not_found")
        if msg["user"] != self.bot_user_id:
            raise SlackError("cant_update_message")
        text, blocks = _text(args.get("text")), self._blocks(args.get("blocks"))
        if not text.strip() and not blocks and not msg["files"]:
            raise SlackError("no_text")
        msg["text"], msg["blocks"] = text, blocks
        msg["edited"] = {"user": self.bot_user_id, "ts": self._new_ts()}
        return {"channel": channel, "ts": msg["ts"], "text": text, "message": self._public(msg)}

    async def _post_ephemeral(self, args: Json) -> Json:
        channel, user, ts = self._channel(args), _text(args.get("user")), self._new_ts()
        if not user:
            raise SlackError("user_not_found")
        text, blocks = self._content(args)
        self.ephemerals.append({"channel": channel, "user": user, "text": text, "blocks": blocks,
                                "thread_ts": _text(args.get("thread_ts")) or None, "message_ts": ts})
        return {"message_ts": ts}

    async def _react(self, action: str, args: Json) -> Json:
        channel = self._channel(args)
        timestamp, name = _text(args.get("timestamp")), _text(args.get("name")).strip(":")
        if not timestamp:
            raise SlackError("no_item_specified")
        if not name:
            raise SlackError("invalid_name")
        key = (channel, timestamp, name)
        if (action == "add") == (key in self._reaction_set):
            raise SlackError("already_reacted" if action == "add" else "no_reaction")
        self._reaction_set.symmetric_difference_update({key})
        self.reactions.append({"action": action, "channel": key[0], "timestamp": key[1], "name": key[2]})
        return {}

    async def _get_upload_url(self, args: Json) -> Json:
        filename, length = _text(args.get("filename")).strip(), _text(args.get("length"))
        if not filename or not length.isdigit() or int(length) <= 0:
            raise SlackError("invalid_arguments")
        fid, key = self._new_id("F"), secrets.token_urlsafe(12)
        self._pending[key] = {"id": fid, "filename": filename, "length": int(length),
                              "alt_txt": args.get("alt_txt")}
        return {"upload_url": f"{self.files_origin}/upload/v1/{key}", "file_id": fid}

    async def _upload(self, request: web.Request) -> web.Response:
        if (pending := self._pending.get(request.match_info["key"])) is None:
            return web.Response(status=404, text="Not Found")
        if request.content_type == "multipart/form-data":
            parts = [v for v in (await request.post()).values() if not isinstance(v, str)]
            data = parts[0].file.read() if parts else b""
        else:
            data = await request.read()
        if len(data) != pending["length"]:
            return web.Response(status=400, text=f"Length mismatch: {len(data)} != {pending['length']}")
        fid, name = pending["id"], pending["filename"]
        self.uploads[fid] = UploadedFile(fid, name, name, data)
        return web.Response(text=f"OK - {len(data)}")  # text/plain, as files.slack.com answers

    async def _complete_upload(self, args: Json) -> Json:
        try:
            items = json.loads(args["files"]) if isinstance(args.get("files"), str) else args.get("files")
        except ValueError:
            raise SlackError("invalid_json") from None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise SlackError("invalid_arguments")
        if any(_text(i.get("id")) not in self.uploads for i in items):
            raise SlackError("file_not_found")
        channels = [c for c in [_text(args.get("channel_id"))] + _text(args.get("channels")).split(",") if c]
        thread_ts, comment = _text(args.get("thread_ts")) or None, args.get("initial_comment")
        blocks = self._blocks(args.get("blocks"))
        objects: list[Json] = []
        for item in items:
            up = self.uploads[item["id"]]
            up.title = _text(item.get("title")) or up.filename
            up.channel, up.thread_ts, up.initial_comment = (channels or [None])[0], thread_ts, comment
            up.blocks, up.completed = blocks, True
            mimetype = mimetypes.guess_type(up.filename)[0] or "application/octet-stream"
            obj = self._file_object(up.id, up.filename, up.title, mimetype, len(up.content),
                                    user=self.bot_user_id)
            self._files[up.id], self._contents[up.id] = obj, up.content
            objects.append(obj)
        response_files = copy.deepcopy(objects)  # as on Slack: shares not populated yet
        for channel in channels:
            msg = self._store(channel, text=_text(comment), blocks=blocks, thread_ts=thread_ts,
                              files=objects, subtype="file_share")
            kind = "public" if channel.startswith("C") else "private"
            for obj in objects:
                share = {"ts": msg["ts"], "channel_name": channel, "team_id": self.team_id}
                if thread_ts:
                    share["thread_ts"] = thread_ts
                obj["shares"].setdefault(kind, {}).setdefault(channel, []).append(share)
                obj["channels" if kind == "public" else "groups"].append(channel)
        return {"files": response_files}

    async def _files_info(self, args: Json) -> Json:
        if (error := self.file_info_errors.get(_text(args.get("file")))) is not None:
            raise SlackError(error)
        if (obj := self._files.get(_text(args.get("file")))) is None:
            raise SlackError("file_not_found")
        return {"file": obj, "comments": [], "response_metadata": {"next_cursor": ""}}

    async def _replies(self, args: Json) -> Json:
        channel = self._channel(args)
        found = self.messages_in_thread(channel, _text(args.get("ts")))
        if not found:
            raise SlackError("thread_not_found")
        start = int(_text(args.get("cursor")).removeprefix("idx:") or 0)
        limit = int(_text(args.get("limit")) or 1000)
        page = [self._public(m) for m in found[start:start + limit]]
        more = start + limit < len(found)
        return {"messages": page, "has_more": more,
                "response_metadata": {"next_cursor": f"idx:{start + limit}" if more else ""}}

    async def _users_info(self, args: Json) -> Json:
        uid = _text(args.get("user"))
        if uid[:1] not in ("U", "W") or len(uid) < 2:
            raise SlackError("user_not_found")
        is_bot = uid == self.bot_user_id
        name, real = ("threadedit", "threadedit") if is_bot else (f"user.{uid.lower()}", f"User {uid}")
        user: Json = {"id": uid, "team_id": self.team_id, "name": name, "real_name": real,
                      "deleted": False, "is_bot": is_bot, "tz": "Europe/London",
                      "profile": {"real_name": real, "display_name": name}}
        user.update(self.users.get(uid, {}))
        return {"user": user}

    async def _connections_open(self, args: Json) -> Json:
        if self.socket_url is not None:
            return {"url": self.socket_url}
        return {"url": f"{self.files_origin.replace('http', 'ws', 1)}/link?ticket={secrets.token_hex(8)}"}

    # ---- Socket Mode --------------------------------------------------------------------------
    async def wait_socket(self) -> None:
        await self._socket_open.wait()

    async def socket_send(self, payload: Json, envelope_type: str = "events_api", *,
                          on: int | None = None, retry_attempt: int = 0, retry_reason: str = "") -> str:
        """Push one envelope to every open socket, or only to the `on`-th one opened (Slack sends
        each envelope to one of an app's connections, and an unacknowledged one again, maybe on
        another, with `retry_attempt` counting up); return its envelope id."""
        envelope_id = secrets.token_hex(8)
        envelope = {"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                    "accepts_response_payload": envelope_type != "events_api",
                    "retry_attempt": retry_attempt, "retry_reason": retry_reason}
        for ws in self.sockets if on is None else [self.sockets[on]]:
            await ws.send_json(envelope)
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self.sockets),
                            "debug_info": {"host": "fake-slack"}, "connection_info": {"app_id": "A1"}})
        self._socket_open.set()
        try:
            async for msg in ws:
                if msg.type.name == "TEXT":
                    ack = json.loads(msg.data)
                    self.socket_acks[ack.get("envelope_id", "")] = ack
        finally:
            self.sockets.remove(ws)
        return ws

    # ---- files.slack.com ----------------------------------------------------------------------
    async def _download(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        self.file_downloads.append(FileDownload(request.path, auth))
        team, _, fid = request.match_info["team_file"].partition("-")
        if team != self.team_id or fid not in self._contents:
            return web.Response(status=404, text="Not Found")
        if fid in self._login_pages or auth != f"Bearer {self.bot_token}":
            return web.Response(text=SIGN_IN_PAGE, content_type="text/html", charset="utf-8")
        obj = self._files[fid]
        return web.Response(body=self._contents[fid], content_type=obj["mimetype"])
