"""The Slack adapter end to end: the real AsyncApp behind its real aiohttp endpoint, signed
requests over HTTP, the real AsyncWebClient talking to a fake Slack Web API, file downloads from
a local origin, and the fake Gemini API behind the core."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.fakes.gemini_server import Behaviour
from tests.slack_harness import (
    CHANNEL,
    ROOT_TS,
    SECRET,
    TOKEN,
    Harness,
    block_actions,
    eventually,
    png,
    texts,
)

FIXTURES = Path(__file__).parent / "fixtures" / "slack"


async def test_mention_makes_v1_with_image_and_buttons_on_one_message(bot: Harness):
    r = await bot.mention("a coffee poster, dark blue gradient")
    assert r.status_code == 200
    [v1] = await eventually(bot.versions)
    blocks = {b["type"]: b for b in v1["blocks"]}
    file_id = blocks["image"]["slack_file"]["id"]
    issued = bot.gemini.issued[0]["parts"][-1]["inlineData"]["data"]
    assert bot.slack.uploads[file_id].content == base64.b64decode(issued)
    assert [e["text"]["text"] for e in blocks["actions"]["elements"]] == [
        "Undo", "Retry", "4K", "Approve"]
    caption = blocks["context"]["elements"][0]["text"]
    assert caption == "*v1* · a coffee poster, dark blue gradient · asked by <@UANA>"
    assert v1["text"] == "v1 · a coffee poster, dark blue gradient · asked by <@UANA>"  # notifications
    first = bot.thread()[0]
    assert first["text"].startswith(("Working on v1", "v1 is ready"))
    assert bot.gemini.requests[0].body["contents"][0]["parts"][0]["text"] == (
        "a coffee poster, dark blue gradient")


async def test_reply_with_an_image_is_a_reference(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    ref = png((250, 0, 0))
    f = bot.slack.add_file(ref, filename="logo.png")
    await bot.reply("put this logo top left", "1700000001.000200", files=[f])
    await eventually(lambda: len(bot.versions()) == 2)
    last_user = bot.gemini.requests[-1].body["contents"][-1]
    assert last_user["parts"][0]["text"] == "put this logo top left"
    assert base64.b64decode(last_user["parts"][1]["inlineData"]["data"]) == ref
    assert bot.slack.file_downloads[-1].authorization == f"Bearer {TOKEN}"


async def test_buttons_undo_retry_and_approve(bot: Harness):
    await bot.mention("a lighthouse")
    await eventually(bot.versions)
    await bot.reply("at night", "1700000001.000200")
    v1, v2 = await eventually(lambda: len(bot.versions()) == 2 and bot.versions())
    assert (await bot.click(v2, "Undo")).status_code == 200
    await eventually(lambda: any("Back to v1" in t for t in texts(bot)))
    await bot.click(v1, "Retry")
    await eventually(lambda: len(bot.versions()) == 3)
    assert len(bot.gemini.requests[-1].body["contents"]) == 1  # a sibling of v1: no history
    await bot.click(v1, "Approve", user="UDIR")
    await eventually(lambda: any("v1 approved by <@UDIR>" in t for t in texts(bot)))
    await bot.click(v2, "4K")
    await eventually(lambda: len(bot.versions()) == 4)
    assert bot.gemini.requests[-1].body["generationConfig"]["imageConfig"]["imageSize"] == "4K"


async def test_reactions_revert_retry_approve_and_withdraw(bot: Harness):
    await bot.mention("a lighthouse")
    await eventually(bot.versions)
    await bot.reply("at night", "1700000001.000200")
    v1, v2 = await eventually(lambda: len(bot.versions()) == 2 and bot.versions())
    await bot.react("leftwards_arrow_with_hook", v1["ts"])  # an older version: revert to it
    await eventually(lambda: any("Back to v1; the next instruction edits it" in t
                                 for t in texts(bot)))
    await bot.reply("in the fog", "1700000002.000300")
    await eventually(lambda: len(bot.versions()) == 3)
    users = [c["parts"][0]["text"] for c in bot.gemini.requests[-1].body["contents"]
             if c["role"] == "user"]
    assert users == ["a lighthouse", "in the fog"]
    await bot.react("repeat", v2["ts"])
    await eventually(lambda: len(bot.versions()) == 4)
    await bot.react("white_check_mark", v2["ts"], user="UDIR")
    await eventually(lambda: any("v2 approved by <@UDIR>" in t for t in texts(bot)))
    await bot.react("white_check_mark", v2["ts"], user="UDIR", added=False)
    await eventually(lambda: any("<@UDIR> withdrew the approval of v2" in t for t in texts(bot)))
    # v4 (the retry of v2, so a child of v1) is the head: ↩️ on it undoes to its parent.
    await bot.react("leftwards_arrow_with_hook", bot.versions()[-1]["ts"])
    await eventually(lambda: any(t.startswith("Back to v1.") for t in texts(bot)))


async def test_a_non_approver_is_refused_privately_and_audited(bot: Harness):
    await bot.mention("a label")
    [v1] = await eventually(bot.versions)
    await bot.react("white_check_mark", v1["ts"], user="UINTERN")
    await eventually(lambda: bot.slack.ephemerals)
    assert bot.slack.ephemerals[0]["user"] == "UINTERN"
    assert "approvers" in bot.slack.ephemerals[0]["text"]
    assert not any("approved by" in t for t in texts(bot))
    session = await bot.store.find_session(_key())
    log = await bot.store.audit_log(session.id)
    assert ("UINTERN", "approve", "refused") in [(e["actor"], e["action"], e["outcome"])
                                                 for e in log]


def _key():
    from bot.domain import SessionKey

    return SessionKey("slack", "T1", CHANNEL, ROOT_TS)


async def test_duplicate_deliveries_make_one_turn(bot: Harness):
    event = {"type": "app_mention", "user": "UANA", "text": "<@UBOT> a kite", "ts": ROOT_TS,
             "channel": CHANNEL, "event_ts": ROOT_TS}
    first = await bot.event(event, event_id="EvSAME")
    again = await bot.event(event, event_id="EvSAME", retry=1)
    # The same mention also arrives as a plain message event with another id.
    as_message = await bot.event({**event, "type": "message", "thread_ts": ROOT_TS},
                                 event_id="EvOTHER")
    assert {first.status_code, again.status_code, as_message.status_code} == {200}
    await eventually(bot.versions)
    await bot.settle()
    assert len(bot.gemini.requests) == 1 and len(bot.versions()) == 1


async def test_bad_signature_is_refused(bot: Harness):
    r = await bot.event({"type": "app_mention", "user": "U", "text": "<@UBOT> x", "ts": ROOT_TS,
                         "channel": CHANNEL}, secret="wrong-secret")
    assert r.status_code == 401
    await bot.settle()
    assert bot.gemini.requests == [] and bot.thread() == []


async def test_own_edited_and_unrelated_messages_are_ignored_with_200(bot: Harness):
    await bot.mention("a boat")
    await eventually(bot.versions)
    await bot.settle()
    before = len(bot.gemini.requests)
    rs = [
        await bot.reply("from the bot itself", "1700000001.1", user="UBOT", bot_id="BBOT"),
        await bot.event({"type": "message", "subtype": "message_changed", "channel": CHANNEL,
                         "ts": "1700000001.2", "hidden": True,
                         "message": {"type": "message", "user": "UANA", "text": "edited",
                                     "ts": ROOT_TS, "thread_ts": ROOT_TS}}),
        await bot.event({"type": "message", "subtype": "message_deleted", "channel": CHANNEL,
                         "ts": "1700000001.3", "hidden": True, "deleted_ts": ROOT_TS}),
        await bot.event({"type": "message", "user": "UBO", "text": "unrelated thread",
                         "ts": "1700000001.4", "thread_ts": "1600000000.000001",
                         "channel": CHANNEL}),
        await bot.event({"type": "channel_join", "user": "UBO"}),
    ]
    assert [r.status_code for r in rs] == [200] * 5
    await bot.settle()
    assert len(bot.gemini.requests) == before


async def test_download_outside_the_allowed_origins_never_gets_the_token(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    f = bot.slack.add_file(png((0, 0, 250)))
    elsewhere = bot.slack.files_origin.replace("127.0.0.1", "localhost")
    f = {**f, "url_private": f["url_private"].replace(bot.slack.files_origin, elsewhere),
         "url_private_download": f["url_private_download"].replace(bot.slack.files_origin,
                                                                   elsewhere)}
    await bot.reply("use this", "1700000001.000200", files=[f])
    await eventually(lambda: any("only send my Slack token there" in t for t in texts(bot)))
    assert bot.slack.file_downloads == []


async def test_a_sign_in_page_is_reported_as_a_setup_problem(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    f = bot.slack.add_file(png((0, 0, 250)), login_page=True)
    await bot.reply("use this", "1700000001.000200", files=[f])
    await eventually(lambda: any("files:read" in t for t in texts(bot)))
    assert len(bot.versions()) == 1


async def test_blocked_answers_and_commands_are_plain_sentences(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    bot.gemini.script.append(Behaviour.finish("IMAGE_SAFETY"))
    await bot.reply("something unsafe", "1700000001.1")
    await eventually(lambda: any("safety filters" in t for t in texts(bot)))
    # Words only: named after the model that answered, not a failure.
    bot.gemini.script.append(Behaviour.text_only("Which poster?"))
    await bot.reply("fix it", "1700000001.15")
    await eventually(lambda: any(t.endswith("No new version; Nano Banana 2 answered in words: Which poster?")
                                 for t in texts(bot)))
    await bot.reply("size 2K", "1700000001.2")
    await eventually(lambda: any(t.startswith("Settings: Nano Banana 2") and "2K" in t
                                 for t in texts(bot)))
    await bot.reply("aspect 7:3", "1700000001.3")
    await eventually(lambda: any("does not take aspect ratio 7:3" in t for t in texts(bot)))
    await bot.reply("history", "1700000001.4")
    await eventually(lambda: any(t.startswith("Versions (") for t in texts(bot)))
    await bot.settle()
    assert len(bot.gemini.requests) == 3


async def test_restart_between_two_turns_continues_the_session(slack, gemini, data_dir):
    h = await Harness(slack, gemini, data_dir).start()
    await h.mention("a red kite")
    await eventually(h.versions)
    await h.stop()
    h = await Harness(slack, gemini, data_dir).start()  # a new process, the same data
    [v1] = h.versions()
    await h.reply("add a long tail", "1700000001.000200")
    await eventually(lambda: len(h.versions()) == 2)
    sent = gemini.requests[-1].body["contents"]
    assert sent[1] == gemini.issued[0] and len(sent) == 3
    await h.click(v1, "Approve")  # a button on a message posted before the restart
    await eventually(lambda: any("v1 approved by <@UANA>" in t for t in texts(h)))
    await h.stop()


async def test_the_token_never_reaches_the_logs(slack, gemini, data_dir, caplog):
    caplog.set_level(logging.DEBUG)
    h = await Harness(slack, gemini, data_dir).start()
    await h.mention("a poster")
    await eventually(h.versions)
    f = h.slack.add_file(png((1, 2, 3)))
    await h.reply("use this", "1700000001.000200", files=[f])
    await eventually(lambda: len(h.versions()) == 2)
    await h.stop()
    assert caplog.records and TOKEN not in caplog.text and SECRET not in caplog.text


async def test_slack_429_is_retried_after_retry_after(bot: Harness):
    bot.slack.rate_limit_next["chat.postMessage"] = 0
    await bot.mention("a poster")
    await eventually(bot.versions)
    posts = [c.status for c in bot.slack.calls if c.method == "chat.postMessage"]
    assert posts[0] == 429 and posts[1] == 200


async def test_channels_outside_the_allowed_list_are_refused(slack, gemini, data_dir):
    h = Harness(slack, gemini, data_dir)
    h.allowed = "COTHER"
    await h.start()
    await h.mention("a poster")
    await eventually(lambda: slack.ephemerals)
    assert "not enabled in this channel" in slack.ephemerals[0]["text"]
    await h.settle()
    assert gemini.requests == [] and h.versions() == []
    await h.stop()


async def test_progress_line_is_updated_while_the_turn_runs(bot: Harness):
    def updates() -> list[str]:
        return [c.args["text"] for c in bot.slack.calls if c.method == "chat.update"]

    def working() -> list[str]:
        return [t for t in updates() if t.startswith("Working on v1 · Nano Banana 2 · auto aspect · 1K")]

    # The model answers only once the line has been updated twice, however slow the machine.
    bot.gemini.hold = asyncio.Event()
    await bot.mention("a slow poster")
    await eventually(lambda: len(working()) >= 2)
    bot.gemini.hold.set()
    await eventually(bot.versions)
    await eventually(lambda: updates()[-1] == "v1 is ready.")


def _recorded_connect_share(ts: str) -> dict:
    """The recorded Slack Connect file_share event (tests/fixtures/slack/s03_...), as a reply in
    the harness's thread: only where it happened changes; the stub file is as Slack sent it."""
    envelope = json.loads((FIXTURES / "s03_event_message_file_share_slack_connect_file_access_"
                                       "check_file_info.json").read_text())
    envelope |= {"team_id": "T1", "context_team_id": "T1", "event_id": f"EvCONNECT{ts}"}
    # Bolt takes the workspace from authorizations[0] (the installation the event is for).
    envelope["authorizations"][0] |= {"team_id": "T1", "user_id": "UBOT"}
    envelope["event"] |= {"channel": CHANNEL, "thread_ts": ROOT_TS, "ts": ts, "event_ts": ts,
                          "user": "UANA"}
    return envelope


async def test_a_slack_connect_file_is_looked_up_with_files_info_and_used_as_a_reference(bot: Harness):
    await bot.mention("a poster")
    await eventually(bot.versions)
    envelope = _recorded_connect_share("1700000001.000200")
    [stub] = envelope["event"]["files"]
    assert stub["file_access"] == "check_file_info" and "url_private" not in stub
    ref = png((10, 200, 30))
    assert bot.slack.add_connect_file(ref, filename="brand.png", file_id=stub["id"]) == stub
    r = await bot.post(json.dumps(envelope), "application/json")
    assert r.status_code == 200
    await eventually(lambda: len(bot.versions()) == 2)
    [info] = [c for c in bot.slack.calls if c.method == "files.info"]
    assert info.args["file"] == stub["id"] and info.headers["authorization"] == f"Bearer {TOKEN}"
    last_user = bot.gemini.requests[-1].body["contents"][-1]
    assert last_user["parts"][0]["text"] == envelope["event"]["text"]
    assert base64.b64decode(last_user["parts"][1]["inlineData"]["data"]) == ref
    [download] = bot.slack.file_downloads
    assert download.path.endswith("/brand.png") and download.authorization == f"Bearer {TOKEN}"


@pytest.mark.parametrize(("error", "says"), [
    ("file_not_found", "Slack says it no longer exists (file_not_found)"),
    ("access_denied", "Slack denied the app access to it (access_denied)"),
])
async def test_a_slack_connect_file_slack_will_not_give_is_one_sentence_in_the_thread(
        bot: Harness, error: str, says: str):
    await bot.mention("a poster")
    await eventually(bot.versions)
    envelope = _recorded_connect_share("1700000001.000200")
    [stub] = envelope["event"]["files"]
    bot.slack.add_connect_file(png((1, 2, 3)), file_id=stub["id"])
    bot.slack.file_info_errors[stub["id"]] = error
    await bot.post(json.dumps(envelope), "application/json")
    [sentence] = await eventually(lambda: [t for t in texts(bot) if says in t])
    assert sentence.startswith("<@UANA> I could not get the file shared from the other organisation: ")
    assert "not on Slack's file server" not in sentence
    await bot.settle()
    assert len(bot.versions()) == 1 and len(bot.gemini.requests) == 1  # nothing sent, nothing lost
    assert bot.slack.file_downloads == []


async def test_a_turn_that_made_no_version_offers_retry_on_its_line(bot: Harness):
    def line(words: str) -> dict | None:
        return next((m for m in bot.thread() if words in (m.get("text") or "")), None)

    bot.gemini.script.append(Behaviour.finish("IMAGE_SAFETY"))
    await bot.mention("a poster")  # the first turn makes no version: there is no version post
    first = await eventually(lambda: line("safety filters"))
    section, actions = first["blocks"]
    assert section["text"]["text"] == first["text"] and first["text"].startswith("<@UANA> ")
    assert [(e["text"]["text"], e["value"]) for e in actions["elements"]] == [("Retry", "te:rerun:1:1")]
    click = block_actions(first, "Retry")
    body = "payload=" + quote(json.dumps(click))
    for _ in range(2):  # Slack delivers the same click twice: one turn
        bot._accepted(await bot.post(body, "application/x-www-form-urlencoded"),
                      f"action:{click['actions'][0]['action_ts']}")
    [v1] = await eventually(bot.versions)
    bot.gemini.script.append(Behaviour.text_only("Which poster?"))
    await bot.reply("fix it", "1700000001.1")
    words = await eventually(lambda: line("answered in words"))
    assert (await bot.react("repeat", words["ts"])).status_code == 200  # 🔁 on the line
    await eventually(lambda: len(bot.versions()) == 2)
    await bot.settle()
    asked = [r.body["contents"][-1]["parts"][0]["text"] for r in bot.gemini.requests]
    assert asked == ["a poster", "a poster", "fix it", "fix it"]
    assert "v1 · a poster" in v1["text"] and "v2 (from v1) · fix it" in bot.versions()[-1]["text"]
