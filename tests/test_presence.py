"""Worker presence (bot/storage/presence.py): a worker killed with SIGKILL is seen gone at once, on
SQLite (a flock on the data directory's workers/ file) and on PostgreSQL (a session advisory lock),
so its turns are taken without waiting out their leases (bot/leases.py)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.domain import SessionKey, TurnKind
from bot.leases import TurnLeases
from bot.storage import presence as presence_module
from bot.storage.presence import AdvisoryPresence, FilePresence
from bot.storage.uow import Store
from tests.fakes.memory_store import MemoryStore

REPO = Path(__file__).resolve().parents[1]
KEY = SessionKey("slack", "T1", "C1", "1700000000.000100")

# A worker in a process of its own: marks itself present, says so, and waits to be killed.
HOLDER = """
import asyncio, sys
from pathlib import Path
from bot.storage.presence import AdvisoryPresence, FilePresence

async def main():
    kind, where, owner = sys.argv[1:]
    presence = FilePresence(Path(where)) if kind == "file" else AdvisoryPresence(where)
    await presence.hold(owner)
    print("held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


async def _holder(kind: str, where: str, owner: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, kind, where, owner, cwd=REPO,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"held\n"
    return proc


async def _kill(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def _eventually_gone(look, owner: str) -> None:  # type: ignore[no-untyped-def]
    """The server ends a killed client's session when it reads the closed socket: soon, not at once."""
    deadline = asyncio.get_running_loop().time() + 10
    while owner not in await look():
        assert asyncio.get_running_loop().time() < deadline, f"{owner} still looks present"
        await asyncio.sleep(0.02)


async def test_a_killed_workers_file_lock_is_seen_gone_and_its_file_removed(tmp_path: Path) -> None:
    folder = tmp_path / "workers"
    mine, watcher = FilePresence(folder), FilePresence(folder)
    await mine.hold("w-here")
    child = await _holder("file", str(folder), "w-child")
    try:
        assert await watcher.gone(None, {"w-child", "w-here"}) == set()
        # A worker of this very process is never seen gone, though its lock is on another file.
        assert await mine.gone(None, {"w-here"}) == set()
        assert await watcher.gone(None, {"w-never-seen"}) == {"w-never-seen"}
    finally:
        await _kill(child)
    assert await watcher.gone(None, {"w-child", "w-here"}) == {"w-child"}
    assert sorted(p.name for p in folder.iterdir()) == [f"{presence_module.presence_key('w-here'):08x}.lock"]
    await mine.drop("w-here")  # a clean stop
    assert await watcher.gone(None, {"w-here"}) == {"w-here"} and list(folder.iterdir()) == []


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[Store]:
    store = await Store.open(pg_url)
    yield store
    await store.close()


def _gone_on(store: Store, presence: AdvisoryPresence, owners: set[str]):  # type: ignore[no-untyped-def]
    return lambda: store.read(lambda uow: presence.gone(uow.conn, owners))


async def test_a_killed_workers_advisory_lock_is_seen_gone(pg_store: Store, pg_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presence_module, "RESTART_GRACE_SECONDS", 0.0)
    watcher = AdvisoryPresence(pg_url)
    child = await _holder("pg", pg_url, "w-child")
    try:
        assert await _gone_on(pg_store, watcher, {"w-child"})() == set()
        assert await _gone_on(pg_store, watcher, {"w-never-seen"})() == {"w-never-seen"}
    finally:
        await _kill(child)
    await _eventually_gone(_gone_on(pg_store, watcher, {"w-child"}), "w-child")


async def test_after_a_server_start_only_a_workers_own_lost_lock_counts(
        pg_store: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the grace after a (re)start every lock is missing, live workers' too: nobody else is
    judged gone, but a worker that finds its own lock missing marks itself present again."""
    monkeypatch.setattr(presence_module, "RESTART_GRACE_SECONDS", 10**9)
    mine = AdvisoryPresence(pg_url)
    await mine.hold("w-here")
    try:
        assert await _gone_on(pg_store, mine, {"w-here", "w-elsewhere"})() == set()
        # Its connection cut, as by a restart (the server ends that session).
        await pg_store.read(lambda uow: uow.conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = :ns AND objid = :key"),
            {"ns": presence_module.PG_NAMESPACE, "key": presence_module.presence_key("w-here")}))
        await _eventually_gone(_gone_on(pg_store, mine, {"w-here", "w-elsewhere"}), "w-here")
        assert await _gone_on(pg_store, mine, {"w-here", "w-elsewhere"})() == {"w-here"}
        await mine.lost("w-here")
        await mine.hold("w-here")
        assert await _gone_on(pg_store, mine, {"w-here"})() == set()
    finally:
        await mine.close()


async def _queued_turn(store: Store) -> int:
    async def add(uow):  # type: ignore[no-untyped-def]
        session = await uow.sessions.create(KEY, "ana", "m1", None, "1K")
        turn = await uow.turns.add(session, kind=TurnKind.EDIT, instruction="a red kite", author="ana",
                                   user_content={"parts": [{"text": "a red kite"}]},
                                   parent_turn_id=None, model="m1", aspect=None, size="1K")
        return turn.id
    return await store.transact(add)


async def test_a_gone_workers_turn_is_taken_at_once_and_a_present_ones_is_not() -> None:
    store = MemoryStore()
    leases = TurnLeases(store)
    turn_id = await _queued_turn(store)
    first = await leases.claim("w1", cap=4, limit=4, lease_seconds=600)
    assert [c.turn.id for c in first.taken] == [turn_id]
    assert (await leases.claim("w2", cap=4, limit=4, lease_seconds=600)).taken == []
    store.presence.end("w1")  # its process died, 599 s before its lease would run out
    again = await leases.claim("w2", cap=4, limit=4, lease_seconds=600)
    assert [c.turn.id for c in again.taken] == [turn_id]
    assert await store.read(lambda uow: uow.queue.owner(turn_id)) == "w2"
    # The gone worker's lease no longer counts against the fleet's cap of one.
    assert (await leases.claim("w3", cap=1, limit=1, lease_seconds=600)).taken == []


async def test_a_worker_on_sqlite_takes_a_killed_processes_turn_without_waiting_out_its_lease(
        tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "threadedit.sqlite3")
    try:
        turn_id = await _queued_turn(store)
        owner = "host:1:dead"
        child = await _holder("file", str(tmp_path / "workers"), owner)
        await store.transact(lambda uow: uow.queue.take([turn_id], owner, "2999-01-01T00:00:00.000+00:00"))
        leases = TurnLeases(store)
        assert (await leases.claim("w2", cap=4, limit=4, lease_seconds=600)).taken == []
        await _kill(child)
        assert [c.turn.id for c in (await leases.claim("w2", cap=4, limit=4, lease_seconds=600)).taken] \
            == [turn_id]
    finally:
        await store.close()
