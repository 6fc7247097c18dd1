"""`threadedit store copy`: a real data directory from the previous release into a real PostgreSQL
(tests/postgres.py), through the real CLI, run again, after new activity, and refused when the
target has moved on."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bot.storage import copy as store_copy
from bot.storage.copy import CopyRefused, copy_store
from bot.storage.engine import sqlite_url
from bot.storage.schema import metadata
from tests.processes import free_port, run_to_end
from tests.test_store_schema import FIXTURE

ROOT = Path(__file__).resolve().parents[1]
TABLES = [t.name for t in metadata.sorted_tables]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A copy of the data directory the 0007 release wrote."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "data"))


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "THREADEDIT_"))}
    return {**env, "PYTHONPATH": str(ROOT), "THREADEDIT_DATA_DIR": str(data_dir)}


async def _threadedit(data_dir: Path, *args: str) -> tuple[int, str, str]:
    return await run_to_end(data_dir.parent, _env(data_dir), *args, timeout=60)


def _pg(url: str) -> psycopg.Connection[Any]:
    u = make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True)


def _sqlite_rows(data_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "threadedit.sqlite3") as db:
        return db.execute(sql, params).fetchall()


def _pg_rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with _pg(url) as db:
        return db.execute(sql.replace("?", "%s"), params).fetchall()


def _counts(rows_of: Any) -> dict[str, int]:
    return {t: rows_of(f'SELECT count(*) FROM "{t}"' + (" WHERE name <> 'store_copy'" if t == "app_state"
                                                        else ""))[0][0] for t in TABLES}


def _session(rows_of: Any, session_id: int) -> list[list[tuple[Any, ...]]]:
    """Every column of a session, its turns and its approvals, with each value's Python type,
    read by the store's own driver, in one column order for both stores."""
    out = []
    for table, key in (("sessions", "id"), ("turns", "session_id"), ("approvals", "session_id")):
        columns = ", ".join(f'"{c.name}"' for c in metadata.tables[table].columns)
        rows = rows_of(f"SELECT {columns} FROM {table} WHERE {key} = ? ORDER BY id", session_id)
        out.append([tuple((type(v).__name__, v) for v in row) for row in rows])
    return out


def _copied(out: str) -> dict[str, tuple[int, int, int]]:
    """table -> (copied, updated, already there), from the report's table lines."""
    found = {}
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in TABLES:
            found[words[0]] = (int(words[3]), int(words[5]), int(words[7]))
    return found


async def test_a_data_directory_copies_then_reruns_copy_only_what_is_new(data_dir: Path, pg_url: str) -> None:
    code, out, err = await _threadedit(data_dir, "store", "copy", "--to", pg_url)
    assert (code, err) == (0, "")
    source_rows = lambda sql, *p: _sqlite_rows(data_dir, sql, *p)  # noqa: E731
    target_rows = lambda sql, *p: _pg_rows(pg_url, sql, *p)  # noqa: E731
    counts = _counts(source_rows)
    assert counts == _counts(target_rows) and all(counts.values())
    assert {t: c for t, (c, _, _) in _copied(out).items()} == counts
    sessions = [r[0] for r in source_rows("SELECT id FROM sessions")]
    for sid in sessions:  # every session, replayed value for value and type for type
        assert _session(source_rows, sid) == _session(target_rows, sid)
    assert "Checked:" in out and "2 sessions" in out
    assert f"stay in {data_dir / 'blobs'}" in out

    code, out, err = await _threadedit(data_dir, "store", "copy", "--to", pg_url)
    assert (code, err) == (0, "")
    assert _copied(out) == {t: (0, 0, n) for t, n in counts.items()}  # nothing twice

    code, _, err = await _threadedit(data_dir, "edit", "--session", "1", "make it black and white")
    assert code == 0, err
    code, out, err = await _threadedit(data_dir, "store", "copy", "--to", pg_url)
    assert (code, err) == (0, "")
    copied = _copied(out)
    # The new turn and its audit entry are copied; the session's head moved, so it is updated.
    assert copied["turns"] == (1, 0, counts["turns"]) and copied["audit_log"] == (1, 0, counts["audit_log"])
    assert copied["sessions"] == (0, 1, counts["sessions"] - 1)
    assert _counts(source_rows) == _counts(target_rows)
    assert _session(source_rows, 1) == _session(target_rows, 1)


async def test_new_rows_in_postgres_get_ids_past_the_copied_ones(data_dir: Path, pg_url: str,
                                                                  tmp_path: Path) -> None:
    elsewhere = tmp_path / "another-data-dir"  # --from names the store; THREADEDIT_DATA_DIR is not it
    code, out, err = await _threadedit(elsewhere, "store", "copy", "--from",
                                       sqlite_url(data_dir / "threadedit.sqlite3"), "--to", pg_url)
    assert code == 0, err
    assert f"stay in {data_dir / 'blobs'}" in out and not elsewhere.exists()
    now = "2026-12-06T10:00:00.000+00:00"
    with _pg(pg_url) as db:
        sid = db.execute("INSERT INTO sessions (platform, workspace, channel, thread, model, started_by,"
                         " created_at, updated_at) VALUES ('slack', 'T9', 'C9', '9.9', 'm', 'U9', %s, %s)"
                         " RETURNING id", (now, now)).fetchone()[0]
        tid = db.execute("INSERT INTO turns (session_id, kind, instruction, author, user_content, state,"
                         " model, created_at) VALUES (%s, 'edit', 'x', 'U9', '{}', 'queued', 'm', %s)"
                         " RETURNING id", (sid, now)).fetchone()[0]
        aid = db.execute("INSERT INTO audit_log (actor, action, outcome, at) VALUES ('U9', 'edit', 'ok', %s)"
                         " RETURNING id", (now,)).fetchone()[0]
    assert (sid, tid, aid) == (3, 12, 19)  # the fixture's highest ids are 2, 11 and 18

    # The fleet has written to the target since: a second copy would overwrite nothing; it refuses.
    code, out, err = await _threadedit(data_dir, "store", "copy", "--to", pg_url)
    assert (code, out) == (2, "")
    assert err == ("The target has turns row 12, which the source does not have and no copy from it "
                   "wrote, so the target has moved on; nothing was copied.\n")


async def test_a_target_that_moved_on_is_refused_and_left_as_it_was(data_dir: Path, pg_url: str) -> None:
    code, _, err = await _threadedit(data_dir, "store", "copy", "--to", pg_url)
    assert code == 0, err
    with _pg(pg_url) as db:
        db.execute("UPDATE turns SET instruction = 'changed in the fleet' WHERE id = 3")
    with sqlite3.connect(data_dir / "threadedit.sqlite3") as db:  # and the source moves on too
        db.execute("UPDATE turns SET delivered_at = '2026-12-06T00:00:00.000+00:00' WHERE id = 3")
        db.execute("DELETE FROM inbound_events WHERE platform = 'slack'")
    code, out, err = await _threadedit(data_dir, "store", "copy", "--to", pg_url)
    assert (code, out) == (2, "")
    assert err == ("The target's turns row 3 differs from the source's and was written there by something "
                   "other than a copy from this source, so the target has moved on; nothing was copied.\n")
    assert _pg_rows(pg_url, "SELECT instruction, delivered_at FROM turns WHERE id = 3") == [
        ("changed in the fleet", None)]
    assert len(_pg_rows(pg_url, "SELECT * FROM inbound_events")) == 2


async def test_rows_the_source_changed_or_deleted_since_the_last_copy_follow_it(
        data_dir: Path, pg_url: str) -> None:
    source = sqlite_url(data_dir / "threadedit.sqlite3")
    await copy_store(source, pg_url, batch_rows=3)  # several batches, composite keys among them
    with sqlite3.connect(data_dir / "threadedit.sqlite3") as db:
        db.execute("UPDATE turns SET delivered_at = '2026-12-06T00:00:00.000+00:00' WHERE id = 3")
        db.execute("DELETE FROM inbound_events WHERE platform = 'slack'")  # a released claim
        db.execute("UPDATE sessions SET head_turn_id = NULL WHERE id = 2")
    report = await copy_store(source, pg_url, batch_rows=3)
    done = {t.name: t for t in report.tables}
    assert (done["turns"].updated, done["inbound_events"].deleted, done["sessions"].updated) == (1, 1, 1)
    assert _pg_rows(pg_url, "SELECT head_turn_id FROM sessions WHERE id = 2") == [(None,)]
    assert _pg_rows(pg_url, "SELECT delivered_at FROM turns WHERE id = 3") == [
        ("2026-12-06T00:00:00.000+00:00",)]
    assert _pg_rows(pg_url, "SELECT platform FROM inbound_events") == [("discord",)]


async def test_another_data_directory_never_overwrites_what_one_copied(
        data_dir: Path, pg_url: str, tmp_path: Path) -> None:
    await copy_store(sqlite_url(data_dir / "threadedit.sqlite3"), pg_url)
    other = Path(shutil.copytree(FIXTURE, tmp_path / "other")) / "threadedit.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("UPDATE sessions SET model = 'another bot' WHERE id = 2")
    with pytest.raises(CopyRefused, match=r"^The target's sessions row 2 differs .* moved on"):
        await copy_store(sqlite_url(other), pg_url)
    assert _pg_rows(pg_url, "SELECT model FROM sessions WHERE id = 2") != [("another bot",)]


@pytest.mark.parametrize(("sql", "said"), [
    ("UPDATE turns SET instruction = 'a' || char(0) || 'b' WHERE id = 4",
     "The source's turns row 4 has a NUL character (\\x00) in instruction, which PostgreSQL text cannot "
     "hold; remove it there and copy again (nothing was copied)."),
    ("UPDATE turns SET version = 'three' WHERE id = 3",
     "The source's turns row 3 holds str in version, where PostgreSQL needs integer; nothing was copied."),
    ("UPDATE turns SET version = 3000000000 WHERE id = 3",
     "The source's turns row 3 has 3000000000 in version, beyond PostgreSQL's integer; nothing was copied."),
])
async def test_values_postgresql_cannot_hold_are_named_and_nothing_is_copied(
        data_dir: Path, pg_url: str, sql: str, said: str) -> None:
    with sqlite3.connect(data_dir / "threadedit.sqlite3") as db:
        db.execute(sql)
    with pytest.raises(CopyRefused) as caught:
        await copy_store(sqlite_url(data_dir / "threadedit.sqlite3"), pg_url)
    assert str(caught.value) == said
    assert _pg_rows(pg_url, "SELECT count(*) FROM sessions") == [(0,)]


async def test_a_failed_check_commits_nothing(data_dir: Path, pg_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    advance = store_copy._advance_sequences

    async def advance_and_spoil(dst: Any) -> None:  # a copy that went wrong after writing
        await advance(dst)
        from sqlalchemy import text
        await dst.execute(text("UPDATE turns SET text_reply = 'spoilt' WHERE id = 6"))

    monkeypatch.setattr(store_copy, "_advance_sequences", advance_and_spoil)
    with pytest.raises(CopyRefused) as caught:
        await copy_store(sqlite_url(data_dir / "threadedit.sqlite3"), pg_url)
    assert str(caught.value) == ("The check found turns row 6 different in the target (text_reply); "
                                 "nothing was copied.")
    assert _pg_rows(pg_url, "SELECT count(*) FROM turns") == [(0,)]


async def test_an_unreachable_target_is_one_sentence_without_the_password(data_dir: Path) -> None:
    port = free_port()
    code, out, err = await _threadedit(data_dir, "store", "copy", "--to",
                                       f"postgresql+psycopg://bot:s3cret-Pa55@127.0.0.1:{port}/threadedit")
    assert (code, out) == (2, "")
    assert err == (f"Cannot open the store: PostgreSQL at 127.0.0.1:{port}: nothing is listening there "
                   "(connection refused).\n")


@pytest.mark.parametrize(("args", "said"), [
    (["--to", "sqlite+aiosqlite:////tmp/elsewhere.sqlite3"],
     "--to names the SQLite file /tmp/elsewhere.sqlite3; store copy writes to PostgreSQL only "
     "(postgresql+psycopg://user:password@host:5432/database).\n"),
    (["--to", "not a url"], "--to is not a database URL; give one such as "
     "postgresql+psycopg://user:password@host:5432/database.\n"),
    (["--from", "postgresql+psycopg://a:pw@db:5432/x", "--to", "postgresql+psycopg://b:pw2@DB/x"],
     "--from and --to both name PostgreSQL at DB:5432; copy into another database.\n"),
])
async def test_targets_that_cannot_be_copied_to_are_one_sentence(
        data_dir: Path, args: list[str], said: str) -> None:
    code, out, err = await _threadedit(data_dir, "store", "copy", *args)
    assert (code, out, err) == (2, "", said)


async def test_a_missing_source_is_one_sentence_and_makes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    code, out, err = await _threadedit(empty, "store", "copy", "--to", "postgresql+psycopg://u@h/db")
    assert (code, out) == (2, "")
    assert err == (f"There is no store to copy at {empty / 'threadedit.sqlite3'}; set THREADEDIT_DATA_DIR "
                   "to the data directory or give --from URL.\n")
    assert not empty.exists()


async def test_store_copy_explains_itself(data_dir: Path) -> None:
    code, out, _ = await _threadedit(data_dir, "store", "copy", "--help")
    assert code == 0
    assert "--to URL" in out and "--from URL" in out and "Images (blobs/) are not copied" in out
    code, _, err = await _threadedit(data_dir, "store", "copy")
    assert code == 2 and err.endswith("the following arguments are required: --to.\n")


async def test_a_damaged_source_gets_the_sentence_every_command_gives(tmp_path: Path) -> None:
    damaged = tmp_path / "data"
    damaged.mkdir()
    (damaged / "threadedit.sqlite3").write_bytes(b"not a database, " * 400)
    code, out, err = await _threadedit(damaged, "store", "copy", "--to", "postgresql+psycopg://u@h/db")
    assert (code, out) == (2, "")
    assert err == (f"The database {damaged / 'threadedit.sqlite3'} is damaged (file is not a database); "
                   "move it aside or restore it from a backup, then run threadedit again (an empty "
                   "database is made in its place).\n")
