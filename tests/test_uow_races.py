"""Each service operation is one transaction: the races and half-done operations of issue 13.

Every test here failed before its fix (see the report of branch i-uow-service). They run on
SQLite, and on PostgreSQL with THREADEDIT_TEST_DATABASE=postgresql.
"""

from __future__ import annotations

import asyncio
import errno
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select, update

from bot.chat.backend import IncomingFile, IncomingMessage
from bot.chat.controls import Control
from bot.chat.core import ChatCore
from bot.deliveries import Deliveries
from bot.domain import SessionKey, TurnState
from bot.pipeline import TurnPipeline
from bot.reads import SessionReads
from bot.service import EditService, SessionDefaults
from bot.storage.blobs import BlobStore
from bot.storage.repositories import AuditLog
from bot.storage.repository import SessionStore
from bot.storage.schema import approvals, turns
from bot.storage.usage import UsageLedger
from tests.conftest import make_engine
from tests.fakes.gemini_server import FakeGemini
from tests.postgres import store_url
from tests.slack_harness import eventually

KEY = SessionKey("slack", "T1", "C1", "1700000000.000100")


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buf, "PNG")
    return buf.getvalue()


async def version(service: EditService, text: str) -> int:
    """Make a version (run to its end); its turn id."""
    turn = await service.submit_edit(KEY, "ana", text)
    result = await service.run_turn(turn.id)
    assert result.status == "ok", result
    return turn.id


async def usage_states(store: SessionStore) -> dict[int, str]:
    return {r["turn_id"]: r["state"] for r in await UsageLedger(store).rows()}


async def turn_count(store: SessionStore) -> int:
    return len((await store.read(lambda uow: uow.conn.execute(select(turns.c.id)))).all())


# a. Two approvals by one person at once record one


@pytest.fixture
async def second_store(data_dir: Path) -> AsyncIterator[SessionStore]:
    """Another SessionStore on the same database, as a second process would have."""
    s = await SessionStore.open(store_url(data_dir))
    yield s
    await s.close()


async def test_two_approvals_at_once_by_one_person_record_one(
        service: EditService, second_store: SessionStore) -> None:
    await version(service, "A red chair.")
    session = await service.find_session(KEY)
    assert session is not None
    other = EditService(second_store, service.blobs, service.engine)
    views = await asyncio.gather(*[svc.approve(session.id, "dana", 1) for svc in (service, other)
                                   for _ in range(3)])
    rows = (await service.store.read(lambda uow: uow.conn.execute(
        select(approvals.c.approved_by).where(approvals.c.withdrawn_at.is_(None))))).all()
    assert [r[0] for r in rows] == ["dana"]
    notices = sorted(v.notice or "" for v in views)
    assert notices.count("v1 approved by dana.") == 1
    assert notices.count("v1 is already approved by dana.") == 5
    audited = [a for a in await service.store.audit_log(session.id) if a["action"] == "approve"]
    assert len(audited) == 1
    # Withdrawn, it can be approved again (the index covers active approvals only).
    await service.withdraw_approval(session.id, "dana", 1)
    assert (await service.approve(session.id, "dana", 1)).notice == "v1 approved by dana."


# b. A stale turn reported at start-up gives its reservation back


async def test_a_stale_turn_failed_at_start_up_is_refunded(service: EditService) -> None:
    turn = await service.submit_edit(KEY, "ana", "A red chair.")
    session = await service.find_session(KEY)
    assert session is not None

    # The state a crash mid-call leaves: running, its price reserved; and an hour old.
    async def crashed(uow: Any) -> None:
        await uow.turns.mark_running(turn.id, None)
        await service.spend.reserve(uow, session, turn, 1000)
        old = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="milliseconds")
        await uow.conn.execute(update(turns).where(turns.c.id == turn.id).values(created_at=old))

    await service.store.transact(crashed)
    assert await usage_states(service.store) == {turn.id: "reserved"}

    heard = []

    class Listener:
        async def turn_started(self, t: Any) -> None: ...

        async def turn_finished(self, result: Any) -> None:
            heard.append(result)

    pipeline = TurnPipeline(service, listener=Listener(), max_age_seconds=60)
    pipeline.start()  # as at a start: the queue holds the turn the crash left
    await eventually(lambda: heard)
    await pipeline.aclose()
    assert [(r.turn_id, r.status, r.reason) for r in heard] == [(turn.id, "failed", "interrupted")]
    assert await usage_states(service.store) == {turn.id: "refunded"}
    assert (await UsageLedger(service.store).spent_today(KEY)) == 0


# c. Undo decides and moves the head on one view of it


class Backend:
    """A chat backend in memory: what was posted, and files to fetch."""

    platform = "slack"
    reactions: dict[str, Control] = {}

    def __init__(self) -> None:
        self.posted: list[str] = []
        self.ids = 0

    def post_channel(self, key: SessionKey) -> str:
        return key.channel

    def __getattr__(self, name: str) -> Callable[..., Awaitable[str]]:
        async def post(*args: Any, **kw: Any) -> str:
            self.posted.append(f"{name}: {' '.join(str(a) for a in args[1:])}")
            self.ids += 1
            return f"m{self.ids}"

        return post

    async def open_thread(self, msg: IncomingMessage) -> bool:
        return True


@pytest.fixture
async def core(service: EditService) -> AsyncIterator[ChatCore]:
    c = ChatCore(service, Backend(), progress_interval=60,  # type: ignore[arg-type]
                 deliveries=Deliveries(service.store), reads=SessionReads(service.store))
    yield c
    await c.aclose()


def after_first_store_call(store: SessionStore, monkeypatch: pytest.MonkeyPatch,
                           then: Callable[[], Awaitable[object]]) -> None:
    """Run `then` right after the next store operation returns, once: whatever the caller
    decided from that operation, the world changes before its next one."""
    armed = True

    def wrap(name: str) -> None:
        original = getattr(store, name)

        async def call(op: Any) -> Any:
            nonlocal armed
            result = await original(op)
            if armed:
                armed = False
                await then()
            return result

        monkeypatch.setattr(store, name, call)

    wrap("read")
    wrap("transact")


async def test_undo_on_the_head_steps_back_from_it_though_a_turn_finishes_meanwhile(
        service: EditService, core: ChatCore, monkeypatch: pytest.MonkeyPatch) -> None:
    await version(service, "A red chair.")
    await version(service, "Make it blue.")  # v2, the head
    session = await service.find_session(KEY)
    assert session is not None
    queued = await service.submit_edit(KEY, "bo", "Add a lamp.")
    # Ana clicks Undo on v2 while it is the head; Bo's turn finishes while the click is handled.
    after_first_store_call(service.store, monkeypatch, lambda: service.run_turn(queued.id))
    await core.apply_control(session, 2, Control.UNDO, "ana")
    monkeypatch.undo()

    moves = [(a["action"], a["detail"]) for a in await service.store.audit_log(session.id)
             if a["action"] in ("undo", "revert")]
    # Undo stepped back from v2, the version Ana clicked, not from v3 which did not exist yet.
    assert moves == [("undo", {"to_version": 1})]
    view = await service.history(session.id)
    assert view.head == 3 and [v.parent for v in view.versions] == [None, 1, 1]


async def test_undo_on_an_older_version_goes_back_to_it(service: EditService) -> None:
    for text in ("A red chair.", "Make it blue.", "Add a lamp."):
        await version(service, text)
    session = await service.find_session(KEY)
    assert session is not None
    assert (await service.step_back(session.id, "ana", 1)).head == 1
    assert (await service.step_back(session.id, "ana", 3)).head == 3
    assert (await service.step_back(session.id, "ana", 3)).head == 2


# d. A message whose files fail to arrive is not dropped


async def test_a_message_whose_fetch_failed_is_handled_when_delivered_again(
        service: EditService, core: ChatCore) -> None:
    fetches = 0

    async def fetch() -> bytes:
        nonlocal fetches
        fetches += 1
        if fetches == 1:
            raise ConnectionResetError("the platform's file server hung up")
        return png()

    msg = IncomingMessage(key=KEY, message_id="1700000000.000100", author="ana",
                          text="Make this red.", files=[IncomingFile("a.png", 100, fetch)],
                          mentioned=True)
    with pytest.raises(ConnectionResetError):
        await core.on_message(msg)
    assert await turn_count(service.store) == 0
    await core.on_message(msg)  # the platform delivers it again
    await core.on_message(msg)  # and once more: already handled
    await core.pipeline.join()
    assert await turn_count(service.store) == 1
    assert fetches == 2


# e. A full disk ends the turn failed (its paid call counted, once); a failed audit leaves no queued turn


async def test_a_full_disk_fails_the_turn_with_a_sentence_and_counts_the_call_once(
        service: EditService, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: BlobStore, data: bytes, mime: str) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    turn = await service.submit_edit(KEY, "ana", "A red chair.")
    monkeypatch.setattr(BlobStore, "put", full)
    result = await service.run_turn(turn.id)
    assert (result.status, result.reason) == ("failed", "disk_full")
    assert result.message is not None and result.message.startswith("The server's disk is full")
    assert (await service.store.get_turn(turn.id)).state is TurnState.FAILED
    # The model made the image and was paid for it: counted against the budget, and only once.
    assert await usage_states(service.store) == {turn.id: "charged"}
    assert await service.store.unfinished_turns() == []  # nothing for the next start to pay again


async def test_a_failed_audit_insert_leaves_no_queued_turn(
        service: EditService, monkeypatch: pytest.MonkeyPatch) -> None:
    record = AuditLog.record
    failures = 0

    async def failing_once(self: AuditLog, *args: Any, **kw: Any) -> None:
        nonlocal failures
        if args[2] == "edit" and failures == 0:
            failures += 1
            raise RuntimeError("the audit insert failed")
        await record(self, *args, **kw)

    monkeypatch.setattr(AuditLog, "record", failing_once)
    with pytest.raises(RuntimeError):
        await service.submit_edit(KEY, "ana", "A red chair.")
    assert await turn_count(service.store) == 0
    assert await service.find_session(KEY) is None  # the session it started went with it
    turn = await service.submit_edit(KEY, "ana", "A red chair.")
    assert [t.id for t in await service.store.unfinished_turns()] == [turn.id]


async def test_a_turn_over_the_budget_at_its_start_fails_without_a_reservation(
        store: SessionStore, blobs: BlobStore, gemini: FakeGemini) -> None:
    from bot.spending import SpendLimits

    engine = make_engine(gemini, timeout=5.0)
    try:
        svc = EditService(store, blobs, engine, defaults=SessionDefaults(image_size="1K"),
                          spend_limits=SpendLimits(workspace_daily_usd=0.001))
        turn = await svc.submit_edit(KEY, "ana", "A red chair.")
        result = await svc.run_turn(turn.id)
        assert (result.status, result.reason) == ("failed", "budget")
        assert await usage_states(store) == {}
        assert gemini.requests == []
    finally:
        await engine.aclose()


async def test_a_full_disk_is_said_in_the_thread(
        service: EditService, core: ChatCore, monkeypatch: pytest.MonkeyPatch) -> None:
    put = BlobStore.put

    def full_for_images(self: BlobStore, data: bytes, mime: str) -> str:
        if mime.startswith("image/"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return put(self, data, mime)

    monkeypatch.setattr(BlobStore, "put", full_for_images)
    await core.on_message(IncomingMessage(key=KEY, message_id="m1", author="ana",
                                          text="A red chair.", mentioned=True))
    await core.pipeline.join()
    said = "\n".join(core.backend.posted)  # type: ignore[attr-defined]
    assert "The server's disk is full" in said, said
    assert await service.store.unfinished_turns() == []
