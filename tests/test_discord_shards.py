"""Discord shards across processes: two real `threadedit run` processes, one shard each of two,
on one data directory, against one fake Discord (which routes events per shard as Discord does)
and one fake Gemini; and the settings that choose the shards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.discord.listeners import DM_ANSWER
from adapters.discord.settings import DiscordSettings
from bot.config import ConfigError, load_settings_of
from tests.conftest import API_KEY
from tests.discord_harness import ALICE, CHANNEL, GUILD
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import FakeGemini
from tests.processes import run_to_end, start_run, stop
from tests.slack_harness import eventually
from tests.test_cli import _env

# A second server whose id lands on shard 1 of 2: (guild_id >> 22) % 2 == 1. GUILD 1000 is on shard 0.
OTHER_GUILD, OTHER_CHANNEL = str(3 << 22 | 4242), "2100"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        server.add_guild(OTHER_GUILD, "Annex", channels={OTHER_CHANNEL: "posters"})
        server.add_user(ALICE, "alice", guild_id=OTHER_GUILD)
        server.recommended_shards = 2
        yield server


def _versions(fake: FakeDiscord, thread: str) -> list[dict]:
    return [m for m in fake.messages.get(thread, [])
            if m["author"]["id"] == fake.bot_id and m.get("attachments") and m.get("components")]


async def test_two_processes_one_shard_each_split_the_servers_and_post_each_turn_once(
        tmp_path: Path, fake: FakeDiscord, gemini: FakeGemini):
    assert (int(GUILD) >> 22) % 2 == 0 and (int(OTHER_GUILD) >> 22) % 2 == 1
    env = _env(tmp_path, DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base,
               GEMINI_API_KEY=API_KEY, GEMINI_BASE_URL=gemini.base_url, DISCORD_SHARD_COUNT="2")
    # Shard 1 first: once it is up (it synced nothing), no slash commands were registered.
    one, line1 = await start_run(tmp_path, {**env, "DISCORD_SHARD_IDS": "1"})
    zero = None
    try:
        assert line1.startswith("threadedit: started Discord (as threadedit; shard 1 of 2"), line1
        assert fake.command_puts == 0
        zero, line0 = await start_run(tmp_path, {**env, "DISCORD_SHARD_IDS": "0"})
        assert line0.startswith("threadedit: started Discord (as threadedit; shard 0 of 2"), line0
        assert fake.command_puts == 1 and [c["name"] for c in fake.commands] == ["edit"]
        assert sorted(i["shard"] for i in fake.identifies) == [[0, 2], [1, 2]]
        # Each session was told only of its own shard's server.
        assert fake.shards_sent("GUILD_CREATE", GUILD) == [(0, 2)]
        assert fake.shards_sent("GUILD_CREATE", OTHER_GUILD) == [(1, 2)]

        here = await fake.user_message(CHANNEL, ALICE, "a coffee poster", mention_bot=True)
        there = await fake.user_message(OTHER_CHANNEL, ALICE, "a tea poster", mention_bot=True)
        dm = await fake.user_dm(ALICE, "hello, can you edit this?")
        assert fake.shards_sent("MESSAGE_CREATE", here["id"]) == [(0, 2)]
        assert fake.shards_sent("MESSAGE_CREATE", there["id"]) == [(1, 2)]
        assert fake.shards_sent("MESSAGE_CREATE", dm["id"]) == [(0, 2)]  # DMs go to shard 0 only
        await eventually(lambda: _versions(fake, here["id"]) and _versions(fake, there["id"]))
        await eventually(lambda: any(m["content"] == DM_ANSWER for m in fake.messages[dm["channel_id"]]))
    finally:
        stopped = [await stop(proc) for proc in (one, zero) if proc is not None]
    # Both processes have stopped (each finishing what it had started): nothing more can be posted.
    for code, output in stopped:
        assert code == 0 and "Traceback" not in output, output
    assert len(_versions(fake, here["id"])) == 1 and len(_versions(fake, there["id"])) == 1
    assert fake.threads[here["id"]]["guild_id"] == GUILD
    assert fake.threads[there["id"]]["guild_id"] == OTHER_GUILD
    assert len(gemini.issued) == 2  # one model call per turn, across both processes
    answers = [m for m in fake.messages[dm["channel_id"]] if m["author"]["id"] == fake.bot_id]
    assert [m["content"] for m in answers] == [DM_ANSWER]
    assert fake.command_puts == 1


async def test_a_shard_the_fake_discord_does_not_have_is_refused_with_close_4010(fake: FakeDiscord):
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        await ws.receive_json()  # HELLO
        await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 513, "shard": [2, 2]}})
        msg = await asyncio.wait_for(ws.receive(), 5)
    assert ws.close_code == 4010, msg


@pytest.mark.parametrize(("count", "ids", "want"), [
    ("2", "0", (2, (0,))),
    ("2", "1,0", (2, (0, 1))),
    ("4", "1, 3", (4, (1, 3))),
    ("4", "2 3", (4, (2, 3))),
    ("4", "[3, 1]", (4, (1, 3))),
    ("4", '["2"]', (4, (2,))),
    ("3", "", (3, ())),  # the count alone: this process runs every shard
    ("", "", (None, ())),  # neither: one connection, as before
])
def test_shard_settings_accept_every_list_form(count: str, ids: str, want: tuple) -> None:
    settings = load_settings_of(DiscordSettings, DISCORD_SHARD_COUNT=count, DISCORD_SHARD_IDS=ids)
    assert (settings.shard_count, settings.shard_ids) == want


@pytest.mark.parametrize(("count", "ids", "sentence"), [
    ("2", "0,2", "DISCORD_SHARD_IDS must be shard numbers from 0 to 1, since DISCORD_SHARD_COUNT is 2"),
    ("2", "1,1", "DISCORD_SHARD_IDS must name each shard once"),
    ("", "0", "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT too"),
    ("2", "-1", "DISCORD_SHARD_IDS must be shard numbers separated by commas or spaces"),
    ("2", "[0, true]", "DISCORD_SHARD_IDS must be shard numbers separated by commas or spaces"),
    ("2", "0, \u00b9", "DISCORD_SHARD_IDS must be shard numbers separated by commas or spaces"),
    ("2", "[0", "DISCORD_SHARD_IDS must be shard numbers separated by commas or spaces"),
    ("0", "", "DISCORD_SHARD_COUNT must be greater than or equal to 1"),
    ("two", "", "DISCORD_SHARD_COUNT must be a whole number"),
])
def test_a_bad_shard_setting_is_one_sentence_naming_it(count: str, ids: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings_of(DiscordSettings, DISCORD_SHARD_COUNT=count, DISCORD_SHARD_IDS=ids)
    message = str(refused.value)
    assert message.startswith(sentence) and message.endswith(".") and "\n" not in message, message


def test_only_the_process_with_shard_zero_registers_the_slash_commands() -> None:
    def runs_zero(count: str, ids: str) -> bool:
        return load_settings_of(DiscordSettings, DISCORD_SHARD_COUNT=count,
                                DISCORD_SHARD_IDS=ids).runs_shard_zero

    assert runs_zero("", "") and runs_zero("2", "") and runs_zero("2", "0") and runs_zero("4", "3,0")
    assert not runs_zero("2", "1") and not runs_zero("4", "2 3")


async def test_threadedit_run_refuses_a_bad_shard_id_with_one_sentence_and_exit_2(
        tmp_path: Path, fake: FakeDiscord):
    env = _env(tmp_path, DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base,
               DISCORD_SHARD_COUNT="2", DISCORD_SHARD_IDS="0,2")
    code, out, err = await run_to_end(tmp_path, env, "run")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("DISCORD_SHARD_IDS must be shard numbers from 0 to 1") and "Traceback" not in err
    assert fake.identifies == []
