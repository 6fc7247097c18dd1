"""Promise 8, secrets: a full Slack scenario and a full Discord scenario run with known fake
secrets and DEBUG logging; then everything written (log records, every file in the data
directory, exports, every message posted) is searched for them. The Slack token goes only to
Slack's API and file origin, the Gemini key only to Gemini in its header, and the data directory
is private to its owner."""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select

from bot.domain import SessionKey
from bot.storage.repository import SessionStore
from bot.storage.schema import metadata
from bot.storage.uow import UnitOfWork
from tests.conftest import API_KEY
from tests.discord_harness import ALICE, BOB, CHANNEL, GUILD, custom_id
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import Behaviour, FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.faults._support import (
    caption_of,
    discord_bot,
    posted_texts,
    slack_bot,
    slack_state,
    versions_in,
    wait_versions,
)
from tests.postgres import on_postgres
from tests.slack_harness import SECRET, TOKEN, eventually, png

DISCORD_TOKEN = "discord-bot-token-Zq81.secret.mk4"
SECRETS = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "GEMINI_API_KEY": API_KEY,
           "DISCORD_TOKEN": DISCORD_TOKEN}


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                yield path


def assert_no_secret(where: str, data: str | bytes) -> None:
    blob = data if isinstance(data, bytes) else data.encode()
    for name, value in SECRETS.items():
        assert value.encode() not in blob, f"{name} found in {where}"


async def every_stored_row(store: SessionStore) -> str:
    """Every row of every table of the store, as text (on PostgreSQL the rows are not in a file
    of the data directory)."""
    async def dump(uow: UnitOfWork) -> str:
        rows = []
        for table in metadata.sorted_tables:
            rows += [repr(tuple(row)) for row in await uow.conn.execute(select(table))]
        return "\n".join(rows)

    return await store.read(dump)


def assert_nothing_written_holds_a_secret(logs: str, *roots: Path, posted: list[str], rows: str) -> None:
    assert logs, "nothing was logged: the search would prove nothing"
    assert_no_secret("the logs", logs)
    assert "a poster" in rows, "the store's rows were not read: the search would prove nothing"
    assert_no_secret("the store's rows", rows)
    files = list(files_under(*roots))
    # The database (with its WAL, when SQLite), blobs and the export's manifest and images must
    # all be here.
    names = {p.name for p in files}
    assert {"manifest.json"} | (set() if on_postgres() else {"threadedit.sqlite3"}) <= names
    assert any(p.suffix == ".jpg" for p in files)
    for path in files:
        assert_no_secret(str(path), path.read_bytes())
    assert posted
    for text in posted:
        assert_no_secret("a posted message", text)


class Elsewhere:
    """Two servers that are not Slack: one that would keep whatever reaches it, and one that
    redirects there (as a compromised or mistaken origin might)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.redirected = 0
        self._runners: list[web.AppRunner] = []
        self.evil = self.redirector = ""

    async def start(self) -> Elsewhere:
        async def keep(request: web.Request) -> web.Response:
            self.seen.append(dict(request.headers))
            return web.Response(body=png((1, 2, 3)), content_type="image/png")

        async def redirect(request: web.Request) -> web.Response:
            self.redirected += 1
            raise web.HTTPFound(f"{self.evil}/steal/logo.png")

        for attr, handler in (("evil", keep), ("redirector", redirect)):
            app = web.Application()
            app.router.add_get("/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            setattr(self, attr, f"http://127.0.0.1:{runner.addresses[0][1]}")
            self._runners.append(runner)
        return self

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


@pytest.fixture
async def elsewhere() -> AsyncIterator[Elsewhere]:
    servers = await Elsewhere().start()
    yield servers
    await servers.stop()


async def test_a_full_slack_scenario_leaks_no_secret(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path, tmp_path: Path, elsewhere: Elsewhere,
        caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    async with slack_bot(slack, gemini, data_dir) as bot:
        # The redirecting server is trusted as a file origin; where it points is not.
        bot.adapter.files.allowed_origins |= {elsewhere.redirector}
        await bot.mention("a poster")
        [v1] = await wait_versions(bot, 1)
        logo = slack.add_file(png((250, 0, 0)), filename="logo.png")
        gemini.script.append(Behaviour.rate_limited("1s"))  # a retry, logged as a warning
        await bot.reply("put this logo top left", "1700000001.000100", files=[logo])
        await wait_versions(bot, 2)
        gemini.script.extend([Behaviour.server_error(503)] * 6)  # a failure, explained in the thread
        await bot.reply("make it darker", "1700000001.000200")
        await eventually(lambda: any("Gave up after 6 tries" in str(m.get("text")) for m in bot.thread()))
        stolen = {**logo, "url_private": f"{elsewhere.evil}/files/logo.png",
                  "url_private_download": f"{elsewhere.evil}/files/download/logo.png"}
        await bot.reply("use this one", "1700000001.000300", files=[stolen])
        await eventually(lambda: any("I did not fetch logo.png" in t for t in posted_texts(bot)))
        bounced = {**logo, "url_private": f"{elsewhere.redirector}/files/logo.png",
                   "url_private_download": f"{elsewhere.redirector}/files/download/logo.png"}
        await bot.reply("or this one", "1700000001.000400", files=[bounced])
        await eventually(lambda: any("Slack sent HTTP 302" in t for t in posted_texts(bot)))
        await bot.click(v1, "Approve", user="UINTERN")  # refused, privately
        await eventually(lambda: slack.ephemerals)
        await bot.react("white_check_mark", v1["ts"], user="UDIR")
        await eventually(lambda: any("v1 approved by <@UDIR>" in t for t in posted_texts(bot)))
        await bot.settle()
        state = await slack_state(bot)
        export = await bot.adapter.core.service.export(state.session.id, tmp_path / "export")
        assert export.exists()
        rows = await every_stored_row(bot.store)

    # The Slack token went to Slack's API and file origin, and nowhere else.
    assert slack.calls and all(c.headers.get("authorization") == f"Bearer {TOKEN}" for c in slack.calls)
    assert [d.authorization for d in slack.file_downloads] == [f"Bearer {TOKEN}"]
    assert elsewhere.seen == [] and elsewhere.redirected == 1
    # The Gemini key went to Gemini, in its header, never in a URL; nothing else went there.
    assert gemini.requests
    for r in gemini.requests:
        assert r.headers["x-goog-api-key"] == API_KEY and "key" not in r.query
        assert_no_secret("a request to Gemini", r.raw)
        others = {k: v for k, v in r.headers.items() if k != "x-goog-api-key"}
        assert_no_secret("Gemini request headers", repr(others))
    for c in slack.calls:
        assert_no_secret("a Slack API call's arguments", repr(c.args))
    posted = [str(m.get("text")) + repr(m.get("blocks")) for m in slack.messages.get("C0CHAN", [])]
    posted += [str(e.get("text")) for e in slack.ephemerals]
    assert any("Gemini is unavailable" in t for t in posted)
    assert any(caption_of(v).startswith("*v2") for v in versions_in(bot))
    assert_nothing_written_holds_a_secret(caplog.text, data_dir, tmp_path / "export", posted=posted,
                                          rows=rows)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=DISCORD_TOKEN) as server:
        yield server


async def test_a_full_discord_scenario_leaks_no_secret(
        fake: FakeDiscord, gemini: FakeGemini, data_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    async with discord_bot(fake, gemini, data_dir) as h:
        thread = (await h.mention("a poster"))["id"]
        [v1] = await h.wait_versions(thread, 1)
        await fake.user_message(thread, BOB, "put this logo top left",
                                attachments=[("logo.png", png((250, 0, 0)), "image/png")])
        await h.wait_versions(thread, 2)
        gemini.script.extend([Behaviour.server_error(503)] * 6)
        await fake.user_message(thread, ALICE, "make it darker")
        await h.wait_text(thread, "Gave up after 6 tries")
        click = await fake.click_button(v1, custom_id(v1, "Approve"), BOB)  # refused, privately
        await eventually(lambda: any(r.get("message", {}).get("flags", 0) & 64
                                     for r in fake.responses_to(click)))
        approve = await fake.add_reaction(thread, v1["id"], ALICE, "\u2705")
        await h.wait_text(thread, f"v1 approved by <@{ALICE}>")
        await h.settle(click, approve)
        session = await h.store.find_session(SessionKey("discord", GUILD, CHANNEL, thread))
        assert session is not None
        export = await h.adapter.core.service.export(session.id, tmp_path / "export")
        assert export.exists()
        rows = await every_stored_row(h.store)

    # The token went to Discord's API (REST) and gateway only. Interaction answers authenticate
    # with the interaction's own token in the path, and the CDN gets no credentials.
    authed = [c for c in fake.calls if "authorization" in c.headers]
    assert authed and {c.headers["authorization"] for c in authed} == {f"Bot {DISCORD_TOKEN}"}
    assert {c.route for c in fake.calls if "authorization" not in c.headers} <= {
        "/interactions/{iid}/{token}/callback", "/webhooks/{app}/{token}", "cdn"}
    assert identified_with(fake) == [DISCORD_TOKEN]
    for r in gemini.requests:
        assert r.headers["x-goog-api-key"] == API_KEY and "key" not in r.query
        assert_no_secret("a request to Gemini", r.raw + repr(
            {k: v for k, v in r.headers.items() if k != "x-goog-api-key"}).encode())
    posted = [str(m.get("content")) for msgs in fake.messages.values() for m in msgs]
    posted += [repr(r) for r in fake.responses_to(click)]
    assert any("Gemini is unavailable" in t for t in posted)
    assert_nothing_written_holds_a_secret(caplog.text, data_dir, tmp_path / "export", posted=posted,
                                          rows=rows)


def identified_with(fake: FakeDiscord) -> list[str]:
    return [str(d.get("token", "")).removeprefix("Bot ") for d in fake.identifies]


# The data directory ------------------------------------------------------------------------------

def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_data_directory_is_made_private_even_if_it_existed_open(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)  # as an operator's `mkdir` would leave it
    async with slack_bot(slack, gemini, data_dir) as bot:
        await bot.mention("a poster")
        await wait_versions(bot, 1)
        await bot.settle()
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "blobs") == 0o700
    blobs = [p for p in files_under(data_dir / "blobs")]
    assert blobs and all(mode(p) & 0o077 == 0 for p in blobs)  # image files: owner only


async def test_the_database_files_are_readable_by_their_owner_only(
        slack: FakeSlack, gemini: FakeGemini, data_dir: Path):
    if on_postgres():
        pytest.skip("the store is a PostgreSQL database: no database files in the data directory")
    async with slack_bot(slack, gemini, data_dir) as bot:
        await bot.mention("a poster")
        await wait_versions(bot, 1)
        await bot.settle()
        db_files = [p for p in data_dir.iterdir() if re.match(r"threadedit\.sqlite3", p.name)]
        assert db_files
        assert {p.name: oct(mode(p)) for p in db_files} == {p.name: "0o600" for p in db_files}
