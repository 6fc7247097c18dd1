"""Delivering turns from a process that receives nothing (a worker): Slack through the Web API and
Discord through REST, with the bot token only, against the fakes on 127.0.0.1 and a real store. A
turn is recorded through the service as an ingress process records it, run with the offline
engine, and its progress and result go out through the delivery's core."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord.delivery import DiscordDelivery
from adapters.discord.login import DiscordStartError
from adapters.discord.settings import DiscordSettings
from adapters.slack.delivery import SlackDelivery
from adapters.slack.settings import SlackSettings
from adapters.slack.startup import SlackStartError
from bot.app import App, open_app
from bot.chat.text import Text
from bot.config import ConfigError, Settings, load_settings
from bot.deliveries import PROGRESS
from bot.domain import SessionKey, Turn
from tests.discord_harness import ALICE, GUILD
from tests.discord_harness import CHANNEL as DISCORD_CHANNEL
from tests.fakes import discord_payloads as p
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_server import FakeSlack
from tests.processes import free_port
from tests.slack_harness import CHANNEL, ROOT_TS, TOKEN, eventually

BUTTONS = ["Undo", "Retry", "4K", "Approve"]


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return load_settings(THREADEDIT_DATA_DIR=str(data_dir), THREADEDIT_ENGINE="local")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    async with open_app(settings) as opened:
        yield opened


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture(autouse=True)
async def nothing_left_open() -> AsyncIterator[None]:
    """An HTTP session a delivery left open is reported ("Unclosed client session") when collected."""
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: reported.append(str(context.get("message"))))
    yield
    gc.collect()
    assert reported == []


async def progress_posted_by_ingress(app: App, backend: Any, key: SessionKey, turn: Turn) -> str:
    """What the receiving process does when it records a turn: post the queued line, record it."""
    message_id = await backend.post_text(key, Text.of("Queued behind 0 instructions in this thread."))
    await app.deliveries.record_post(key.platform, backend.post_channel(key), message_id,
                                     turn.session_id, turn.id, PROGRESS)
    return str(message_id)


async def deliver(app: App, core: Any, turn: Turn, progress_edited: Callable[[], Any]) -> None:
    """As a worker does: progress while the model runs, then the outcome."""
    await core.turn_started(turn)
    await eventually(progress_edited)  # the progress line says "Working on v1" before the call
    await app.service.run_turn(turn.id)
    await core.turn_finished(await app.service.result_of(turn.id))


# ---- Slack -----------------------------------------------------------------------------------

async def test_slack_delivery_posts_the_version_with_its_buttons_and_records_it(
        app: App, settings: Settings, slack: FakeSlack):
    delivery = SlackDelivery(SlackSettings(SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=slack.api_url), app,
                             progress_interval=0.05)
    try:
        assert await delivery.start() == "Slack delivery (Web API only, as threadedit)"
        key = SessionKey("slack", "T1", CHANNEL, ROOT_TS)
        turn = await app.service.submit_edit(key, "UANA", "a lighthouse at dusk")
        progress = await progress_posted_by_ingress(app, delivery.backend, key, turn)
        await deliver(app, delivery.core, turn, lambda: any(
            c.method == "chat.update" and c.args.get("ts") == progress
            and str(c.args.get("text")).startswith("Working on v1") for c in slack.calls))
    finally:
        await delivery.aclose()
    thread = slack.messages_in_thread(CHANNEL, ROOT_TS)
    [v1] = [m for m in thread if any(b["type"] == "image" for b in m["blocks"] or [])]
    blocks = {b["type"]: b for b in v1["blocks"]}
    [upload] = slack.uploads.values()
    assert blocks["image"]["slack_file"]["id"] == upload.id and upload.completed
    assert upload.content == (await app.service.result_of(turn.id)).image_path.read_bytes()
    assert [e["text"]["text"] for e in blocks["actions"]["elements"]] == BUTTONS
    assert blocks["context"]["elements"][0]["text"] == "*v1* · a lighthouse at dusk · asked by <@UANA>"
    assert next(m for m in thread if m["ts"] == progress)["text"] == "v1 is ready."
    # Only the Web API with the bot token: no Socket Mode connection was asked for.
    assert {c.method for c in slack.calls} == {"auth.test", "chat.postMessage", "chat.update",
                                               "files.getUploadURLExternal",
                                               "files.completeUploadExternal"}
    # Recorded in the store, so a reaction on it is understood by any other process.
    async with open_app(settings) as other:
        found = await other.deliveries.version_post("slack", CHANNEL, v1["ts"])
        assert found is not None and (found.session.key, found.version) == (key, 1)
        assert await other.deliveries.undelivered("slack") == []


async def test_slack_delivery_needs_the_bot_token_only_and_refuses_a_wrong_one(
        app: App, slack: FakeSlack):
    with pytest.raises(ConfigError, match=r"^SLACK_BOT_TOKEN is not set; a worker posts"):
        SlackDelivery(SlackSettings(SLACK_API_URL=slack.api_url), app)
    with pytest.raises(ConfigError, match=r"^SLACK_BOT_TOKEN is an app-level token \(xapp-\); it must"):
        SlackDelivery(SlackSettings(SLACK_BOT_TOKEN="xapp-1-A0-1-abc", SLACK_API_URL=slack.api_url), app)
    assert slack.calls == []
    slack.refused_tokens[TOKEN] = "token_revoked"
    delivery = SlackDelivery(SlackSettings(SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=slack.api_url), app,
                             say=pytest.fail)
    with pytest.raises(SlackStartError) as refused:
        await delivery.start()
    await delivery.aclose()
    assert str(refused.value) == (
        "Slack refused SLACK_BOT_TOKEN (token_revoked): copy the Bot User OAuth Token (xoxb-...) again "
        "from the app's Install App page, and reinstall the app if it was removed.")
    assert [c.method for c in slack.calls] == ["auth.test"]


async def test_slack_delivery_retries_while_slack_is_down_and_stops_when_cancelled(app: App):
    port, lines = free_port(), []
    delivery = SlackDelivery(SlackSettings(SLACK_BOT_TOKEN=TOKEN, SLACK_API_URL=f"http://127.0.0.1:{port}/api/"),
                             app, say=lines.append)
    await cancelled_after_two_retries(delivery.start(), lines)
    await delivery.aclose()
    assert all(line.startswith(f"Slack is unreachable at 127.0.0.1:{port} (auth.test: connection "
                               "refused); check the network") for line in lines), lines


async def cancelled_after_two_retries(start: Any, lines: list[str]) -> None:
    task = asyncio.ensure_future(start)
    await eventually(lambda: len(lines) >= 2 or task.done())
    assert not task.done(), task.exception()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all("retrying in" in line for line in lines)


# ---- Discord ---------------------------------------------------------------------------------

def discord_settings(fake: FakeDiscord, **kw: str) -> DiscordSettings:
    return DiscordSettings(**{"DISCORD_TOKEN": fake.token, "DISCORD_API_BASE": fake.api_base, **kw})


def thread_opened_by_ingress(fake: FakeDiscord) -> str:
    thread = p.thread(p.snowflake(), fake.channels[DISCORD_CHANNEL], fake.bot_id, "a kite")
    fake.threads[thread["id"]] = thread
    return str(thread["id"])


async def test_discord_delivery_posts_over_rest_without_a_gateway_connection(
        app: App, settings: Settings, fake: FakeDiscord):
    delivery = DiscordDelivery(discord_settings(fake), app, progress_interval=0.05)
    thread = thread_opened_by_ingress(fake)
    try:
        assert await delivery.start() == "Discord delivery (REST only, as threadedit)"
        key = SessionKey("discord", GUILD, DISCORD_CHANNEL, thread)
        assert delivery.client.get_guild(int(GUILD)) is None  # nothing cached: no gateway
        assert delivery.backend.upload_limit(key) == discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES - 64 * 1024
        turn = await app.service.submit_edit(key, ALICE, "a kite over the sea")
        progress = await progress_posted_by_ingress(app, delivery.backend, key, turn)
        await deliver(app, delivery.core, turn, lambda: fake.typing and any(
            c.method == "PATCH" and c.path == f"/channels/{thread}/messages/{progress}"
            and str((c.json or {}).get("content")).startswith("Working on v1") for c in fake.calls))
    finally:
        await delivery.aclose()
    [v1] = [m for m in fake.messages[thread] if m["attachments"]]
    [attachment] = v1["attachments"]
    assert fake.uploaded[attachment["id"]] == (await app.service.result_of(turn.id)).image_path.read_bytes()
    assert [c["label"] for row in v1["components"] for c in row["components"]] == BUTTONS
    assert v1["content"] == f"**v1** · a kite over the sea · asked by <@{ALICE}>"
    assert next(m for m in fake.messages[thread] if m["id"] == progress)["content"] == "v1 is ready."
    assert fake.gateway_connects == [] and fake.identifies == []  # never a gateway connection
    assert not fake.calls_to("GET", r"/gateway(/bot)?") and fake.unknown_calls == []
    async with open_app(settings) as other:
        found = await other.deliveries.version_post("discord", thread, v1["id"])
        assert found is not None and (found.session.key, found.version) == (key, 1)


async def test_discord_delivery_refuses_a_wrong_token_in_one_sentence(app: App, fake: FakeDiscord):
    with pytest.raises(ConfigError, match=r"^DISCORD_TOKEN is not set; a worker posts"):
        DiscordDelivery(DiscordSettings(DISCORD_API_BASE=fake.api_base), app)
    delivery = DiscordDelivery(discord_settings(fake, DISCORD_TOKEN="discord-token.wrong.one"), app,
                               say=pytest.fail)
    with pytest.raises(DiscordStartError) as refused:
        await delivery.start()
    await delivery.aclose()
    assert str(refused.value) == ("Discord refused DISCORD_TOKEN; copy the bot token again from the "
                                  "Developer Portal (Bot → Reset Token).")
    assert fake.gateway_connects == []


async def test_discord_delivery_retries_while_discord_is_down_and_stops_when_cancelled(app: App):
    port, lines = free_port(), []
    delivery = DiscordDelivery(DiscordSettings(DISCORD_TOKEN="discord-token.abc.def",
                                               DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10"),
                               app, say=lines.append)
    await cancelled_after_two_retries(delivery.start(), lines)
    await delivery.aclose()
    assert all(line.startswith(f"Discord is unreachable at 127.0.0.1:{port} (connection refused); "
                               "check the network, a proxy, or DISCORD_API_BASE") for line in lines), lines
