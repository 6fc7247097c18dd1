"""`threadedit run` when Slack or Discord is down, refuses a token, or is given the wrong kind of
token: real processes, read line by line; stops by SIGTERM and Ctrl-C at several moments."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters import backoff
from adapters.backoff import Backoff
from adapters.discord.app import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from adapters.slack.settings import SlackSettings
from adapters.slack.startup import SlackStartError, check_bot_token, check_token_kinds
from bot.app import open_app
from bot.config import load_settings
from tests.conftest import API_KEY
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.slack_server import FakeSlack
from tests.processes import free_port
from tests.slack_harness import SECRET, TOKEN, eventually
from tests.test_cli import _env

APP_TOKEN = "xapp-1-A0TEST-1234567890-abcdef0123456789"
RETRY = re.compile(r"retrying in (\d+\.\d) s\.$")


class Run:
    """A `threadedit run` process whose stderr is read line by line as it comes."""

    started: list[Run] = []  # killed after each test, so a failing test leaves no process behind

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, tmp: Path, **env: str) -> Run:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "threadedit", "run", cwd=tmp, env=_env(tmp, **env),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        cls.started.append(run := cls(proc))
        return run

    async def line(self, contains: str, within: float = 30) -> str:
        """Read until a line containing `contains` (that line); fail if the process ends first."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.proc.stderr.readline()
                if not raw:
                    raise AssertionError(f"exited without {contains!r}: {self.text}")
                self.lines.append(raw.decode().rstrip("\n"))
                if contains in self.lines[-1]:
                    return self.lines[-1]

    async def stop(self, sig: int = signal.SIGTERM, within: float = 5) -> int:
        """Send `sig`; the process must end within `within` seconds. Returns its exit code."""
        self.proc.send_signal(sig)
        return await self.finish(within)

    async def finish(self, within: float = 30) -> int:
        assert self.proc.stderr is not None
        rest = await asyncio.wait_for(self.proc.stderr.read(), within)
        self.lines += rest.decode().splitlines()
        return await asyncio.wait_for(self.proc.wait(), within)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def assert_clean(self) -> None:
        assert "Traceback" not in self.text and "Unclosed" not in self.text, self.text
        for secret in (TOKEN, APP_TOKEN, SECRET, "discord-token"):
            assert secret not in self.text


@pytest.fixture(autouse=True)
async def no_process_left() -> AsyncIterator[None]:
    yield
    while Run.started:
        proc = Run.started.pop().proc
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def closed_port() -> int:
    return free_port()  # nothing listens there: connections are refused


@pytest.fixture
async def black_hole() -> AsyncIterator[tuple[int, asyncio.Event]]:
    """A server that accepts connections and never answers; the event is set on the first."""
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], accepted
    for w in writers:
        w.close()
    server.close()


def delays(run: Run) -> list[float]:
    return [float(m.group(1)) for line in run.lines if (m := RETRY.search(line))]


def assert_doubling(found: list[float], n: int) -> None:
    """1 s, 2 s, 4 s ..., each shortened by at most 20% of jitter."""
    assert len(found) >= n, found
    for i, d in enumerate(found[:n]):
        assert 0.8 * 2**i - 0.05 <= d <= 2**i, found


# ---- Slack down ------------------------------------------------------------------------------

async def test_socket_mode_with_slack_down_retries_one_line_each_then_stops_on_sigterm(
        tmp_path: Path, closed_port: int):
    run = await Run.start(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_APP_TOKEN=APP_TOKEN,
                          SLACK_API_URL=f"http://127.0.0.1:{closed_port}/api/")
    for _ in range(3):
        await run.line("retrying in")
    assert await run.stop() == 0  # SIGTERM during the third wait
    run.assert_clean()
    retries = [line for line in run.lines if "retrying in" in line]
    assert len(retries) == len(run.lines) == 3  # one line per retry, nothing else
    assert retries[0].startswith(f"threadedit: Slack is unreachable at 127.0.0.1:{closed_port} "
                                 "(auth.test: connection refused); check the network")
    assert "SLACK_API_URL" in retries[0]
    assert_doubling(delays(run), 3)
    assert "started" not in run.text


async def test_ctrl_c_during_the_first_retry_wait_stops_at_once(tmp_path: Path, closed_port: int):
    run = await Run.start(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                          SLACK_API_URL=f"http://127.0.0.1:{closed_port}/api/",
                          THREADEDIT_PORT=str(free_port()))
    await run.line("retrying in")
    assert await run.stop(signal.SIGINT) == 0
    run.assert_clean()


async def test_sigterm_while_slack_has_not_answered_yet_stops_at_once(
        tmp_path: Path, black_hole: tuple[int, asyncio.Event]):
    port, accepted = black_hole
    run = await Run.start(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_APP_TOKEN=APP_TOKEN,
                          SLACK_API_URL=f"http://127.0.0.1:{port}/api/")
    await asyncio.wait_for(accepted.wait(), 30)  # auth.test is on its way, unanswered
    assert await run.stop() == 0
    run.assert_clean()
    assert run.lines == []


async def test_socket_mode_retries_a_failing_websocket_then_starts_when_slack_is_back(
        tmp_path: Path, slack: FakeSlack, gemini: FakeGemini, closed_port: int):
    slack.socket_url = f"ws://127.0.0.1:{closed_port}/link"  # apps.connections.open works, the socket not
    run = await Run.start(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_APP_TOKEN=slack.app_token,
                          SLACK_API_URL=slack.api_url, GEMINI_API_KEY=API_KEY,
                          GEMINI_BASE_URL=gemini.base_url)
    first = await run.line("retrying in")
    assert f"Slack is unreachable at {slack.api_url.split('/')[2]} (Socket Mode: connection refused)" in first
    await run.line("retrying in")
    slack.socket_url = None  # Slack is back
    started = await run.line("started")
    assert started.startswith("threadedit: started Slack (Socket Mode); engine gemini")
    await slack.wait_socket()
    opens = [c for c in slack.calls if c.method == "apps.connections.open"]
    assert len(opens) == 3  # a new URL for every attempt: each is good for one connection
    assert await run.stop() == 0  # and after start, SIGTERM still stops it
    run.assert_clean()
    assert_doubling(delays(run), 2)


# ---- Slack refuses a token -------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_bot_token_slack_refuses_is_one_sentence_and_exit_2(
        tmp_path: Path, slack: FakeSlack, mode: str):
    wrong = "xoxb-1111-2222-revokedtokenvalue"
    slack.refused_tokens[wrong] = "invalid_auth"
    extra = {"SLACK_APP_TOKEN": slack.app_token} if mode == "socket" else {
        "SLACK_SIGNING_SECRET": SECRET, "THREADEDIT_PORT": str(free_port())}
    run = await Run.start(tmp_path, SLACK_BOT_TOKEN=wrong, SLACK_API_URL=slack.api_url, **extra)
    assert await run.finish() == 2
    run.assert_clean()
    assert run.lines == ["Slack refused SLACK_BOT_TOKEN (invalid_auth): copy the Bot User OAuth "
                         "Token (xoxb-...) again from the app's Install App page, and reinstall "
                         "the app if it was removed."]
    assert wrong not in run.text
    assert [c.method for c in slack.calls] == ["auth.test"]  # nothing else was tried


async def test_an_app_token_slack_refuses_is_one_sentence_and_exit_2(tmp_path: Path, slack: FakeSlack):
    revoked = "xapp-1-A0TEST-999-revokedappvalue"
    slack.refused_tokens[revoked] = "token_revoked"
    run = await Run.start(tmp_path, SLACK_BOT_TOKEN=TOKEN, SLACK_APP_TOKEN=revoked,
                          SLACK_API_URL=slack.api_url)
    assert await run.finish() == 2
    run.assert_clean()
    assert run.lines == ["Slack refused SLACK_APP_TOKEN (token_revoked): generate an app-level "
                         "token with connections:write (Basic Information → App-Level Tokens) and "
                         "put it in SLACK_APP_TOKEN."]
    assert revoked not in run.text


@pytest.mark.parametrize(("variable", "value", "kind"), [
    ("SLACK_BOT_TOKEN", APP_TOKEN, "an app-level token (xapp-)"),
    ("SLACK_BOT_TOKEN", "xoxp-1234-5678-user-token", "a user token (xoxp-)"),
    ("SLACK_APP_TOKEN", TOKEN, "a bot token (xoxb-)"),
])
async def test_a_token_of_the_wrong_kind_is_refused_before_calling_slack(
        tmp_path: Path, slack: FakeSlack, variable: str, value: str, kind: str):
    env = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, variable: value}
    run = await Run.start(tmp_path, SLACK_API_URL=slack.api_url, **env)
    assert await run.finish() == 2
    run.assert_clean()
    [line] = run.lines
    assert line.startswith(f"{variable} is {kind}; it must be ")
    assert value not in line
    assert slack.calls == []


# ---- Discord down ----------------------------------------------------------------------------

async def test_discord_down_retries_one_line_each_then_stops_on_sigterm(
        tmp_path: Path, closed_port: int):
    run = await Run.start(tmp_path, DISCORD_TOKEN="discord-token.abc.def",
                          DISCORD_API_BASE=f"http://127.0.0.1:{closed_port}/api/v10")
    for _ in range(3):
        await run.line("retrying in")
    assert await run.stop() == 0
    run.assert_clean()
    assert len(run.lines) == 3
    assert run.lines[0].startswith(f"threadedit: Discord is unreachable at 127.0.0.1:{closed_port} "
                                   "(connection refused); check the network, a proxy, or "
                                   "DISCORD_API_BASE; retrying in ")
    assert_doubling(delays(run), 3)


async def test_discord_gateway_down_is_one_line_per_retry_and_sigterm_stops_it(
        tmp_path: Path, closed_port: int):
    async with FakeDiscord(token="discord-token.abc.def") as fake:
        fake.gateway_url = f"ws://127.0.0.1:{closed_port}/gateway"  # REST works, the gateway not
        run = await Run.start(tmp_path, DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base)
        line = await run.line("retrying in")
        assert line.endswith(s := "Discord's gateway connection failed (connection refused); "
                             f"retrying in {delays(run)[0]:.1f} s."), s
        assert await run.stop() == 0
    run.assert_clean()


async def test_discord_refusing_the_token_is_one_sentence_exit_2_and_a_clean_close(tmp_path: Path):
    async with FakeDiscord(token="discord-token.abc.def") as fake:
        run = await Run.start(tmp_path, DISCORD_TOKEN="discord-token.wrong.one",
                              DISCORD_API_BASE=fake.api_base)
        assert await run.finish() == 2
    run.assert_clean()
    assert run.lines == ["Discord refused DISCORD_TOKEN; copy the bot token again from the "
                         "Developer Portal (Bot → Reset Token)."]


async def test_failed_discord_logins_leave_no_http_session_open(
        monkeypatch: pytest.MonkeyPatch, data_dir: Path, closed_port: int):
    # discord.py opens a new aiohttp session at every login; one left open is reported as
    # "Unclosed client session" when collected while the process retries. In-process, so the
    # collection can be forced.
    lines: list[str] = []
    monkeypatch.setattr(backoff, "report", lines.append)
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(
        lambda _loop, context: reported.append(str(context.get("message"))))
    settings = load_settings(THREADEDIT_DATA_DIR=str(data_dir))
    async with open_app(settings) as app:
        adapter = DiscordAdapter(DiscordSettings(
            DISCORD_TOKEN="discord-token.abc.def",
            DISCORD_API_BASE=f"http://127.0.0.1:{closed_port}/api/v10"), app)
        start = asyncio.create_task(adapter.start())
        await eventually(lambda: len(lines) >= 2)
        gc.collect()  # the first login's session, replaced by the second's, is collected
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await start
        await adapter.aclose()
    gc.collect()
    assert all("Discord is unreachable" in line for line in lines)
    assert reported == []


# ---- in process: the pieces ------------------------------------------------------------------

def test_backoff_doubles_from_1_s_to_60_s_and_jitter_only_shortens():
    longest, shortest = Backoff(rng=lambda: 0.0), Backoff(rng=lambda: 1.0)
    assert [longest.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert [round(shortest.next_delay(), 2) for _ in range(8)] == [
        0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 48, 48]


@pytest.mark.parametrize("bot_token", ["xoxb-1-2-abc", "xoxe.xoxb-1-MS0yLTQy"])
def test_bot_tokens_and_rotating_bot_tokens_are_of_the_right_kind(bot_token: str):
    said: list[str] = []
    check_token_kinds(SlackSettings(SLACK_BOT_TOKEN=bot_token, SLACK_APP_TOKEN=APP_TOKEN), say=said.append)
    # A rotating token works, until Slack expires it: the operator is told when, once.
    assert said == ([] if bot_token.startswith("xoxb-") else [
        "SLACK_BOT_TOKEN is a rotating token (xoxe.xoxb-, the app has token rotation on): Slack "
        "expires it within 12 hours and threadedit cannot renew it; put the new one in "
        "SLACK_BOT_TOKEN and restart before then."])


@pytest.mark.parametrize("error", ["not_authed", "token_revoked", "account_inactive", "token_expired"])
async def test_every_refusal_of_the_bot_token_is_one_sentence(slack: FakeSlack, error: str):
    slack.refused_tokens[TOKEN] = error
    client = AsyncWebClient(token=TOKEN, base_url=slack.api_url)
    with pytest.raises(SlackStartError) as refused:
        await check_bot_token(client, slack.api_url, say=pytest.fail)
    assert str(refused.value).startswith(f"Slack refused SLACK_BOT_TOKEN ({error}): ")
    slack.refused_tokens.clear()
    assert (await check_bot_token(client, slack.api_url, say=pytest.fail))["user_id"] == "UBOT"
