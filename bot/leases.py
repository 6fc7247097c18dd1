"""TurnLeases: the durable turn queue's operations, each one transaction of the store.

Every process that runs turns is a worker: it claims queued turns, holding each under a lease
(its name and an expiry, THREADEDIT_LEASE_SECONDS), renews the leases while it works, finishes
each turn in one transaction (bot/turn_runner.py checks the lease there), and gives its leases
back when it stops. A turn whose lease ran out, or whose worker is gone (presence: a lock that
ends with the worker's process, bot/storage/presence.py), is claimed again by any live worker.
Turns of one session are taken one at a time, in the order recorded.

THREADEDIT_MAX_CONCURRENCY caps the turns held across the fleet (Gemini's quota is per project,
not per process): a claim counts the live leases and takes only what is left. Counting rows and
then taking some is a check-then-write, so claims run one at a time: a named lock on PostgreSQL
(an advisory transaction lock, held for the few milliseconds of the claim), the write lock on
SQLite. Rows are also taken FOR UPDATE SKIP LOCKED on PostgreSQL, so a claim never waits on a row
another transaction holds (a turn being finished).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.domain import Turn
from bot.storage.db import utc_after, utcnow
from bot.storage.uow import Store, UnitOfWork

log = logging.getLogger(__name__)

QUEUE_LOCK = "turn-queue"
# How often a worker looks for work it was not told about: on SQLite every look is how work is
# found (there is no NOTIFY); on PostgreSQL NOTIFY wakes workers at once and the look finds only
# leases that ran out.
POLL_SECONDS_SQLITE = 0.5
POLL_SECONDS_POSTGRESQL = 2.0


class LeaseLost(Exception):
    """The turn is no longer this worker's: its lease ran out and another worker took it."""


def _seconds_until(at: str | None) -> float | None:
    if at is None:
        return None
    return max(0.0, (datetime.fromisoformat(at) - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class Claimed:
    turn: Turn
    platform: str


@dataclass(frozen=True)
class Claim:
    taken: list[Claimed]
    waiting: int  # takeable turns left for want of a free slot in the fleet
    # Seconds until the first live lease runs out (None: none is live). Nobody announces that (a
    # worker that died sends nothing), so a worker looks again then rather than at its next poll.
    next_expiry: float | None = None


async def check_holder(uow: UnitOfWork, turn_id: int, owner: str | None) -> None:
    """Inside a turn's start or finish: refuse to write unless `owner` holds the turn (None: a
    caller that runs turns without the queue, such as a test)."""
    if owner is not None and await uow.queue.owner(turn_id) != owner:
        raise LeaseLost(f"turn {turn_id} is held by another worker")


class TurnLeases:
    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def poll_seconds(self) -> float:
        return POLL_SECONDS_SQLITE if self._store.is_sqlite else POLL_SECONDS_POSTGRESQL

    async def claim(self, owner: str, *, cap: int, limit: int, lease_seconds: float,
                    platforms: Collection[str] | None = None, session_id: int | None = None) -> Claim:
        """Take up to `limit` takeable turns (of these platforms, or of this session), as many
        as the fleet's cap leaves free, oldest first. Leases of workers that are gone (presence,
        bot/storage/presence.py) end first: their turns are taken at once, not when the lease
        would have run out."""
        presence = self._store.presence
        await presence.hold(owner)  # a lease is taken only by a worker marked present

        async def look(uow: UnitOfWork) -> tuple[int, int, str | None, set[str]]:
            now = utcnow()
            gone = await presence.gone(uow.conn, {*await uow.queue.live_owners(now), owner})
            return (await uow.queue.count_takeable(now, platforms, session_id),
                    await uow.queue.held(now), await uow.queue.next_expiry(now), gone)

        # Most looks find nothing, nothing this worker has room for, or the fleet at its cap (a
        # burst of new turns, each announced): a read, without the write lock, finds that out.
        takeable, held, expiry, gone = await self._store.read(look)
        if owner in gone:  # this worker's own mark was lost (its connection cut): mark it again
            gone.discard(owner)
            await presence.lost(owner)
            await presence.hold(owner)
        if not gone and (limit <= 0 or takeable == 0 or held >= cap):
            return Claim([], takeable, _seconds_until(expiry))

        async def take(uow: UnitOfWork) -> Claim:
            await uow.lock(QUEUE_LOCK)
            now = utcnow()
            # A worker found gone stays gone (names are never reused): its leases end here.
            if ended := await uow.queue.end_leases_of(gone):
                log.warning("turns %s: their worker is gone; any worker may take them now",
                            ", ".join(map(str, ended)))
            free = min(limit, cap - await uow.queue.held(now))
            found = await uow.queue.takeable(now, platforms, session_id, free) if free > 0 else []
            await uow.queue.take([turn_id for turn_id, _ in found], owner, utc_after(lease_seconds))
            waiting = await uow.queue.count_takeable(now, platforms, session_id)
            return Claim([Claimed(await uow.turns.get(turn_id), platform) for turn_id, platform in found],
                         waiting, _seconds_until(await uow.queue.next_expiry(now)))

        return await self._store.transact(take)

    async def claim_unshown(self, owner: str, platforms: Collection[str]) -> list[tuple[int, str]]:
        """Take the finished turns of these platforms whose outcome no thread has shown and whose
        worker is gone (it died between finishing the turn and posting it, or a stop came in
        between): (turn id, platform) for `owner` to show. The worker that finished a turn is
        named on it until it has shown it, so one that runs is never overtaken."""
        if not platforms:
            return []
        presence = self._store.presence
        await presence.hold(owner)

        async def look(uow: UnitOfWork) -> list[tuple[int, str, str | None]]:
            found = await uow.queue.unshown(platforms)
            gone = await presence.gone(uow.conn, {o for _, _, o in found if o not in (None, owner)})
            return [(turn_id, platform, was) for turn_id, platform, was in found
                    if was is None or was in gone]

        if not (orphans := await self._store.read(look)):
            return []

        async def take(uow: UnitOfWork) -> list[tuple[int, str]]:
            return [(turn_id, platform) for turn_id, platform, was in orphans
                    if await uow.queue.take_unshown(turn_id, owner, was)]

        return await self._store.transact(take)

    async def renew(self, owner: str, turn_ids: Sequence[int], lease_seconds: float) -> list[int]:
        """Extend the leases; the turns `owner` still holds."""
        if not turn_ids:
            return []
        return await self._store.transact(
            lambda uow: uow.queue.renew(turn_ids, owner, utc_after(lease_seconds)))

    async def release(self, owner: str, turn_ids: Sequence[int]) -> int:
        """Give leases back (a stop): other workers may take the turns at once."""
        if not turn_ids:
            return 0
        return await self._store.transact(lambda uow: uow.queue.release(turn_ids, owner))

    async def leave(self, owner: str) -> None:
        """The worker stops: its presence ends (after its leases were given back)."""
        await self._store.presence.drop(owner)

    async def finished_among(self, turn_ids: Sequence[int]) -> list[int]:
        if not turn_ids:
            return []
        return await self._store.read(lambda uow: uow.queue.finished_among(turn_ids))

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process changes the queue, until cancelled (PostgreSQL's
        LISTEN; on SQLite this returns at once and workers poll)."""
        if self._store.is_sqlite or self._store.engine is None:
            return
        from bot.storage.notices import listen_for_turns

        await listen_for_turns(self._store.url, wake)

