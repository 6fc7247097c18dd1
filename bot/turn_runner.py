"""TurnRunner: runs one queued turn — plans its request, reserves its spend, calls the model,
stores what came back — in two short transactions around the slow part.

1. Start: the turn is marked running together with its spend reservation (or failed, when the
   day's budget is gone), in one transaction.
2. The slow part, outside any transaction: counting tokens, the model call, writing the image's
   blobs (fsync).
3. Finish: the outcome, the version number, the head and the settled spend, in one transaction.

Whatever goes wrong after the start (the engine, a full disk, a bug) ends the turn failed with its
reservation refunded, in one transaction, so no turn stays `running` holding money. Only a
cancelled turn (the process stopping) keeps both: its lease is given back and another worker (or
this one, after a restart) runs it again, keeping the first reservation.

A worker passes its name as `owner`: the start and the finish then write only while it still
holds the turn's lease (bot/leases.py), so a worker that lost its lease (it stalled past the
lease and another took the turn) changes nothing and its result is dropped: the turn is posted
once, by the worker that holds it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Sequence
from typing import Any

from bot import catalog
from bot.domain import FINISHED, OperationRefused, Turn, TurnKind, TurnState, path_to, shown_instruction
from bot.engine import Engine, EngineError
from bot.gemini.response import interpret_response
from bot.leases import LeaseLost, check_holder
from bot.model_call import ModelCall
from bot.results import TurnResult
from bot.spending import SpendGuard
from bot.storage.blobs import BlobStore, pack_content
from bot.storage.repository import SessionStore
from bot.storage.uow import UnitOfWork

log = logging.getLogger(__name__)

DISK_FULL = ("The server's disk is full, so the image could not be saved; the session's history is "
             "intact. Retry once an admin has freed some space.")
INTERNAL = ("Something went wrong on our side; the session's history is intact, so you can "
            "retry.")
INTERRUPTED = ("This instruction was interrupted by a restart, or waited in the queue, for too long "
               "to run now; nothing changed. Retry it if you still want it.")


def failure_of(exc: Exception, turn_id: int) -> tuple[str, str]:
    """(reason, sentence) for what stopped a turn."""
    if isinstance(exc, (OperationRefused, EngineError)):
        return exc.code, exc.message
    if isinstance(exc, catalog.SettingRejected):
        return "bad_setting", str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("turn %s: the disk is full (%s)", turn_id, exc)
        return "disk_full", DISK_FULL
    log.exception("turn %s failed unexpectedly", turn_id, exc_info=exc)
    return "internal_error", INTERNAL


class TurnRunner:
    def __init__(self, store: SessionStore, blobs: BlobStore, calls: ModelCall, spend: SpendGuard) -> None:
        self.store = store
        self.blobs = blobs
        self.calls = calls
        self.spend = spend

    @property
    def engine(self) -> Engine:
        return self.calls.engine

    async def run_turn(self, turn_id: int, owner: str | None = None) -> TurnResult:
        async def load(uow: UnitOfWork) -> tuple[Turn, Sequence[Turn]]:
            turn = await uow.turns.get(turn_id)
            if turn.state in FINISHED:
                return turn, ()
            state = await uow.load_state(turn.session_id)
            # An edit applies to whatever is the head when it runs: a reply sent while the
            # previous turn was generating edits that turn's result, as the user sees it.
            if turn.kind is TurnKind.EDIT:
                turn.parent_turn_id = state.session.head_turn_id
            return turn, path_to(state.by_id, turn.parent_turn_id)

        turn, path = await self.store.read(load)
        if turn.state in FINISHED:
            return await self.result_of(turn_id)
        outcome = None
        try:
            prepared = await self.calls.prepare(turn, path)
            await self.store.transact(lambda uow: self._start(uow, turn, prepared.size.tokens, owner))
            response, prepared = await self.calls.send(turn, path, prepared)
            outcome = interpret_response(response)
            if outcome.status == "image":
                assert outcome.content is not None and outcome.image is not None
                # Writing blobs fsyncs: off the event loop, so other sessions' turns go on meanwhile.
                packed = await asyncio.to_thread(pack_content, outcome.content, self.blobs)
                key = await asyncio.to_thread(self.blobs.put, outcome.image, outcome.mime or "image/jpeg")
        except Exception as exc:  # a cancelled turn keeps its state and reservation for the resume
            if isinstance(exc, LeaseLost):
                raise
            reason, message = failure_of(exc, turn_id)
            # An image the model made but we could not keep (a full disk, the image store down)
            # was paid for: it stays counted against the budget, so an outage cannot spend past it.
            made = outcome is not None and outcome.status == "image"
            usage = outcome.usage if outcome is not None else None
            await self.store.transact(
                lambda uow: self._fail(uow, turn, reason, message, usage, paid=made, owner=owner))
            return await self.result_of(turn_id)

        async def finish(uow: UnitOfWork) -> None:
            await check_holder(uow, turn.id, owner)
            if outcome.status == "image":
                await uow.turns.finish(turn, TurnState.DONE, model_content=packed, image_blob=key,
                                       image_mime=outcome.mime, text_reply=outcome.text,
                                       usage=outcome.usage, anchor_content=prepared.plan.anchor)
            else:
                state_for = {"text": TurnState.TEXT, "blocked": TurnState.BLOCKED}
                await uow.turns.finish(
                    turn, state_for.get(outcome.status, TurnState.FAILED), text_reply=outcome.text,
                    reason=outcome.reason, message=outcome.message, usage=outcome.usage)
            await self.spend.settle(uow, turn, outcome.status == "image", outcome.usage)

        await self.store.transact(finish)
        return await self.result_of(turn_id)

    async def _start(self, uow: UnitOfWork, turn: Turn, input_tokens: int, owner: str | None) -> None:
        """Running, with its estimated price reserved; a refused reservation (the day's budget ran
        out while the turn was queued) raises and leaves the turn as it was."""
        await check_holder(uow, turn.id, owner)
        await uow.turns.mark_running(turn.id, turn.parent_turn_id)
        session = await uow.sessions.get(turn.session_id)
        await self.spend.reserve(uow, session, turn, input_tokens)

    async def _fail(self, uow: UnitOfWork, turn: Turn, reason: str, message: str,
                    usage: dict[str, Any] | None = None, *, paid: bool = False,
                    owner: str | None = None) -> None:
        await check_holder(uow, turn.id, owner)
        await uow.turns.finish(turn, TurnState.FAILED, reason=reason, message=message, usage=usage)
        await self.spend.settle(uow, turn, paid, usage if paid else None)

    async def fail_interrupted(self, turn_id: int, owner: str | None = None) -> TurnResult:
        """End a turn too old to run (a restart interrupted it, or it waited that long): failed,
        its reservation refunded, in one transaction (a turn finished meanwhile is left as it is)."""
        async def fail(uow: UnitOfWork) -> None:
            turn = await uow.turns.get(turn_id)
            if turn.state not in FINISHED:
                await self._fail(uow, turn, "interrupted", INTERRUPTED, owner=owner)

        await self.store.transact(fail)
        return await self.result_of(turn_id)

    async def result_of(self, turn_id: int) -> TurnResult:
        async def load(uow: UnitOfWork) -> tuple[Turn, int | None]:
            turn = await uow.turns.get(turn_id)
            parent = await uow.turns.get(turn.parent_turn_id) if turn.parent_turn_id is not None else None
            return turn, parent.version if parent else None

        turn, parent_version = await self.store.read(load)
        status = {TurnState.DONE: "ok"}.get(turn.state, turn.state.value)
        return TurnResult(
            session_id=turn.session_id, turn_id=turn.id, status=status,  # type: ignore[arg-type]
            instruction=shown_instruction(turn, parent_version), author=turn.author, model=turn.model,
            aspect_ratio=turn.aspect_ratio, image_size=turn.image_size, version=turn.version,
            parent_version=parent_version,
            image_path=await self.blobs.local_path(turn.image_blob) if turn.image_blob else None,
            mime=turn.image_mime, text=turn.text_reply, reason=turn.reason, message=turn.message,
            condensed=turn.anchor_content is not None,
        )
