"""The turn pipeline: turns of one session run strictly in order, sessions run in parallel up
to a global limit on model calls, and turns left unfinished by a crash are resumed at start.

Adapters submit turns that the service already recorded as queued (so nothing is lost if the
process dies now) and hear about progress through a TurnListener.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Protocol

from bot.domain import Turn
from bot.results import TurnResult
from bot.service import EditService

log = logging.getLogger(__name__)


class TurnListener(Protocol):
    async def turn_started(self, turn: Turn) -> None: ...

    async def turn_finished(self, result: TurnResult) -> None: ...


class _Silent:
    async def turn_started(self, turn: Turn) -> None:
        return None

    async def turn_finished(self, result: TurnResult) -> None:
        return None


def _mark_retrieved(fut: asyncio.Future[TurnResult]) -> None:
    # Most callers never await a turn's future (the listener hears the outcome); a failure set on
    # one nobody reads would be logged as "Future exception was never retrieved" when it is
    # collected. Reading it here marks it read; a caller that awaits still gets the exception.
    if not fut.cancelled():
        fut.exception()


class TurnPipeline:
    def __init__(
        self,
        service: EditService,
        *,
        max_concurrency: int = 4,
        listener: TurnListener | None = None,
        model_slots: asyncio.Semaphore | None = None,
    ) -> None:
        self.service = service
        self.listener: TurnListener = listener or _Silent()
        # Pipelines of several adapters in one process share one cap on model calls.
        self._model_calls = model_slots or asyncio.Semaphore(max_concurrency)
        self._queues: dict[int, deque[Turn]] = defaultdict(deque)
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._done: dict[int, asyncio.Future[TurnResult]] = {}
        self._waiting_for_slot = 0

    def submit(self, turn: Turn) -> asyncio.Future[TurnResult]:
        """Schedule a queued turn; returns a future for its result (adapters need not await)."""
        fut = self._done.get(turn.id)
        if fut is not None:  # submitted twice (a resumed turn, a duplicate event): run once
            return fut
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_mark_retrieved)
        self._done[turn.id] = fut
        self._queues[turn.session_id].append(turn)
        if turn.session_id not in self._workers:
            self._workers[turn.session_id] = asyncio.create_task(
                self._drain(turn.session_id), name=f"session-{turn.session_id}")
        return fut

    def slots_busy(self) -> bool:
        """True when every model slot is taken: a new turn would wait for one."""
        return self._model_calls.locked()

    def waiting_for_slot(self) -> int:
        """How many of this pipeline's sessions have a turn ready that waits for a model slot."""
        return self._waiting_for_slot

    def position(self, turn_id: int) -> int | None:
        """1 for the next to run in its session; None when it is running or unknown."""
        for queue in self._queues.values():
            for i, t in enumerate(queue):
                if t.id == turn_id:
                    return i + 1
        return None

    async def _drain(self, session_id: int) -> None:
        queue = self._queues[session_id]
        try:
            while queue:
                turn = queue.popleft()
                fut = self._done[turn.id]
                try:
                    result = await self._run(turn)
                    await self.listener.turn_finished(result)
                except Exception as exc:  # the service records failures; this is a last guard
                    log.exception("turn %s crashed in the pipeline", turn.id)
                    if not fut.done():
                        fut.set_exception(exc)
                    self._done.pop(turn.id, None)
                    continue
                if not fut.done():
                    fut.set_result(result)
                # A finished turn's result lives in the database; run_turn answers a repeat
                # from there, so the future need not be kept.
                self._done.pop(turn.id, None)
        finally:
            self._workers.pop(session_id, None)
            if not queue:
                self._queues.pop(session_id, None)

    async def _run(self, turn: Turn) -> TurnResult:
        self._waiting_for_slot += 1
        try:
            await self._model_calls.acquire()
        finally:
            self._waiting_for_slot -= 1
        try:
            # The slot is held for the model call only. The listener hears that the turn has its
            # slot (its progress line turns from "waiting" to "working"), but its talk with the
            # platform, which can wait out a rate limit, runs beside the call: a slow post in one
            # thread must not stall the model calls of every other session.
            started = asyncio.create_task(self._tell_started(turn), name=f"turn-{turn.id}-started")
            try:
                result = await self.service.run_turn(turn.id)
            except BaseException:
                started.cancel()
                raise
        finally:
            self._model_calls.release()
        # The outcome replaces what the start showed, so the listener hears it only after that.
        await started
        return result

    async def _tell_started(self, turn: Turn) -> None:
        try:
            await self.listener.turn_started(turn)
        except Exception:  # progress is best effort: the turn itself goes on
            log.exception("the listener failed at the start of turn %s", turn.id)

    async def resume_unfinished(self, max_age_seconds: float,
                                platform: str | None = None) -> list[int]:
        """Re-run turns a crash left queued or running (of one platform's sessions, when given:
        each adapter resumes its own, to post them where they belong); report the ones too old
        to matter."""
        resumed = []
        now = datetime.now(UTC)
        for turn in await self.service.unfinished_turns(platform):
            age = (now - datetime.fromisoformat(turn.created_at)).total_seconds()
            if age > max_age_seconds:
                # Failed and its spend reservation refunded together: it never reached the model.
                await self.listener.turn_finished(await self.service.fail_interrupted(turn.id))
                continue
            self.submit(turn)
            resumed.append(turn.id)
        return resumed

    async def join(self) -> None:
        while self._workers:
            await asyncio.gather(*list(self._workers.values()), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._workers.values()):
            task.cancel()
        await asyncio.gather(*list(self._workers.values()), return_exceptions=True)
        # Turns cut off by the stop stay queued or running in the database and resume at the
        # next start; a caller awaiting one hears that it was cancelled rather than waiting on.
        for fut in self._done.values():
            fut.cancel()
        self._done.clear()
