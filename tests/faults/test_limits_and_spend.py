"""Promise 6, limits and spend: per-user turns per hour and a per-workspace daily budget in USD,
priced from the documented table; the budget is reserved before a call and refunded when no
image comes back; `threadedit usage` reports spend by workspace, user and session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.domain import SessionKey
from bot.spending import SpendLimits, actual_usd, image_usd
from bot.storage.usage import UsageLedger
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.slack_harness import CHANNEL, Harness, eventually, texts
from tests.test_cli import Cli, _env


@pytest.fixture
async def limited(slack: FakeSlack, gemini: FakeGemini, data_dir: Path) -> AsyncIterator[Harness]:
    h = Harness(slack, gemini, data_dir)
    # One 1K Nano Banana 2 image costs $0.067 plus its prompt: the budget allows one, not two.
    h.spend_limits = SpendLimits(user_turns_per_hour=3, workspace_daily_usd=0.10)
    await h.start()
    yield h
    await h.stop()


async def _rows(h: Harness) -> list[dict]:
    return await UsageLedger(h.store).rows()


async def test_the_daily_budget_is_reserved_charged_and_then_refuses(limited: Harness):
    await limited.mention("a poster")
    await eventually(limited.versions)
    [first] = await _rows(limited)
    assert first["state"] == "charged" and first["workspace"] == "T1" and first["user"] == "UANA"
    usage = limited.gemini.requests[0]
    assert first["cost_usd"] == pytest.approx(actual_usd(
        "gemini-3.1-flash-image", "1K", {"promptTokenCount": _prompt_tokens(usage)}))
    assert first["reserved_usd"] >= image_usd("gemini-3.1-flash-image", "1K")
    # The second turn would pass $0.10: refused at reservation, nothing sent to the model.
    await limited.reply("make it blue", "1700000001.1")
    await eventually(lambda: any("budget of $0.10 for today is used up" in t for t in texts(limited)))
    assert len(limited.gemini.requests) == 1 and len(limited.versions()) == 1
    assert not any(t.startswith("Working on") for t in texts(limited))


async def test_no_image_means_the_reservation_is_refunded(limited: Harness):
    limited.gemini.script.append(Behaviour.finish("IMAGE_SAFETY"))
    await limited.mention("something unsafe")
    await eventually(lambda: any("safety" in t for t in texts(limited)))
    refused = {"error": {"code": 400, "message": "bad request", "status": "INVALID_ARGUMENT"}}
    limited.gemini.script.append(Behaviour.raw(400, json.dumps(refused).encode()))
    await limited.reply("again", "1700000001.1")
    await eventually(lambda: len(limited.gemini.requests) == 2)
    await limited.settle()
    rows = await _rows(limited)
    assert [(r["state"], r["cost_usd"]) for r in rows] == [("refunded", 0.0), ("refunded", 0.0)]
    # Refunds leave the whole budget: the next instruction is made.
    await limited.reply("a calm sea", "1700000001.2")
    await eventually(limited.versions)


async def test_a_user_over_the_hourly_limit_is_refused_before_anything_is_queued(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    h = Harness(slack, gemini, data_dir)
    h.spend_limits = SpendLimits(user_turns_per_hour=2)
    await h.start()
    await h.mention("a poster")
    await eventually(h.versions)
    await h.reply("warmer", "1700000001.1")
    await eventually(lambda: len(h.versions()) == 2)
    await h.reply("cooler", "1700000001.2")
    await eventually(lambda: any("2 turns in the last hour, the limit here; try again in 60 minutes"
                                 in t for t in texts(h)))
    # A new thread does not reset the count: the limit is per person per workspace.
    await h.mention("another poster", ts="1700000009.000100")
    await eventually(lambda: len(slack.messages_in_thread(CHANNEL, "1700000009.000100")) == 1)
    assert "the limit here" in slack.messages_in_thread(CHANNEL, "1700000009.000100")[0]["text"]
    await h.reply("cooler", "1700000001.3", user="UBEN")  # someone else still may
    await eventually(lambda: len(h.versions()) == 3)
    assert len(gemini.requests) == 3
    await h.stop()


async def test_threadedit_usage_reports_by_workspace_user_and_session(tmp_path: Path,
                                                                       gemini: FakeGemini):
    from tests.conftest import API_KEY

    cli = Cli(tmp_path, _env(tmp_path, GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url))
    assert (await cli("edit", "a poster", "--by", "ana", "--json")).code == 0
    assert (await cli("edit", "--session", "1", "make it blue", "--by", "ben", "--json")).code == 0
    assert (await cli("edit", "a label", "--by", "ana", "--size", "2K", "--json")).code == 0
    out = await cli("usage", "--json")
    assert out.code == 0, out.err
    report = json.loads(out.out)
    [workspace] = report["workspaces"]
    assert (workspace["platform"], workspace["workspace"], workspace["calls"]) == ("cli", "local", 3)
    users = {u["user"]: u for u in report["users"]}
    assert set(users) == {"ana", "ben"} and users["ana"]["calls"] == 2
    assert workspace["usd"] == pytest.approx(users["ana"]["usd"] + users["ben"]["usd"], abs=1e-3)
    sessions = {s["session_id"]: s for s in report["sessions"]}
    assert sessions[1]["calls"] == 2 and sessions[2]["usd"] > image_usd("gemini-3.1-flash-image", "2K") - 1e-9
    text = await cli("usage")
    assert "By workspace:" in text.out and "cli local" in text.out and "By user:" in text.out
    bad = await cli("usage", "--since", "last tuesday")
    assert bad.code == 2 and "not a date" in bad.err


async def test_the_offline_engine_costs_nothing(data_dir: Path):
    from bot.app import open_app
    from bot.config import load_settings

    settings = load_settings(THREADEDIT_DATA_DIR=str(data_dir), THREADEDIT_ENGINE="local",
                             THREADEDIT_DAILY_BUDGET_USD="0.01")
    async with open_app(settings) as app:
        for text in ("a gradient in navy and orange", "make it sepia"):
            key = SessionKey("cli", "local", "cli", "x")
            turn = await app.service.submit_edit(key, "ana", text)
            assert (await app.service.run_turn(turn.id)).status == "ok"
        assert await UsageLedger(app.store).report("2000-01-01") == {
            "workspaces": [], "users": [], "sessions": []}


def _prompt_tokens(request: object) -> int:
    # What the fake reported is what we were charged for; recompute it from its own record.
    from tests.fakes import gemini_rules

    body = request.body  # type: ignore[attr-defined]
    return sum(gemini_rules.count_tokens(request.model, body["contents"]))  # type: ignore[attr-defined]
