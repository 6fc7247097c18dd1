"""Self-tests of the fake Discord (tests/fakes/discord_server.py), driven with the real discord.py 2.7
Client (REST, gateway, interactions, app commands) and, for wire details, with plain aiohttp."""

from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from tests.fakes.discord_server import (
    FakeDiscord,
    close_client,
    connect_client,
    eventually,
    running_client,
)

TOKEN = "test-discord-token"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def intents(*, message_content: bool = True) -> discord.Intents:
    chosen = discord.Intents.default()
    chosen.message_content = message_content
    return chosen


def recording_client(seen: list[discord.Message], *, message_content: bool = True,
                     **kwargs: Any) -> discord.Client:
    chosen = intents(message_content=message_content)
    client = discord.Client(intents=chosen, guild_ready_timeout=0.1, **kwargs)

    @client.event
    async def on_message(message: discord.Message) -> None:
        seen.append(message)

    return client


def find(seen: list[discord.Message], message_id: str | int) -> discord.Message | None:
    return next((m for m in seen if m.id == int(message_id)), None)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as server:
        yield server
    # no test may leave discord.py pointed at a dead fake
    assert Route.BASE == "https://discord.com/api/v10"
    assert str(DiscordWebSocket.DEFAULT_GATEWAY) == "wss://gateway.discord.gg/"


async def test_rest_auth_content_type_and_unknown_routes(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.api_base}/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}) as res:
            assert res.status == 200 and res.headers["Content-Type"] == "application/json"
            body = await res.json()
        assert body["url"] == fake.gateway_url and body["shards"] == 1
        assert body["session_start_limit"]["max_concurrency"] == 1
        async with http.get(f"{fake.api_base}/users/@me") as res:
            assert res.status == 401 and await res.json() == {"message": "401: Unauthorized", "code": 0}
        async with http.get(f"{fake.api_base}/nope", headers={"Authorization": f"Bot {TOKEN}"}) as res:
            assert res.status == 404 and await res.json() == {"message": "Unknown route", "code": 0}
        fake.rate_limit_next("GET", "/users/@me", retry_after=0.25)
        async with http.get(f"{fake.api_base}/users/@me", headers={"Authorization": f"Bot {TOKEN}"}) as res:
            assert res.status == 429 and res.headers["Via"] and res.headers["Retry-After"] == "1"
            assert res.headers["X-RateLimit-Remaining"] == "0"
            assert res.headers["X-RateLimit-Reset-After"] == "0.250"
            assert await res.json() == {"message": "You are being rate limited.", "retry_after": 0.25,
                                        "global": False}
    assert [c.path for c in fake.unknown_calls] == ["/nope"]
    assert [c.status for c in fake.calls] == [200, 401, 404, 429]
    assert fake.calls[0].headers["authorization"] == f"Bot {TOKEN}"
    assert "authorization" not in fake.calls[1].headers


async def test_gateway_wire_zlib_stream_and_plain_text(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fake.gateway_url}?v=10&encoding=json&compress=zlib-stream") as ws:
            inflate, frames = zlib.decompressobj(), []
            await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {}}})
            while len(frames) < 3:  # HELLO, READY, GUILD_CREATE
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.BINARY and msg.data.endswith(b"\x00\x00\xff\xff")
                frames.append(json.loads(inflate.decompress(msg.data)))
            await ws.send_json({"op": 1, "d": 2})
            ack = json.loads(inflate.decompress((await ws.receive()).data))
        async with http.ws_connect(f"{fake.gateway_url}?v=10&encoding=json") as ws:
            hello = await ws.receive()
            await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 1}})
            closed = await ws.receive()
    assert frames[0]["op"] == 10 and frames[0]["d"]["heartbeat_interval"] == 1000
    assert [(f["t"], f["s"]) for f in frames[1:]] == [("READY", 1), ("GUILD_CREATE", 2)]
    ready = frames[1]["d"]
    assert ready["resume_gateway_url"] == fake.gateway_url
    assert ready["guilds"] == [{"id": "1000", "unavailable": True}]
    assert ack["op"] == 11
    assert hello.type is aiohttp.WSMsgType.TEXT and json.loads(hello.data)["op"] == 10
    assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4004
    assert fake.identifies[0]["intents"] == 513


async def test_connect_identify_ready_and_guild_state(fake: FakeDiscord) -> None:
    async with running_client(fake, intents()) as client:
        assert Route.BASE == fake.api_base
        identify = fake.identifies[-1]
        assert identify["intents"] == intents().value and identify["token"] == TOKEN
        assert fake.gateway_connects[-1] == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
        guild = client.get_guild(1000)
        assert guild is not None and guild.name == "Studio" and guild.filesize_limit == 10 * 1024 * 1024
        assert guild.me is not None and client.user is not None and client.user.id == 9000
        assert {c.name for c in guild.text_channels} == {"design", "no-threads"}
        assert guild.get_role(3000).name == "Art Director" and guild.default_role.id == 1000
        assert client.application_id == 9000
        assert [c.path for c in fake.calls] == ["/users/@me", "/oauth2/applications/@me"]
    assert not fake.unknown_calls


async def test_on_message_then_send_file_with_view_and_edit(fake: FakeDiscord) -> None:
    seen: list[discord.Message] = []
    async with running_client(fake, client=recording_client(seen)):
        payload = await fake.user_message("2000", "501", "make it blue",
                                          attachments=[("ref.png", PNG, "image/png")])
        msg = await eventually(lambda: find(seen, payload["id"]))
        assert msg.content == "make it blue" and isinstance(msg.channel, discord.TextChannel)
        assert isinstance(msg.author, discord.Member)
        assert [r.name for r in msg.author.roles] == ["@everyone", "Art Director"]
        assert msg.attachments[0].filename == "ref.png" and msg.attachments[0].size == len(PNG)

        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="Undo", custom_id="undo:1"))
        file = discord.File(io.BytesIO(PNG), "edited image.png")
        sent = await msg.channel.send("here", file=file, view=view)
        stored = fake.messages["2000"][-1]
        assert stored["id"] == str(sent.id) and stored["content"] == "here"
        att = stored["attachments"][0]
        assert att["filename"] == "edited_image.png" and att["content_type"] == "image/png"
        assert fake.uploaded[att["id"]] == PNG and sent.attachments[0].url == att["url"]
        assert stored["components"][0]["components"][0]["custom_id"] == "undo:1"
        call = fake.calls_to("POST", "/channels/2000/messages")[-1]
        assert call.files[0][:2] == ("files[0]", "edited image.png") and call.json["content"] == "here"
        # as on Discord, the bot receives its own message too
        assert (await eventually(lambda: find(seen, sent.id))).author.id == 9000

        edited = await sent.edit(content="v2", view=None)
        assert edited.content == "v2" and fake.messages["2000"][-1]["components"] == []
        assert fake.messages["2000"][-1]["attachments"] == [att]  # kept: edit sent it back by id
        reply = await msg.reply("on it")
        assert reply.reference is not None and reply.reference.message_id == msg.id
        assert fake.messages["2000"][-1]["type"] == 19
        with pytest.raises(discord.HTTPException) as info:
            await msg.channel.send("x" * 2001)
        assert info.value.status == 400 and info.value.code == 50035
    assert not fake.unknown_calls


async def test_thread_from_message_then_thread_message(fake: FakeDiscord) -> None:
    seen: list[discord.Message] = []
    async with running_client(fake, client=recording_client(seen)) as client:
        root = await client.get_channel(2000).send("root")
        thread = await root.create_thread(name="Edit session")
        assert thread.id == root.id and thread.parent_id == 2000
        assert fake.threads[str(root.id)]["type"] == 11 and fake.threads[str(root.id)]["parent_id"] == "2000"
        await eventually(lambda: client.get_channel(thread.id))  # THREAD_CREATE reached the cache
        payload = await fake.user_message(str(thread.id), "502", "more contrast")
        msg = await eventually(lambda: find(seen, payload["id"]))
        assert isinstance(msg.channel, discord.Thread) and msg.channel.parent_id == 2000
        assert isinstance(msg.author, discord.Member) and msg.author.name == "bob"
        async with msg.channel.typing():
            await msg.channel.send("on it")
        assert fake.typing == [str(thread.id)]
        assert [m["content"] for m in fake.messages[str(thread.id)]] == ["more contrast", "on it"]
        assert [m.content async for m in msg.channel.history(limit=10)] == ["on it", "more contrast"]
        starter = await client.get_channel(2000).fetch_message(root.id)
        assert starter.flags.has_thread and starter.thread is not None and starter.thread.id == thread.id
    # a restarted bot learns active threads from GUILD_CREATE...
    async with running_client(fake, client=recording_client(seen)) as client:
        assert isinstance(client.get_channel(thread.id), discord.Thread)
        await fake.archive_thread(str(thread.id))
        await eventually(lambda: client.get_channel(thread.id) is None)
    # ...but not archived ones: a new message unarchives it, and THREAD_UPDATE comes first
    async with running_client(fake, client=recording_client(seen)) as client:
        assert client.get_channel(thread.id) is None
        payload = await fake.user_message(str(thread.id), "501", "back again")
        msg = await eventually(lambda: find(seen, payload["id"]))
        assert isinstance(msg.channel, discord.Thread) and not msg.channel.archived


async def test_thread_creation_forbidden_in_no_threads_channel(fake: FakeDiscord) -> None:
    async with running_client(fake, intents()) as client:
        channel = client.get_channel(2001)
        assert not channel.permissions_for(channel.guild.me).create_public_threads
        root = await channel.send("root")
        with pytest.raises(discord.Forbidden) as info:
            await root.create_thread(name="nope")
        assert info.value.code == 50013 and str(root.id) not in fake.threads
        fake.allow_threads("2001", True)
        await eventually(lambda: channel.permissions_for(channel.guild.me).create_public_threads)
        assert (await root.create_thread(name="now")).id == root.id


async def test_raw_reaction_for_uncached_message(fake: FakeDiscord) -> None:
    old = await fake.user_message("2000", "501", "from before the restart")  # nobody connected yet
    raw: list[discord.RawReactionActionEvent] = []
    rich: list[discord.Reaction] = []
    client = discord.Client(intents=intents(), guild_ready_timeout=0.1)

    @client.event
    async def on_raw_reaction_add(payload: discord.RawReactionActionEvent) -> None:
        raw.append(payload)

    @client.event
    async def on_raw_reaction_remove(payload: discord.RawReactionActionEvent) -> None:
        raw.append(payload)

    @client.event
    async def on_reaction_add(reaction: discord.Reaction, user: discord.Member) -> None:
        rich.append(reaction)  # needs the message in the cache, which a restarted bot lacks

    async with running_client(fake, client=client):
        added = await fake.add_reaction("2000", old["id"], "501", "👍")
        await eventually(lambda: raw)
        assert raw[0].message_id == int(old["id"]) and raw[0].emoji.name == "👍" and raw[0].user_id == 501
        assert raw[0].member is not None and [r.id for r in raw[0].member.roles] == [1000, 3000]
        assert raw[0].message_author_id == 501 and added["guild_id"] == "1000" and not rich
        await fake.remove_reaction("2000", old["id"], "501", "👍")
        await eventually(lambda: len(raw) == 2 and raw[1].event_type == "REACTION_REMOVE")
        await client.get_channel(2000).get_partial_message(int(old["id"])).add_reaction("✅")
        assert fake.calls_to("PUT", r"/channels/2000/messages/\d+/reactions/✅/@me")[-1].status == 204
        assert fake.messages["2000"][0]["reactions"][0]["me"] is True


async def test_button_click_on_fresh_client_defer_and_ephemeral_followup(fake: FakeDiscord) -> None:
    clicks: list[tuple[int, discord.Interaction]] = []

    class UndoButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"session:(?P<id>\d+):undo"):
        def __init__(self, session_id: int) -> None:
            super().__init__(discord.ui.Button(label="Undo", custom_id=f"session:{session_id}:undo"))
            self.session_id = session_id

        @classmethod
        async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                                 match: re.Match[str], /) -> UndoButton:
            return cls(int(match["id"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.followup.send("undone", ephemeral=True)
            await interaction.edit_original_response(content="result (undone)", view=None)
            clicks.append((self.session_id, interaction))

    async with running_client(fake, intents()) as first:
        view = discord.ui.View(timeout=None)
        view.add_item(UndoButton(42))
        sent = await first.get_channel(2000).send("result", view=view)
    message = fake.messages["2000"][-1]

    fresh = discord.Client(intents=intents(), guild_ready_timeout=0.1)
    fresh.add_dynamic_items(UndoButton)
    async with running_client(fake, client=fresh):
        click = await fake.click_button(message, "session:42:undo", "501")
        session_id, interaction = await eventually(lambda: clicks and clicks[0])
    assert session_id == 42 and interaction.message is not None and interaction.message.id == sent.id
    assert isinstance(interaction.user, discord.Member) and interaction.user.get_role(3000) is not None
    callbacks = [r for r in fake.interaction_responses if r["interaction_id"] == click["id"]]
    assert [(r["type"], r["data"]) for r in callbacks] == [(6, {})]
    followup = fake.messages["2000"][-1]
    assert followup["content"] == "undone" and followup["flags"] == 64
    # after a deferred update, @original is the message the button is on
    assert message["content"] == "result (undone)" and message["components"] == []
    assert [r["kind"] for r in fake.responses_to(click)] == ["callback", "followup", "edit"]
    assert fake.calls_to("POST", r"/interactions/\d+/.+/callback")[0].query == {"with_response": "1"}
    assert not fake.unknown_calls


async def test_persistent_view_send_message_with_response(fake: FakeDiscord) -> None:
    results: list[discord.InteractionCallbackResponse[discord.Client]] = []
    seen: list[discord.Message] = []

    class Approve(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="Approve", custom_id="approve")
        async def approve(self, interaction: discord.Interaction, button: discord.ui.Button[Approve]) -> None:
            file = discord.File(io.BytesIO(PNG), "ok.png")
            results.append(await interaction.response.send_message("approved", file=file, ephemeral=True))

    client = recording_client(seen)
    client.add_view(Approve())
    async with running_client(fake, client=client) as ready:
        await ready.get_channel(2000).send("approve?", view=Approve())
        click = await fake.click_button(fake.messages["2000"][-1], "approve", "502")
        result = await eventually(lambda: results and results[0])
        shown = fake.messages["2000"][-1]
        assert result.type is discord.InteractionResponseType.channel_message
        assert result.message_id == int(shown["id"]) and result.is_ephemeral()
        assert isinstance(result.resource, discord.InteractionMessage)
        assert result.resource.content == "approved"
        assert shown["flags"] == 64 and shown["interaction_metadata"]["id"] == click["id"]
        assert fake.uploaded[shown["attachments"][0]["id"]] == PNG  # a multipart callback
        assert fake.interaction_responses[-1]["files"][0][:2] == ("files[0]", "ok.png")
        # ephemeral messages never go out over the gateway
        await fake.user_message("2000", "501", "marker")
        await eventually(lambda: any(m.content == "marker" for m in seen))
        assert not find(seen, shown["id"])


async def test_update_message_response_edits_the_clicked_message(fake: FakeDiscord) -> None:
    client = discord.Client(intents=intents(), guild_ready_timeout=0.1)
    done: list[bool] = []

    class Pick(discord.ui.View):
        @discord.ui.button(label="Pick", custom_id="pick")
        async def pick(self, interaction: discord.Interaction, button: discord.ui.Button[Pick]) -> None:
            await interaction.response.edit_message(content="picked", view=None)
            done.append(True)

    client.add_view(Pick(timeout=None))
    async with running_client(fake, client=client) as ready:
        sent = await ready.get_channel(2000).send("choose", view=Pick(timeout=None))
        click = await fake.click_button(fake.messages["2000"][-1], "pick", "501")
        await eventually(lambda: done)
        assert (await ready.get_channel(2000).fetch_message(sent.id)).content == "picked"
    assert fake.responses_to(click)[0]["type"] == 7 and fake.messages["2000"][-1]["components"] == []


async def test_interaction_deadline_expired(fake: FakeDiscord) -> None:
    errors: list[Exception] = []
    client = discord.Client(intents=intents(), guild_ready_timeout=0.1)

    class Late(discord.ui.View):
        @discord.ui.button(label="Late", custom_id="late")
        async def late(self, interaction: discord.Interaction, button: discord.ui.Button[Late]) -> None:
            try:
                await interaction.response.defer()
            except discord.NotFound as exc:
                errors.append(exc)

    client.add_view(Late(timeout=None))
    fake.callback_deadline = -1.0  # every answer is already too late
    async with running_client(fake, client=client) as ready:
        await ready.get_channel(2000).send("late", view=Late(timeout=None))
        await fake.click_button(fake.messages["2000"][-1], "late", "501")
        error = await eventually(lambda: errors and errors[0])
    assert isinstance(error, discord.NotFound) and error.code == 10062


async def test_slash_command_with_attachment_and_tree_sync(fake: FakeDiscord) -> None:
    got: list[tuple[str, str, bytes]] = []
    client = discord.Client(intents=intents(), guild_ready_timeout=0.1)
    tree = app_commands.CommandTree(client)

    @tree.command(name="edit", description="Edit an image")
    async def edit(interaction: discord.Interaction, prompt: str, image: discord.Attachment) -> None:
        await interaction.response.defer(thinking=True)
        got.append((prompt, image.filename, await image.read()))
        await interaction.followup.send("done", file=discord.File(io.BytesIO(PNG), "out.png"))

    async with running_client(fake, client=client):
        synced = await tree.sync()
        assert fake.command_puts == 1 and [c["name"] for c in fake.commands] == ["edit"]
        assert synced[0].id == int(fake.commands[0]["id"])
        assert [o["type"] for o in fake.commands[0]["options"]] == [3, 11]
        tree.copy_global_to(guild=discord.Object(1000))
        await tree.sync(guild=discord.Object(1000))
        assert [c.get("guild_id") for c in fake.commands] == [None, "1000"] and fake.command_puts == 2
        assert await tree.sync() == synced  # re-syncing keeps the ids
        ix = await fake.slash_command("2000", "501", "edit", {"prompt": "bluer"},
                                      attachment=("in.png", PNG, "image/png"))
        await eventually(lambda: len(fake.responses_to(ix)) == 2)
    assert got == [("bluer", "in.png", PNG)] and ix["data"]["guild_id"] == "1000"  # the guild copy ran
    callback, followup = fake.responses_to(ix)
    assert callback["type"] == 5 and callback["data"] == {}
    # the first followup after a "thinking" defer replaces the loading message
    assert followup["message"]["flags"] == 0 and followup["message"]["content"] == "done"
    assert fake.messages["2000"][-1]["id"] == followup["message"]["id"]
    assert fake.uploaded[followup["message"]["attachments"][0]["id"]] == PNG
    download = [c for c in fake.calls if c.route == "cdn"]
    assert download[0].path.startswith("/ephemeral-attachments/9000/")
    assert "authorization" not in download[0].headers
    await fake.aclose()  # idempotent, and fake.commands stays inspectable
    assert ix["data"]["resolved"]["attachments"][ix["data"]["options"][1]["value"]]["ephemeral"] is True


async def test_rate_limited_request_is_retried(fake: FakeDiscord) -> None:
    async with running_client(fake, intents()) as client:
        fake.rate_limit_next("POST", "/channels/2000/messages", retry_after=0.05)
        sent = await client.get_channel(2000).send("hello")
    calls = fake.calls_to("POST", "/channels/2000/messages")
    assert [c.status for c in calls] == [429, 200] and calls[0].json == calls[1].json
    assert fake.messages["2000"][-1]["id"] == str(sent.id)


async def test_attachment_read_goes_to_cdn_without_token(fake: FakeDiscord) -> None:
    seen: list[discord.Message] = []
    async with running_client(fake, client=recording_client(seen)):
        payload = await fake.user_message("2000", "502", "see", attachments=[("ref.png", PNG, None)])
        msg = await eventually(lambda: find(seen, payload["id"]))
        assert msg.attachments[0].content_type == "image/png"
        assert await msg.attachments[0].read() == PNG
    cdn = [c for c in fake.calls if c.route == "cdn"]
    assert len(cdn) == 1 and cdn[0].path == payload["attachments"][0]["url"].removeprefix(fake.base_url)
    assert "authorization" not in cdn[0].headers
    assert all(c.headers["authorization"] == f"Bot {TOKEN}" for c in fake.calls if c.route != "cdn")


async def test_without_message_content_intent_only_mentions_keep_content(fake: FakeDiscord) -> None:
    seen: list[discord.Message] = []
    async with running_client(fake, client=recording_client(seen, message_content=False)):
        plain = await fake.user_message("2000", "501", "secret", attachments=[("a.png", PNG, "image/png")])
        mention = await fake.user_message("2000", "501", "hello", mention_bot=True)
        blank, kept = await eventually(lambda: find(seen, plain["id"]) and find(seen, mention["id"])
                                       and (find(seen, plain["id"]), find(seen, mention["id"])))
    assert blank.content == "" and blank.attachments == []
    assert kept.content == "<@9000> hello" and [u.id for u in kept.mentions] == [9000]
    assert fake.identifies[-1]["intents"] & (1 << 15) == 0
    # and a session that has the intent gets it blanked when the app lacks it
    async with running_client(fake, client=recording_client(seen)):
        denied = await fake.user_message("2000", "501", "secret", message_content_intent=False)
        assert (await eventually(lambda: find(seen, denied["id"]))).content == ""


async def test_disconnect_then_resume_replays_missed_event_once(fake: FakeDiscord) -> None:
    seen: list[discord.Message] = []
    resumed: list[bool] = []
    client = recording_client(seen)

    @client.event
    async def on_resumed() -> None:
        resumed.append(True)

    async with running_client(fake, client=client):
        await fake.disconnect_all()
        missed = await fake.user_message("2000", "501", "while you were away")
        await eventually(lambda: resumed)
        after = await fake.user_message("2000", "501", "after the resume")
        await eventually(lambda: find(seen, after["id"]))  # everything before it has arrived by now
        assert [m.id for m in seen].count(int(missed["id"])) == 1
        assert len(fake.identifies) == 1 and fake.resumes[0]["session_id"]
        await fake.wait_connected()


async def test_invalidated_session_identifies_again(fake: FakeDiscord) -> None:
    seen: list[discord.Message] = []
    client = recording_client(seen)

    async def identify_now(shard_id: int | None, *, initial: bool = False) -> None:
        pass  # the default hook sleeps 5 s before every IDENTIFY but the first

    client.before_identify_hook = identify_now  # type: ignore[method-assign]
    async with running_client(fake, client=client):
        await fake.disconnect_all(code=4009)  # "session timed out": the RESUME gets op 9, d=false
        await eventually(lambda: len(fake.identifies) == 2)
        await fake.wait_connected()
        payload = await fake.user_message("2000", "501", "hello again")
        await eventually(lambda: find(seen, payload["id"]))
    assert len(fake.resumes) == 1


async def test_interaction_endpoints_reject_misuse(fake: FakeDiscord) -> None:
    async with running_client(fake, intents()) as client:
        await client.get_channel(2000).send("pick", view=_single_button("pick"))
    click = await fake.click_button(fake.messages["2000"][-1], "pick", "502")  # nobody is connected
    callback = f"{fake.api_base}/interactions/{click['id']}/{click['token']}/callback"
    followup = f"{fake.api_base}/webhooks/9000/{click['token']}"
    async with aiohttp.ClientSession() as http:
        async with http.post(followup, json={"content": "too early"}) as res:
            assert res.status == 404 and (await res.json())["code"] == 10015
        async with http.post(callback, json={"type": 6}) as res:
            assert res.status == 204  # no Authorization needed: the token in the path is the credential
        async with http.post(callback, json={"type": 6}) as res:
            assert res.status == 400 and (await res.json())["code"] == 40060
        async with http.post(f"{fake.api_base}/interactions/1/nope/callback", json={"type": 6}) as res:
            assert res.status == 404 and (await res.json())["code"] == 10062
        async with http.get(f"{followup}/messages/@original") as res:
            assert res.status == 200 and (await res.json())["content"] == "pick"


def _single_button(custom_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label=custom_id, custom_id=custom_id))
    return view


async def test_wrong_token_fails_login(fake: FakeDiscord) -> None:
    fake.token = "not-the-one-the-client-uses"  # connect_client sends fake.token: change it behind its back
    client = discord.Client(intents=intents())
    original = client.start

    async def start_with_stale_token(token: str, *, reconnect: bool = True) -> None:
        await original(TOKEN, reconnect=reconnect)

    client.start = start_with_stale_token  # type: ignore[method-assign]
    with pytest.raises(discord.LoginFailure):
        await connect_client(fake, client=client)
    assert [c.status for c in fake.calls] == [401]
    await close_client(client)  # harmless after connect_client already cleaned up


async def test_privileged_intent_not_enabled_in_portal(fake: FakeDiscord) -> None:
    fake.disallowed_intents = discord.Intents(message_content=True).value
    with pytest.raises(discord.PrivilegedIntentsRequired):
        await connect_client(fake, intents())
    assert fake.identifies[-1]["intents"] == intents().value


async def test_upload_over_the_guild_limit_is_rejected(fake: FakeDiscord) -> None:
    async with running_client(fake, intents()) as client:
        big = discord.File(io.BytesIO(b"\0" * (10 * 1024 * 1024 + 1)), "big.png")
        with pytest.raises(discord.HTTPException) as info:
            await client.get_channel(2000).send(file=big)
    assert info.value.status == 413 and info.value.code == 40005
