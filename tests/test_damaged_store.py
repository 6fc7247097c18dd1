"""A data directory or database that cannot be used: every command, the playground and `run` say
so in one sentence naming the file and what to do, exit 2, and end (the database connection's
thread once kept the process alive for ever after a traceback)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.slack_server import FakeSlack
from tests.processes import free_port, run_to_end
from tests.test_cli import _env

DAMAGED = "move it aside or restore it from a backup"
COMMANDS = [["history", "1"], ["edit", "a lighthouse"], ["usage"], ["playground", "--port", "0"], ["run"]]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


def _env_for(tmp: Path, data: Path, slack: FakeSlack) -> dict[str, str]:
    # Slack in HTTP mode, so that `run` gets as far as opening the store.
    return {**_env(tmp), "THREADEDIT_DATA_DIR": str(data), "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": "8f742231b10e8888abcd99yyyzzz85a5",
            "SLACK_API_URL": slack.api_url, "THREADEDIT_PORT": str(free_port())}


async def _one_sentence(tmp: Path, env: dict[str, str], args: list[str]) -> str:
    code, out, err = await run_to_end(tmp, env, *args, timeout=30)  # fails on a hang
    assert code == 2 and "Traceback" not in out + err, (args, out, err)
    assert len(err.strip().splitlines()) == 1 and err.rstrip().endswith("."), (args, err)
    return err.strip()


@pytest.fixture(scope="module")
def real_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A database made by the product itself, with a session in it."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("real")
    done = subprocess.run([sys.executable, "-m", "threadedit", "edit", "a boat"], cwd=tmp, timeout=60,
                          env={**_env(tmp)}, capture_output=True)
    assert done.returncode == 0, done.stderr
    return (tmp / "data" / "threadedit.sqlite3").read_bytes()


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
async def test_a_file_that_is_not_a_database(tmp_path: Path, slack: FakeSlack, args: list[str]):
    data = tmp_path / "data"
    data.mkdir()
    (data / "threadedit.sqlite3").write_bytes(b"these are not the pages you are looking for\n" * 200)
    err = await _one_sentence(tmp_path, _env_for(tmp_path, data, slack), args)
    assert err == (f"The database {data / 'threadedit.sqlite3'} is damaged (file is not a database); "
                   f"{DAMAGED}, then run threadedit again (an empty database is made in its place).")


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
async def test_a_truncated_database(tmp_path: Path, slack: FakeSlack, real_db: bytes, args: list[str]):
    data = tmp_path / "data"
    data.mkdir()
    page = int.from_bytes(real_db[16:18], "big")
    assert len(real_db) > 4 * page
    (data / "threadedit.sqlite3").write_bytes(real_db[:2 * page])  # the rest of its pages are gone
    err = await _one_sentence(tmp_path, _env_for(tmp_path, data, slack), args)
    assert "is damaged (database disk image is malformed)" in err and DAMAGED in err


# As root (as in CI containers) a chmod 0500 folder is still writable, so these use obstacles
# root meets too: each reaches the OSError or SQLite error the operating system gives.
def _under_a_file(tmp: Path) -> Path:
    (tmp / "a-file").write_text("not a folder")
    return tmp / "a-file" / "data"  # mkdir: NotADirectoryError


def _db_is_a_folder(tmp: Path) -> Path:
    (tmp / "data" / "threadedit.sqlite3").mkdir(parents=True)  # open(O_RDWR): IsADirectoryError
    return tmp / "data"


def _wal_is_a_folder(tmp: Path) -> Path:
    (tmp / "data" / "threadedit.sqlite3-wal").mkdir(parents=True)  # SQLite: disk I/O error
    return tmp / "data"


def _blobs_is_a_file(tmp: Path) -> Path:
    (tmp / "data").mkdir()
    (tmp / "data" / "blobs").write_text("")  # the database opens; the image folder cannot be made
    return tmp / "data"


@pytest.mark.parametrize(("make", "needle"), [
    (_under_a_file, "Cannot create the folder {data} (Not a directory); check THREADEDIT_DATA_DIR"),
    (_db_is_a_folder, "Cannot open the database {data}/threadedit.sqlite3 for writing (Is a directory)"),
    (_wal_is_a_folder, "Cannot use the database {data}/threadedit.sqlite3 (disk I/O error)"),
    (_blobs_is_a_file, "Cannot create the folder {data}/blobs (File exists)"),
], ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("args", [["history", "1"], ["playground", "--port", "0"], ["run"]],
                         ids=lambda a: a[0])
async def test_a_data_directory_that_cannot_be_used(tmp_path: Path, slack: FakeSlack, make, needle, args):
    data = make(tmp_path)
    err = await _one_sentence(tmp_path, _env_for(tmp_path, data, slack), args)
    assert err.startswith(needle.format(data=data)), err


@pytest.mark.skipif(os.geteuid() == 0,
                    reason="root writes into a read-only folder; the obstacles above cover root")
async def test_a_read_only_data_directory(tmp_path: Path, slack: FakeSlack):
    data = tmp_path / "data"
    data.mkdir(mode=0o500)
    try:
        err = await _one_sentence(tmp_path, _env_for(tmp_path, data, slack), ["history", "1"])
    finally:
        data.chmod(0o700)
    assert err.startswith(f"Cannot open the database {data}/threadedit.sqlite3 for writing "
                          "(Permission denied)")
