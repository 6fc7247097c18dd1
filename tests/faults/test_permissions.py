"""Promise 7, permissions: who may approve, who may change settings and which channels the bot
serves are decided in the core for every adapter; each refusal is explained to the person (and
only to them where the platform allows) and recorded in the audit log."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapters.discord.backend import discord_markdown
from adapters.slack.backend import mrkdwn
from bot.chat import presenter
from bot.domain import SessionKey
from bot.storage.schema import audit_log
from tests.discord_harness import ALICE, BOB, CHANNEL, GUILD, DiscordHarness, custom_id
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.slack_harness import CHANNEL as SLACK_CHANNEL
from tests.slack_harness import ROOT_TS, Harness, eventually, texts

SLACK_KEY = SessionKey("slack", "T1", SLACK_CHANNEL, ROOT_TS)


async def _audit(store, key: SessionKey) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    session = await store.find_session(key)
    assert session is not None
    return [(e["actor"], e["action"], e["outcome"]) for e in await store.audit_log(session.id)]


async def test_slack_settings_changers_and_approvers(slack: FakeSlack, gemini: FakeGemini,
                                                     data_dir: Path):
    h = Harness(slack, gemini, data_dir, approvers="UDIR")
    h.settings_changers = "ULEAD"
    await h.start()
    await h.mention("a poster")
    [v1] = await eventually(h.versions)
    await h.reply("size 2K", "1700000001.1", user="UANA")
    await eventually(lambda: slack.ephemerals)
    assert slack.ephemerals[-1]["user"] == "UANA"
    assert "allowed to change settings" in slack.ephemerals[-1]["text"]
    await h.reply("size 2K", "1700000001.2", user="ULEAD")
    await eventually(lambda: any(t.startswith("Settings:") and "2K" in t for t in texts(h)))
    await h.click(v1, "Approve", user="UANA")
    await eventually(lambda: len(slack.ephemerals) == 2)
    assert "approvers" in slack.ephemerals[-1]["text"]
    assert not any("approved by" in t for t in texts(h))
    log = await _audit(h.store, SessionKey("slack", "T1", SLACK_CHANNEL, ROOT_TS))
    assert ("UANA", "settings", "refused") in log and ("ULEAD", "settings", "ok") in log
    assert ("UANA", "approve", "refused") in log
    await h.stop()


async def test_discord_settings_role_and_approver_role(gemini: FakeGemini, data_dir: Path):
    async with FakeDiscord() as fake:
        h = await DiscordHarness(fake, gemini, data_dir, settings_role="3000").start()
        thread = (await h.mention("a poster", author=BOB))["id"]
        [v1] = await h.wait_versions(thread, 1)
        await fake.user_message(thread, BOB, "aspect 16:9")
        await h.wait_text(thread, f"<@{BOB}> Only the people allowed to change settings")
        await fake.user_message(thread, ALICE, "aspect 16:9")  # alice has role 3000
        await h.wait_text(thread, "Settings: Nano Banana 2 · 16:9")
        click = await fake.click_button(v1, custom_id(v1, "Approve"), BOB)
        await eventually(lambda: any(r.get("message", {}).get("flags", 0) & 64
                                     for r in fake.responses_to(click)))
        log = await _audit(h.store, SessionKey("discord", GUILD, CHANNEL, thread))
        assert (BOB, "settings", "refused") in log and (ALICE, "settings", "ok") in log
        assert (BOB, "approve", "refused") in log
        await h.stop()


async def test_channels_outside_the_list_are_refused_and_audited(slack: FakeSlack,
                                                                 gemini: FakeGemini, data_dir: Path):
    h = Harness(slack, gemini, data_dir)
    h.allowed = "COTHER"
    await h.start()
    await h.mention("a poster")
    await eventually(lambda: slack.ephemerals)
    await h.settle()
    assert gemini.requests == []
    rows = await h.store.read(lambda uow: uow.conn.execute(
        select(audit_log.c.actor, audit_log.c.action, audit_log.c.outcome)
        .where(audit_log.c.session_id.is_(None))))
    assert ("UANA", "message", "refused") in [tuple(r) for r in rows]
    await h.stop()


# Buttons name a session: the click must come from where that session lives ----------------------

def forged_slack(message: dict, label: str, value: str) -> dict:
    """The Slack version message with one button's value (and action_id) replaced, as someone
    holding the signing secret, or a copied payload, could send it."""
    forged = copy.deepcopy(message)
    for block in forged["blocks"]:
        for element in block.get("elements", []):
            if element.get("type") == "button" and element["text"]["text"] == label:
                element["action_id"] = element["value"] = value
    return forged


def forged_discord(message: dict, label: str, value: str) -> dict:
    """A Discord version message (under a new id, so the fake takes it as sent) whose button
    carries another value."""
    forged = copy.deepcopy(message) | {"id": str(int(message["id"]) + 7777)}
    for row in forged["components"]:
        for component in row["components"]:
            if component.get("label") == label:
                component["custom_id"] = value
    return forged


async def snapshot(store: Any, key: SessionKey) -> tuple[Any, ...]:
    session = await store.find_session(key)
    assert session is not None
    state = await store.load_state(session.id)
    return (session.id, state.session.head_turn_id, [(t.id, t.state) for t in state.turns],
            [(a.turn_id, a.active) for a in state.approvals], len(await store.audit_log(session.id)))


async def refusals(store: Any) -> list[tuple[str, str, str, int, str]]:
    rows = await store.read(lambda uow: uow.conn.execute(
        select(audit_log.c.actor, audit_log.c.action, audit_log.c.outcome, audit_log.c.detail)
        .where(audit_log.c.session_id.is_(None))))
    return [(a, act, out, json.loads(d).get("session"), json.loads(d).get("why"))
            for a, act, out, d in rows]


async def test_a_slack_click_naming_a_discord_session_changes_charges_and_posts_nothing(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    async with FakeDiscord() as fake:
        # One process serving both platforms over one database, as `threadedit run` does.
        d = await DiscordHarness(fake, gemini, data_dir).start()
        s = await Harness(slack, gemini, data_dir, approvers="UANA").start()
        try:
            thread = (await d.mention("a poster", author=ALICE))["id"]
            await d.wait_versions(thread, 1)
            reply = await fake.user_message(thread, ALICE, "make it blue")
            await d.wait_versions(thread, 2)
            await d.settle(reply)
            discord_key = SessionKey("discord", GUILD, CHANNEL, thread)
            before = await snapshot(d.store, discord_key)
            target = before[0]
            await s.mention("a kite")
            [kite] = await eventually(s.versions)
            await s.settle()
            requests, discord_calls = len(gemini.requests), len(fake.calls)
            slack_posts = len([c for c in slack.calls if c.method == "chat.postMessage"])
            slack_state = await snapshot(s.store, SLACK_KEY)
            for control, label in [("undo", "Undo"), ("retry", "Retry"), ("4k", "4K"),
                                   ("approve", "Approve")]:
                await s.click(forged_slack(kite, label, f"te:{control}:{target}:2"), label)
            await s.settle()
            # Nothing changed, was charged or was posted, on either platform.
            assert await snapshot(d.store, discord_key) == before
            assert await snapshot(s.store, SLACK_KEY) == slack_state
            assert len(gemini.requests) == requests
            assert len(fake.calls) == discord_calls
            assert len([c for c in slack.calls if c.method == "chat.postMessage"]) == slack_posts
            # The clicker is told why, privately, in the thread they clicked in; each is audited.
            told = [e for e in slack.ephemerals if e["text"] == mrkdwn(presenter.NOT_THIS_THREAD)]
            assert [(e["user"], e["channel"], e["thread_ts"]) for e in told] == [
                ("UANA", SLACK_CHANNEL, ROOT_TS)] * 4
            assert sorted(await refusals(s.store)) == sorted(
                ("UANA", c, "refused", target, "button from another thread")
                for c in ("undo", "retry", "4k", "approve"))
        finally:
            await s.stop()
            await d.stop()


async def test_a_slack_click_naming_a_session_of_another_thread_is_refused(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    h = await Harness(slack, gemini, data_dir, approvers="UANA").start()
    await h.mention("a kite")
    [kite] = await eventually(h.versions)
    await h.mention("a boat", ts="1700000050.000100")
    await eventually(lambda: any(m.get("thread_ts") == "1700000050.000100" and m.get("blocks")
                                 for m in slack.messages[SLACK_CHANNEL]))
    await h.settle()
    boat = await h.store.find_session(SessionKey("slack", "T1", SLACK_CHANNEL, "1700000050.000100"))
    assert boat is not None
    before = await snapshot(h.store, SLACK_KEY)
    # Same workspace and channel, but the button is in the kite's thread.
    await h.click(forged_slack(kite, "Approve", f"te:approve:{boat.id}:1"), "Approve")
    await h.settle()
    assert (await h.store.load_state(boat.id)).approvals == []
    assert await snapshot(h.store, SLACK_KEY) == before
    assert slack.ephemerals[-1]["text"] == mrkdwn(presenter.NOT_THIS_THREAD)
    await h.stop()


async def test_a_discord_click_naming_a_slack_session_is_refused_privately(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    async with FakeDiscord() as fake:
        s = await Harness(slack, gemini, data_dir, approvers="UANA").start()
        d = await DiscordHarness(fake, gemini, data_dir).start()
        try:
            await s.mention("a kite")
            await eventually(s.versions)
            await s.settle()
            before, requests = await snapshot(s.store, SLACK_KEY), len(gemini.requests)
            slack_calls = len(slack.calls)
            mention = await d.mention("a poster")
            thread = mention["id"]
            [v1] = await d.wait_versions(thread, 1)
            await d.settle(mention)
            posted = [m["id"] for m in d.posts(thread)]
            clicks = [await fake.click_button(forged := forged_discord(v1, label, f"te:{c}:{before[0]}:1"),
                                              custom_id(forged, label), ALICE)
                      for c, label in [("undo", "Undo"), ("retry", "Retry"), ("approve", "Approve")]]
            await d.settle(*clicks)
            assert await snapshot(s.store, SLACK_KEY) == before
            assert len(gemini.requests) == requests + 1  # the Discord poster only
            assert len(slack.calls) == slack_calls
            for click in clicks:
                [said] = [r["message"] for r in fake.responses_to(click) if r["kind"] == "followup"]
                assert said["flags"] & 64 and said["content"] == discord_markdown(presenter.NOT_THIS_THREAD)
            assert [m["id"] for m in d.posts(thread)] == posted  # nothing said in the thread
        finally:
            await d.stop()
            await s.stop()


# Allowed channels hold for clicks and reactions too ----------------------------------------------

async def test_slack_clicks_and_reactions_outside_the_allowed_channels_are_refused(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    first = await Harness(slack, gemini, data_dir, approvers="UANA").start()
    await first.mention("a poster")
    [v1] = await eventually(first.versions)
    await first.stop()
    # The admin has since narrowed the bot to another channel.
    h = Harness(slack, gemini, data_dir, approvers="UANA")
    h.allowed = "COTHER"
    await h.start()
    before, requests = await snapshot(h.store, SLACK_KEY), len(gemini.requests)
    await h.click(v1, "Approve")
    await h.click(v1, "Retry")
    await h.react("white_check_mark", v1["ts"])
    await h.react("leftwards_arrow_with_hook", v1["ts"])
    await h.settle()
    assert len(gemini.requests) == requests
    assert [e["text"] for e in slack.ephemerals] == [mrkdwn(presenter.CHANNEL_NOT_ALLOWED)] * 4
    after = await snapshot(h.store, SLACK_KEY)
    assert after[:4] == before[:4]  # no turn, no approval, same head
    log = await _audit(h.store, SLACK_KEY)
    # Slack's events are acknowledged at once and handled side by side: any order.
    assert sorted(log[-4:]) == sorted([("UANA", "approve", "refused"), ("UANA", "retry", "refused"),
                                       ("UANA", "approve", "refused"), ("UANA", "undo", "refused")])
    await h.stop()


async def test_discord_clicks_and_reactions_outside_the_allowed_channels_are_refused(
        gemini: FakeGemini, data_dir: Path):
    async with FakeDiscord() as fake:
        first = await DiscordHarness(fake, gemini, data_dir).start()
        thread = (await first.mention("a poster"))["id"]
        [v1] = await first.wait_versions(thread, 1)
        await first.stop()
        h = await DiscordHarness(fake, gemini, data_dir, allowed="2999").start()
        try:
            key = SessionKey("discord", GUILD, CHANNEL, thread)
            before, requests = await snapshot(h.store, key), len(gemini.requests)
            click = await fake.click_button(v1, custom_id(v1, "Approve"), ALICE)
            react = await fake.add_reaction(thread, v1["id"], ALICE, "\U0001f501")
            await h.settle(click, react)
            assert len(gemini.requests) == requests
            [said] = [r["message"] for r in fake.responses_to(click) if r["kind"] == "followup"]
            assert said["flags"] & 64 and said["content"] == discord_markdown(presenter.CHANNEL_NOT_ALLOWED)
            # A reaction has no private answer on Discord: a short-lived note in the thread.
            assert h.texts(thread)[-1] == f"<@{ALICE}> {discord_markdown(presenter.CHANNEL_NOT_ALLOWED)}"
            assert (await snapshot(h.store, key))[:4] == before[:4]
            # The click and the reaction are handled side by side: audited in either order.
            assert sorted((await _audit(h.store, key))[-2:]) == [(ALICE, "approve", "refused"),
                                                                  (ALICE, "retry", "refused")]
        finally:
            await h.stop()
