"""The turn pipeline: this process's worker on the store's durable turn queue (bot/leases.py).

Turns are recorded as queued by the service; the pipeline claims them under a lease, runs each
(bot/turn_runner.py), renews its leases meanwhile, and tells a TurnListener (the chat core of the
turn's platform, the playground) when a turn starts and how it ended. Which turns it claims: of
its platforms (a chat adapter claims its own platform's, since it posts them), of one session
(the CLI, waiting for its own turn), or none (`work=False`: an ingress process that only records
turns and answers at once, leaving the model calls to `threadedit worker` processes).

Whichever process runs a turn, `submit` returns a future for its result: the turns this process
does not run are watched until another process finishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Protocol

from bot.domain import Turn
from bot.leases import Claimed, LeaseLost
from bot.results import TurnResult
from bot.service import EditService
from bot.storage.db import StoreUnavailable

log = logging.getLogger(__name__)
# A store that does not answer (a PostgreSQL restart) is looked at again after this long.
STORE_DOWN_WAIT = 1.0
# After a lease's expiry, before looking: a lease is judged by each machine's own clock.
LEASE_EXPIRY_MARGIN = 0.05
# How often a worker looks for outcomes a dead worker finished but never posted (the look at
# start shows what a stop left).
UNSHOWN_LOOK_SECONDS = 10.0


class TurnListener(Protocol):
    async def turn_started(self, turn: Turn) -> None: ...

    async def turn_finished(self, result: TurnResult) -> None: ...


class _Silent:
    async def turn_started(self, turn: Turn) -> None:
        return None

    async def turn_finished(self, result: TurnResult) -> None:
        return None


def worker_name() -> str:
    """Unique in the fleet, and telling an operator where the worker runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
        listeners: Mapping[str, TurnListener] | None = None,
        platforms: Collection[str] | None = None,
        session_id: int | None = None,
        lease_seconds: float = 30.0,
        max_age_seconds: float = 3600.0,
        work: bool = True,
    ) -> None:
        self.service = service
        self.leases = service.leases
        self.listener: TurnListener = listener or _Silent()
        self.listeners = dict(listeners or {})
        # None: every platform's turns (a fleet worker). A listener given per platform limits it.
        self.platforms = frozenset(platforms) if platforms is not None else (
            frozenset(self.listeners) if listeners is not None else None)
        self.session_id = session_id
        self.cap = max_concurrency  # THREADEDIT_MAX_CONCURRENCY: across the fleet, not per process
        self.lease_seconds = lease_seconds
        self.max_age_seconds = max_age_seconds
        self.work = work
        self.owner = worker_name()
        self._running: dict[int, asyncio.Task[None]] = {}  # taken, until its listener was told
        self._calling: set[int] = set()  # taken and not finished: the leases held and renewed
        self._done: dict[int, asyncio.Future[TurnResult]] = {}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._waiting = 0
        self._closing = False
        self._unshown_looked = 0.0  # loop time of the last look for unshown outcomes
        self._showing: asyncio.Task[None] | None = None  # posting outcomes a dead worker left

    # What adapters call

    def start(self) -> None:
        """Start claiming (and renewing, and listening for news of the queue). Idempotent; an
        ingress's pipeline (`work=False`) has nothing to do."""
        if self._loops or not self.work:
            return
        self._loops = [asyncio.create_task(self._claim_loop(), name="turn-claims"),
                       asyncio.create_task(self._renew_loop(), name="turn-leases"),
                       asyncio.create_task(self.leases.listen(self.wake), name="turn-notices")]

    def wake(self) -> None:
        self._wake.set()

    def submit(self, turn: Turn) -> asyncio.Future[TurnResult]:
        """A turn the service recorded as queued: look for work now. The future is the turn's
        result, whichever process runs it (adapters need not await it); with `work=False` it is
        never resolved."""
        fut = self._done.get(turn.id)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_mark_retrieved)
            if not self.work:
                # An ingress hands turns to the fleet's workers and waits for none of them:
                # watching each until it finished would only read (and on S3 fetch) its result.
                return fut
            self._done[turn.id] = fut
        self.start()
        self.wake()
        return fut

    def waiting_for_slot(self) -> int:
        """Turns this pipeline could take but for the fleet's cap, as of its last look."""
        return self._waiting

    async def join(self) -> None:
        """Wait until every submitted turn has finished (here or elsewhere) and every turn this
        pipeline took has been told to its listener."""
        while self._done or self._running:
            await asyncio.gather(*self._done.values(), *self._running.values(), return_exceptions=True)

    async def aclose(self) -> None:
        # Turns cut off by the stop keep their state and reservation; their leases are given back
        # so that another worker takes them at once, not after the lease would have run out.
        self._closing = True
        held, tasks = list(self._calling), [*self._loops, *self._running.values()]
        if self._showing is not None:
            tasks.append(self._showing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops = []
        if held:
            with contextlib.suppress(Exception):  # a store that is down: the leases run out
                await self.leases.release(self.owner, held)
        with contextlib.suppress(Exception):
            await self.leases.leave(self.owner)
        for fut in self._done.values():
            fut.cancel()
        self._done.clear()

    # The worker

    async def _claim_loop(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                expiry = await self._claim()
                await self._settle_watched()
                self._show_unshown_now_and_then()
                wait = self.leases.poll_seconds
                if expiry is not None:  # a lease runs out before the next poll: look right after
                    wait = min(wait, expiry + LEASE_EXPIRY_MARGIN)
            except Exception as exc:  # the store is down: keep what runs, look again soon
                log.warning("could not look at the turn queue (%s); trying again", type(exc).__name__)
                wait = STORE_DOWN_WAIT
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
            # that arrives as the wake-up does, and this loop would outlive its pipeline.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _claim(self) -> float | None:
        """Take what this worker may; the seconds until the first live lease runs out."""
        claim = await self.leases.claim(
            self.owner, cap=self.cap, limit=self.cap - len(self._calling),
            lease_seconds=self.lease_seconds, platforms=self.platforms, session_id=self.session_id)
        self._waiting = claim.waiting
        for claimed in claim.taken:
            self._calling.add(claimed.turn.id)
            task = asyncio.create_task(self._run(claimed), name=f"turn-{claimed.turn.id}")
            self._running[claimed.turn.id] = task
            task.add_done_callback(lambda _t, turn_id=claimed.turn.id: self._ran(turn_id))
        return claim.next_expiry

    def _ran(self, turn_id: int) -> None:
        self._running.pop(turn_id, None)
        self.wake()  # a slot is free, and the session's next turn may be takeable

    async def _settle_watched(self) -> None:
        """Resolve the futures of submitted turns that another process finished."""
        watched = [turn_id for turn_id in self._done if turn_id not in self._running]
        for turn_id in await self.leases.finished_among(watched):
            self._resolve(turn_id, await self.service.result_of(turn_id))

    async def show_unshown(self) -> None:
        """Show the outcomes of this pipeline's platforms that a worker now gone finished but
        never posted (it died, or stopped, between the two), each taken first so that one
        process shows it. An outcome whose post fails stays this worker's: the next start of
        any process, once this one is gone, tries it again."""
        self._unshown_looked = asyncio.get_running_loop().time()  # the next look is due from now
        for turn_id, platform in await self.leases.claim_unshown(self.owner, self.listeners):
            try:
                await self.listeners[platform].turn_finished(await self.service.result_of(turn_id))
            except Exception as exc:  # one thread we cannot post to must not stop the others
                log.warning("could not show the outcome of turn %s (%s)", turn_id, type(exc).__name__)

    def _show_unshown_now_and_then(self) -> None:
        now = asyncio.get_running_loop().time()
        if not self.listeners or self._closing or now - self._unshown_looked < UNSHOWN_LOOK_SECONDS:
            return  # nothing it could post, a stop, or looked a moment ago (its start, say)
        # Beside the claims (a look is one indexed read, but posting an outcome can wait out a
        # platform's rate limit).
        if self._showing is None or self._showing.done():
            self._showing = asyncio.create_task(self._show_unshown_logged(), name="unshown-outcomes")

    async def _show_unshown_logged(self) -> None:
        try:
            await self.show_unshown()
        except Exception as exc:  # the store is down: the next look tries again
            log.warning("could not look for unshown outcomes (%s)", type(exc).__name__)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            held = list(self._calling)
            try:
                kept = set(await self.leases.renew(self.owner, held, self.lease_seconds))
            except Exception as exc:  # the store is down: the next renewal may still be in time
                log.warning("could not renew turn leases (%s)", type(exc).__name__)
                continue
            for turn_id in held:
                task = self._running.get(turn_id)
                if turn_id not in kept and turn_id in self._calling and task is not None:
                    # Taken by another worker after this one stalled past its lease (or finished
                    # just now, which leaves nothing to stop): that worker runs and posts it.
                    log.warning("turn %s: lease lost; leaving it to the worker that holds it", turn_id)
                    task.cancel()

    def _listener_for(self, platform: str) -> TurnListener:
        return self.listeners.get(platform, self.listener)

    async def _run(self, claimed: Claimed) -> None:
        turn, listener = claimed.turn, self._listener_for(claimed.platform)
        try:
            result = await self._outcome(turn, listener)
            await listener.turn_finished(result)
        except LeaseLost:
            # It stalled past its lease and another worker took the turn: that one posts it.
            log.warning("turn %s: lease lost; the worker that holds it finishes it", turn.id)
            return
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                # The store stayed down past its retries (a long database outage): the turn keeps
                # its state, and its lease, no longer renewed, runs out; then any worker takes it.
                log.warning("turn %s: %s The turn runs again once its lease runs out.", turn.id, exc)
            else:  # the service records failures; this is a last guard
                log.exception("turn %s crashed in the pipeline", turn.id)
            self._resolve(turn.id, exc)
            return
        self._resolve(turn.id, result)

    def _resolve(self, turn_id: int, outcome: TurnResult | Exception) -> None:
        """Give a submitted turn's future its result (or what stopped it), once."""
        fut = self._done.pop(turn_id, None)
        if fut is None or fut.done():
            return
        if isinstance(outcome, Exception):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)

    async def _outcome(self, turn: Turn, listener: TurnListener) -> TurnResult:
        try:
            return await self._call(turn, listener)
        finally:
            self._calling.discard(turn.id)  # finished (or given up): its slot is free

    async def _call(self, turn: Turn, listener: TurnListener) -> TurnResult:
        age = (datetime.now(UTC) - datetime.fromisoformat(turn.created_at)).total_seconds()
        if age > self.max_age_seconds:
            # Failed and its spend reservation refunded together: it never reached the model.
            return await self.service.fail_interrupted(turn.id, self.owner)
        # The listener hears that the turn has its slot (its progress line turns from "waiting"
        # to "working"), but its talk with the platform, which can wait out a rate limit, runs
        # beside the model call: a slow post in one thread must not hold the turn's slot.
        started = asyncio.create_task(self._tell_started(listener, turn), name=f"turn-{turn.id}-started")
        try:
            result = await self.service.run_turn(turn.id, self.owner)
        except BaseException:
            started.cancel()
            raise
        finally:
            self._calling.discard(turn.id)  # its slot is free while the listener posts
        # The outcome replaces what the start showed, so the listener hears it only after that.
        await started
        return result

    async def _tell_started(self, listener: TurnListener, turn: Turn) -> None:
        try:
            await listener.turn_started(turn)
        except Exception:  # progress is best effort: the turn itself goes on
            log.exception("the listener failed at the start of turn %s", turn.id)
