"""`threadedit run` and `threadedit playground` started as people start them: a real process in a
folder holding a `.env` written by hand, in each form people write list settings, stopped by
SIGTERM. The unit tests in test_config.py read settings objects; these read the file the way
the product does, which is where `cp .env.example .env && threadedit run` once crashed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_server import FakeSlack
from tests.processes import free_port, run_to_end, start_playground, start_run, stop
from tests.test_cli import _env

ROOT = Path(__file__).resolve().parents[1]

# Every list setting, written the ways a person writes a list (with the quotes some add).
LIST_FORMS = {
    "ids with commas and spaces": (
        "SLACK_APPROVERS=U0AAAAAA1, U0BBBBBB2\n"
        "SLACK_ALLOWED_CHANNELS=C0AAAAAA1,C0BBBBBB2\n"
        'SLACK_SETTINGS_CHANGERS="U0AAAAAA1 , U0BBBBBB2"\n'
        "SLACK_FILE_ORIGINS=https://files.slack.com, https://files-edu.slack.com/\n"
        "DISCORD_ALLOWED_CHANNELS=1234567890123456789, 1234567890123456790\n"),
    "ids with spaces": (
        "SLACK_APPROVERS=U0AAAAAA1 U0BBBBBB2\n"
        "SLACK_ALLOWED_CHANNELS='C0AAAAAA1 C0BBBBBB2'\n"
        "SLACK_SETTINGS_CHANGERS=U0AAAAAA1   U0BBBBBB2\n"
        "SLACK_FILE_ORIGINS=https://files.slack.com https://files-edu.slack.com\n"
        "DISCORD_ALLOWED_CHANNELS=1234567890123456789 1234567890123456790\n"),
    "one id": (
        "SLACK_APPROVERS=U0AAAAAA1\n"
        "SLACK_ALLOWED_CHANNELS=C0AAAAAA1\n"
        "SLACK_SETTINGS_CHANGERS=U0AAAAAA1\n"
        "SLACK_FILE_ORIGINS=https://files.slack.com\n"
        "DISCORD_ALLOWED_CHANNELS=1234567890123456789\n"),
    "a JSON list": (
        'SLACK_APPROVERS=["U0AAAAAA1","U0BBBBBB2"]\n'
        "SLACK_ALLOWED_CHANNELS='[\"C0AAAAAA1\", \"C0BBBBBB2\"]'\n"
        'SLACK_SETTINGS_CHANGERS=["U0AAAAAA1"]\n'
        'SLACK_FILE_ORIGINS=["https://files.slack.com"]\n'
        "DISCORD_ALLOWED_CHANNELS=[1234567890123456789, \"1234567890123456790\"]\n"),
}


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:  # its tokens carry the real prefixes (xoxb-, xapp-)
        yield server


@pytest.fixture
async def discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def _platforms(slack: FakeSlack, discord: FakeDiscord, port: int) -> dict[str, str]:
    """The lines a person fills in to run both chat adapters (HTTP mode for Slack)."""
    return {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
            "SLACK_API_URL": slack.api_url, "THREADEDIT_PORT": str(port),
            "DISCORD_TOKEN": discord.token, "DISCORD_API_BASE": discord.api_base}


def _env_example_filled_in(values: dict[str, str]) -> str:
    """.env.example verbatim, with the given lines filled in where they stand."""
    text = (ROOT / ".env.example").read_text()
    for name, value in values.items():
        text, n = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert n == 1, name
    return text


def _dot_env(tmp: Path, form: str, values: dict[str, str]) -> None:
    if form == ".env.example":
        (tmp / ".env").write_text(_env_example_filled_in(values))
    else:
        lines = "".join(f"{k}={v}\n" for k, v in values.items())
        (tmp / ".env").write_text(f"# written by hand\n{lines}{LIST_FORMS[form]}")


FORMS = [*LIST_FORMS, ".env.example"]


async def test_run_starts_with_the_lists_in_the_environment(tmp_path: Path, slack: FakeSlack,
                                                            discord: FakeDiscord):
    """The same forms set as environment variables (systemd, docker -e) rather than in .env."""
    port = free_port()
    lists = {"SLACK_APPROVERS": "U0AAAAAA1, U0BBBBBB2", "SLACK_ALLOWED_CHANNELS": "C0AAAAAA1",
             "SLACK_SETTINGS_CHANGERS": "U0AAAAAA1 U0BBBBBB2",
             "SLACK_FILE_ORIGINS": '["https://files.slack.com"]',
             "DISCORD_ALLOWED_CHANNELS": '[1234567890123456789, "1234567890123456790"]'}
    proc, line = await start_run(tmp_path, {**_env(tmp_path), **_platforms(slack, discord, port), **lists})
    code, rest = await stop(proc) if "started" in line else (-1, "")
    assert line.startswith("threadedit: started Slack (HTTP") and " and Discord" in line, line + rest
    assert code == 0 and "Traceback" not in rest, rest


@pytest.mark.parametrize("form", FORMS)
async def test_run_starts_with_a_hand_written_dot_env(tmp_path: Path, slack: FakeSlack,
                                                      discord: FakeDiscord, form: str):
    port = free_port()
    _dot_env(tmp_path, form, _platforms(slack, discord, port))
    proc, line = await start_run(tmp_path, _env(tmp_path))
    code, rest = await stop(proc) if "started" in line else (-1, "")
    assert line.startswith(f"threadedit: started Slack (HTTP, POST http://127.0.0.1:{port}/slack/events)"
                           " and Discord"), line + rest
    assert code == 0 and "Traceback" not in rest, rest


@pytest.mark.parametrize("form", FORMS)
async def test_playground_starts_with_a_hand_written_dot_env(tmp_path: Path, form: str):
    if form == ".env.example":
        (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())  # exactly as shipped
    else:
        _dot_env(tmp_path, form, {})
    proc, line = await start_playground(tmp_path, _env(tmp_path), "--port", "0")
    code, rest = await stop(proc)
    assert line.startswith("threadedit playground: http://127.0.0.1:"), line + rest
    assert code == 0 and "Traceback" not in rest, rest


def _one_sentence(err: str, name: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(name) and err.rstrip().endswith("."), err


@pytest.mark.parametrize(("line", "name"), [
    ("THREADEDIT_PORT=abc", "THREADEDIT_PORT must be a whole number"),
    ("THREADEDIT_MAX_CONCURRENCY=0", "THREADEDIT_MAX_CONCURRENCY must be greater than or equal to 1"),
    ('SLACK_APPROVERS=["U0AAAAAA1", "U0BBBBBB2"', "SLACK_APPROVERS must be ids separated by commas"),
    ("DISCORD_ALLOWED_CHANNELS=[[1]]", "DISCORD_ALLOWED_CHANNELS must be ids separated by commas"),
])
async def test_run_with_a_bad_value_is_one_sentence_naming_it(tmp_path: Path, slack: FakeSlack,
                                                               discord: FakeDiscord, line: str, name: str):
    values = _platforms(slack, discord, free_port())
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()) + line + "\n")
    code, out, err = await run_to_end(tmp_path, _env(tmp_path), "run")
    assert code == 2 and out == ""
    _one_sentence(err, name)


async def test_a_bad_value_from_the_environment_stops_the_playground_with_one_sentence(tmp_path: Path):
    env = _env(tmp_path, THREADEDIT_MAX_CONCURRENCY="lots")
    code, out, err = await run_to_end(tmp_path, env, "playground", "--port", "0")
    assert code == 2 and out == ""
    _one_sentence(err, "THREADEDIT_MAX_CONCURRENCY must be a whole number (got 'lots').")


# A stop while Python is still importing the program: made to land there for certain by sending the
# signal from inside the import of threadedit.cli itself.
_STOP_DURING_IMPORT = """
import builtins, os, signal, sys
real_import = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "threadedit.cli":
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.{sig})
    return real_import(name, *args, **kwargs)
builtins.__import__ = importing
sys.argv = ["threadedit", "run"]
from threadedit.entry import main
raise SystemExit(main())
"""


@pytest.mark.parametrize(("sig", "status"), [("SIGINT", 130), ("SIGTERM", 0)])
async def test_a_stop_while_the_program_loads_ends_quietly(tmp_path: Path, sig: str, status: int) -> None:
    import asyncio
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STOP_DURING_IMPORT.format(sig=sig), cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == status, err.decode()
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err.decode()
