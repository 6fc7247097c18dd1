"""Promise 7, permissions: who may approve, who may change settings and which channels the bot
serves are decided in the core for every adapter; each refusal is explained to the person (and
only to them where the platform allows) and recorded in the audit log."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from bot.domain import SessionKey
from bot.storage.schema import audit_log
from tests.discord_harness import ALICE, BOB, CHANNEL, GUILD, DiscordHarness, custom_id
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.slack_harness import CHANNEL as SLACK_CHANNEL
from tests.slack_harness import ROOT_TS, Harness, eventually, texts


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
