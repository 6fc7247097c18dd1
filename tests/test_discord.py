"""The Discord adapter end to end: discord.py's own HTTP and gateway code logged in to a fake
Discord on 127.0.0.1 (through DISCORD_API_BASE; the gateway address comes from that API), the
core, and the fake Gemini API."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.domain import SessionKey
from tests.conftest import API_KEY
from tests.discord_harness import ALICE, BOB, CHANNEL, GUILD, NO_THREADS, DiscordHarness, custom_id
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.processes import start_run
from tests.slack_harness import eventually, png
from tests.test_cli import _env

UNDO, RETRY, APPROVE = "\u21a9\ufe0f", "\U0001f501", "\u2705"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeDiscord, gemini: FakeGemini, data_dir: Path) -> AsyncIterator[DiscordHarness]:
    h = await DiscordHarness(fake, gemini, data_dir).start()
    yield h
    await h.stop()


async def test_mention_opens_a_thread_and_posts_v1_with_image_and_buttons(bot: DiscordHarness):
    msg = await bot.mention("a coffee poster, dark blue gradient")
    thread = msg["id"]  # a thread opened on a message has that message's id
    [v1] = await bot.wait_versions(thread, 1)
    assert bot.fake.threads[thread]["parent_id"] == CHANNEL
    assert bot.fake.threads[thread]["name"] == "a coffee poster, dark blue gradient"
    issued = bot.gemini.issued[0]["parts"][-1]["inlineData"]["data"]
    [attachment] = v1["attachments"]
    assert bot.fake.uploaded[attachment["id"]] == base64.b64decode(issued)
    labels = [c["label"] for row in v1["components"] for c in row["components"]]
    assert labels == ["Undo", "Retry", "4K", "Approve"]
    assert custom_id(v1, "Undo") == "te:undo:1:1"
    assert v1["content"] == f"**v1** · a coffee poster, dark blue gradient · asked by <@{ALICE}>"
    [posted] = [c.json for c in bot.fake.calls if c.method == "POST" and c.json
                and c.json.get("content") == v1["content"]]
    assert posted["allowed_mentions"]["users"] == [int(ALICE)]  # who asked, and nobody else
    assert bot.gemini.requests[0].body["contents"][0]["parts"][0]["text"] == (
        "a coffee poster, dark blue gradient")
    # A status message came first and was edited while the turn ran, with typing shown.
    first = bot.posts(thread)[0]
    assert first["content"] in ("v1 is ready.",) or first["content"].startswith("Working on v1")
    assert bot.fake.calls_to("PATCH", rf"/channels/{thread}/messages/{first['id']}")
    assert thread in bot.fake.typing
    assert bot.fake.identifies[0]["intents"] & (1 << 15)  # message content asked for
    assert bot.fake.command_puts == 1 and bot.fake.commands[0]["name"] == "edit"
    assert bot.fake.unknown_calls == []


async def test_a_reply_with_an_attachment_is_a_reference(bot: DiscordHarness):
    msg = await bot.mention("a poster")
    thread = msg["id"]
    await bot.wait_versions(thread, 1)
    ref = png((250, 0, 0))
    await bot.fake.user_message(thread, BOB, "put this logo top left",
                                attachments=[("logo.png", ref, "image/png")])
    await bot.wait_versions(thread, 2)
    last_user = bot.gemini.requests[-1].body["contents"][-1]
    assert last_user["parts"][0]["text"] == "put this logo top left"
    assert base64.b64decode(last_user["parts"][1]["inlineData"]["data"]) == ref
    cdn = [c for c in bot.fake.calls if c.path.startswith("/attachments/")]
    assert cdn and all("authorization" not in {k.lower() for k in c.headers} for c in cdn)


async def test_buttons_undo_retry_4k_and_approve(bot: DiscordHarness):
    thread = (await bot.mention("a lighthouse"))["id"]
    await bot.wait_versions(thread, 1)
    await bot.fake.user_message(thread, ALICE, "at night")
    v1, v2 = await bot.wait_versions(thread, 2)
    click = await bot.fake.click_button(v2, custom_id(v2, "Undo"), BOB)
    await bot.wait_text(thread, "Back to v1")
    assert [r["type"] for r in bot.fake.responses_to(click)][:1] == [6]  # deferred, no message
    await bot.fake.click_button(v1, custom_id(v1, "Retry"), BOB)
    await bot.wait_versions(thread, 3)
    assert len(bot.gemini.requests[-1].body["contents"]) == 1  # a sibling of v1: no history
    await bot.fake.click_button(v1, custom_id(v1, "Approve"), ALICE)
    await bot.wait_text(thread, f"v1 approved by <@{ALICE}>")
    await bot.fake.click_button(v2, custom_id(v2, "4K"), BOB)
    await bot.wait_versions(thread, 4)
    assert bot.gemini.requests[-1].body["generationConfig"]["imageConfig"]["imageSize"] == "4K"


def labels(message: dict) -> list[str]:
    return [c["label"] for row in message["components"] for c in row["components"]]


async def test_a_version_already_at_4k_offers_no_4k_and_refuses_a_stale_button(bot: DiscordHarness):
    thread = (await bot.mention("a lighthouse"))["id"]
    [v1] = await bot.wait_versions(thread, 1)
    await bot.fake.click_button(v1, custom_id(v1, "4K"), BOB)
    [_, v2] = await bot.wait_versions(thread, 2)
    assert labels(v2) == ["Undo", "Retry", "Approve"]
    # The caption names the request, not the prompt the service wrote for the model.
    assert "**v2 (from v1)** · 4K render of v1 ·" in v2["content"]
    assert "Render this same image" not in v2["content"]
    # A 4K button naming v2 (one posted before this rule, or a copied value) pays for nothing.
    requests = len(bot.gemini.requests)
    stale = v1 | {"id": str(int(v1["id"]) + 7777), "components": [
        {"type": 1, "components": [{"type": 2, "style": 2, "label": "4K", "custom_id": "te:4k:1:2"}]}]}
    click = await bot.fake.click_button(stale, "te:4k:1:2", BOB)
    await bot.settle(click)
    [said] = [r["message"] for r in bot.fake.responses_to(click) if r["kind"] == "followup"]
    assert said["flags"] & 64 and said["content"] == "v2 is already 4K; there is nothing larger to render."
    assert len(bot.gemini.requests) == requests and len(bot.versions(thread)) == 2
    # A session whose size is 4K makes 4K versions from the start: no 4K button either.
    await bot.fake.user_message(thread, ALICE, "size 4K")
    await bot.wait_text(thread, "Settings: Nano Banana 2 · auto aspect · 4K")
    await bot.fake.user_message(thread, ALICE, "at night")
    [*_, v3] = await bot.wait_versions(thread, 3)
    assert labels(v3) == ["Undo", "Retry", "Approve"]
    # A model that cannot render 4K offers no 4K at any size.
    await bot.fake.user_message(thread, ALICE, "size 1K")
    await bot.wait_text(thread, "Settings: Nano Banana 2 · auto aspect · 1K")
    await bot.fake.user_message(thread, ALICE, "model lite")
    await bot.wait_text(thread, "Settings: Nano Banana 2 Lite · auto aspect · 1K")
    await bot.fake.user_message(thread, ALICE, "in the rain")
    [*_, v4] = await bot.wait_versions(thread, 4)
    assert labels(v4) == ["Undo", "Retry", "Approve"]


async def test_reactions_revert_retry_approve_and_withdraw(bot: DiscordHarness):
    thread = (await bot.mention("a lighthouse"))["id"]
    await bot.wait_versions(thread, 1)
    await bot.fake.user_message(thread, ALICE, "at night")
    v1, v2 = await bot.wait_versions(thread, 2)
    await bot.fake.add_reaction(thread, v1["id"], BOB, UNDO)  # an older version: revert to it
    await bot.wait_text(thread, "Back to v1; the next instruction edits it")
    await bot.fake.user_message(thread, ALICE, "in the fog")
    await bot.wait_versions(thread, 3)
    users = [c["parts"][0]["text"] for c in bot.gemini.requests[-1].body["contents"]
             if c["role"] == "user"]
    assert users == ["a lighthouse", "in the fog"]
    await bot.fake.add_reaction(thread, v2["id"], BOB, RETRY)
    await bot.wait_versions(thread, 4)
    await bot.fake.add_reaction(thread, v2["id"], ALICE, APPROVE)
    await bot.wait_text(thread, f"v2 approved by <@{ALICE}>")
    # A removal event carries no member: the role is looked up to allow the withdrawal.
    await bot.fake.remove_reaction(thread, v2["id"], ALICE, APPROVE)
    await bot.wait_text(thread, f"<@{ALICE}> withdrew the approval of v2")
    await bot.fake.add_reaction(thread, v2["id"], ALICE, APPROVE)  # again: it counts again
    await eventually(lambda: sum(f"v2 approved by <@{ALICE}>" in t for t in bot.texts(thread)) == 2)


async def test_a_non_approver_is_refused_privately_and_audited(bot: DiscordHarness):
    thread = (await bot.mention("a label"))["id"]
    [v1] = await bot.wait_versions(thread, 1)
    click = await bot.fake.click_button(v1, custom_id(v1, "Approve"), BOB)
    private = await eventually(lambda: [r["message"] for r in bot.fake.responses_to(click)
                                        if r.get("message", {}).get("flags", 0) & 64])
    assert "approvers" in private[0]["content"]
    assert not any("approvers" in t for t in bot.texts(thread))  # nobody else saw it
    # A reaction has no private reply on Discord: a short-lived note in the thread names bob.
    await bot.fake.add_reaction(thread, v1["id"], BOB, APPROVE)
    await bot.wait_text(thread, f"<@{BOB}> Only the configured approvers")
    assert not any("approved by" in t for t in bot.texts(thread))
    session = await bot.store.find_session(SessionKey("discord", GUILD, CHANNEL, thread))
    assert session is not None
    log = [(e["actor"], e["action"], e["outcome"]) for e in await bot.store.audit_log(session.id)]
    assert log.count((BOB, "approve", "refused")) == 2


async def test_buttons_and_reactions_work_after_a_restart_with_an_empty_cache(
        fake: FakeDiscord, gemini: FakeGemini, data_dir: Path):
    h = await DiscordHarness(fake, gemini, data_dir).start()
    thread = (await h.mention("a red kite"))["id"]
    [v1] = await h.wait_versions(thread, 1)
    await h.stop()
    h = await DiscordHarness(fake, gemini, data_dir).start()  # a new client: nothing cached
    assert fake.command_puts == 1  # the commands did not change, so they were not sent again
    await fake.click_button(v1, custom_id(v1, "Approve"), ALICE)
    await h.wait_text(thread, f"v1 approved by <@{ALICE}>")
    await fake.user_message(thread, BOB, "add a long tail")
    await h.wait_versions(thread, 2)
    sent = gemini.requests[-1].body["contents"]
    assert sent[1] == gemini.issued[0] and len(sent) == 3
    await fake.add_reaction(thread, v1["id"], BOB, RETRY)
    await h.wait_versions(thread, 3)
    await h.stop()


async def test_an_oversized_result_is_reencoded_under_the_upload_limit(bot: DiscordHarness):
    noise = Image.frombytes("RGB", (1900, 1900), os.urandom(1900 * 1900 * 3))
    buf = io.BytesIO()
    noise.save(buf, "PNG", compress_level=1)
    big = buf.getvalue()
    assert len(big) > 10 * 1024 * 1024  # over the default guild limit of 10 MiB
    bot.gemini.next_image = ("image/png", big)
    thread = (await bot.mention("a noisy texture"))["id"]
    [v1] = await bot.wait_versions(thread, 1)
    [attachment] = v1["attachments"]
    posted = bot.fake.uploaded[attachment["id"]]
    assert len(posted) <= 10 * 1024 * 1024 - 64 * 1024
    assert attachment["filename"] == "v1.jpg" and Image.open(io.BytesIO(posted)).format == "JPEG"
    assert "smaller copy" in v1["content"]
    session = await bot.store.find_session(SessionKey("discord", GUILD, CHANNEL, thread))
    assert session is not None
    out = await bot.adapter.core.service.export(session.id, bot.data_dir / "export")
    originals = [f for f in out.iterdir() if f.name.startswith("v1")]
    assert [f.read_bytes() == big for f in originals] == [True]


async def test_messages_outside_sessions_and_the_bots_own_are_ignored(bot: DiscordHarness):
    chat = await bot.fake.user_message(CHANNEL, ALICE, "just chatting")
    aside = await bot.fake.user_message(CHANNEL, BOB, f"hey <@{ALICE}>, look at this")
    await bot.settle(chat, aside)
    assert bot.gemini.requests == [] and not any(bot.posts(t) for t in bot.fake.messages)
    assert not bot.fake.calls_to("POST", r"/channels/\d+/messages/\d+/threads")
    thread = (await bot.mention("a kite"))["id"]
    await bot.wait_versions(thread, 1)
    own = await bot.fake.user_message(thread, bot.fake.bot_id, "make it blue")  # as if the bot wrote it
    await bot.settle(own)
    assert len(bot.gemini.requests) == 1


async def test_a_channel_without_thread_permission_gets_a_plain_explanation(bot: DiscordHarness):
    msg = await bot.mention("a poster", channel=NO_THREADS)
    reply = await eventually(lambda: [m for m in bot.fake.messages.get(NO_THREADS, [])
                                      if m["author"]["id"] == bot.fake.bot_id])
    assert "can't open a thread" in reply[0]["content"]
    assert reply[0]["message_reference"]["message_id"] == msg["id"]
    await bot.settle(msg)
    assert bot.gemini.requests == []


async def test_slash_edit_with_an_image_starts_a_session_in_a_new_thread(bot: DiscordHarness):
    ref = png((0, 200, 0))
    interaction = await bot.fake.slash_command(CHANNEL, BOB, "edit", {"prompt": "a green logo"},
                                               attachment=("ref.png", ref, "image/png"))
    first = (await eventually(lambda: bot.fake.responses_to(interaction)))[0]
    assert first["type"] == 4 and "started an edit session: a green logo" in first["data"]["content"]
    starter = next(m for m in bot.fake.messages[CHANNEL] if m["author"]["id"] == bot.fake.bot_id)
    [v1] = await bot.wait_versions(starter["id"], 1)
    user_turn = bot.gemini.requests[0].body["contents"][0]
    assert user_turn["parts"][0]["text"] == "a green logo"
    assert base64.b64decode(user_turn["parts"][1]["inlineData"]["data"]) == ref
    assert f"<@{BOB}>" in v1["content"]


async def test_without_the_message_content_intent_only_mentions_are_turns(
        fake: FakeDiscord, gemini: FakeGemini, data_dir: Path):
    h = await DiscordHarness(fake, gemini, data_dir, message_content=False).start()
    assert not fake.identifies[-1]["intents"] & (1 << 15)
    assert "replies must mention the bot" in h.started_as
    thread = (await h.mention("a boat"))["id"]
    await h.wait_versions(thread, 1)
    blank = await fake.user_message(thread, ALICE, "make it red")  # arrives blank: not a turn
    await h.settle(blank)
    assert len(gemini.requests) == 1
    await fake.user_message(thread, ALICE, "make it red", mention_bot=True)
    await h.wait_versions(thread, 2)
    assert gemini.requests[-1].body["contents"][-1]["parts"][0]["text"] == "make it red"
    await h.stop()


async def test_channels_outside_the_allowed_list_are_refused(
        fake: FakeDiscord, gemini: FakeGemini, data_dir: Path):
    h = await DiscordHarness(fake, gemini, data_dir, allowed="2999").start()
    mention = await h.mention("a poster")
    reply = await eventually(lambda: [m for m in fake.messages.get(CHANNEL, [])
                                      if m["author"]["id"] == fake.bot_id])
    assert "not enabled in this channel" in reply[0]["content"]
    interaction = await fake.slash_command(CHANNEL, BOB, "edit", {"prompt": "a logo"})
    [answer] = await eventually(lambda: fake.responses_to(interaction))
    assert answer["data"]["flags"] & 64 and "not enabled" in answer["data"]["content"]
    await h.settle(mention, interaction)
    assert gemini.requests == [] and not fake.threads
    await h.stop()


async def test_the_token_never_reaches_the_logs(fake, gemini, data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    h = await DiscordHarness(fake, gemini, data_dir).start()
    thread = (await h.mention("a poster"))["id"]
    await h.wait_versions(thread, 1)
    await h.stop()
    assert caplog.records and fake.token not in caplog.text


async def test_discord_rate_limits_are_waited_out(bot: DiscordHarness):
    bot.fake.rate_limit_next("POST", r"/channels/\d+/messages", retry_after=0.05, count=2)
    thread = (await bot.mention("a poster"))["id"]
    await bot.wait_versions(thread, 1)
    posts = bot.fake.calls_to("POST", rf"/channels/{thread}/messages")
    assert [c.status for c in posts[:3]] == [429, 429, 200]


async def test_threadedit_run_starts_discord_and_refuses_a_bad_token(
        tmp_path: Path, fake: FakeDiscord, gemini: FakeGemini):
    env = _env(tmp_path, DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base,
               GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url)
    proc, line = await start_run(tmp_path, env)
    assert proc.stderr is not None
    assert line.startswith("threadedit: started Discord (as threadedit")
    await fake.wait_connected()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    assert "Traceback" not in (await proc.stderr.read()).decode()

    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadedit", "run", cwd=tmp_path, env={**env, "DISCORD_TOKEN": "wrong"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(bad.communicate(), 30)
    assert bad.returncode == 2
    assert "Discord refused DISCORD_TOKEN" in err.decode() and "Traceback" not in err.decode()
    assert "wrong" not in err.decode()


async def test_with_a_public_url_each_version_has_a_gallery_link_button(
        fake: FakeDiscord, gemini: FakeGemini, data_dir: Path):
    h = DiscordHarness(fake, gemini, data_dir)
    h.public_url = "https://edit.example.com"
    await h.start()
    thread = (await h.mention("a poster"))["id"]
    [v1] = await h.wait_versions(thread, 1)
    [link] = [c for row in v1["components"] for c in row["components"] if c.get("label") == "Gallery"]
    assert link["style"] == 5 and link["url"].startswith("https://edit.example.com/s/1/gallery?exp=")
    await h.stop()


async def test_a_turn_that_made_no_version_offers_retry_on_its_line(bot: DiscordHarness):
    def line(thread: str, words: str) -> dict | None:
        return next((m for m in bot.posts(thread) if words in m["content"]), None)

    bot.gemini.script.append(Behaviour.finish("IMAGE_SAFETY"))
    thread = (await bot.mention("a lighthouse"))["id"]  # the first turn makes no version
    first = await eventually(lambda: line(thread, "safety filters"))
    assert labels(first) == ["Retry"] and custom_id(first, "Retry") == "te:rerun:1:1"
    click = await bot.fake.click_button(first, "te:rerun:1:1", BOB)
    await bot.settle(click)
    [v1] = await bot.wait_versions(thread, 1)
    assert f"asked by <@{BOB}>" in v1["content"]
    bot.gemini.script.append(Behaviour.text_only("Which lighthouse?"))
    await bot.fake.user_message(thread, ALICE, "fix it")
    words = await eventually(lambda: line(thread, "answered in words"))
    assert labels(words) == ["Retry"]
    await bot.fake.add_reaction(thread, words["id"], BOB, RETRY)  # 🔁 on the line
    [_, v2] = await bot.wait_versions(thread, 2)
    assert "**v2 (from v1)** · fix it" in v2["content"]
    asked = [r.body["contents"][-1]["parts"][0]["text"] for r in bot.gemini.requests]
    assert asked == ["a lighthouse", "a lighthouse", "fix it", "fix it"]
