"""TurnQueue: the turn queue's rows. Turns are the queue: a queued or running turn is work to do,
and its lease (owner, expiry) says which worker holds it (schema 0010).

A turn may be taken when it is the first unfinished turn of its session (turns of one session run
one at a time, in the order recorded, across every process) and no live lease holds it. The
policy around these primitives (the fleet-wide cap, how long a lease lasts, what a lost lease
means) is the service's: bot/leases.py.

Times are ISO 8601 UTC text, as every timestamp in the store, and compare as text. A lease is
judged by the clock of the machine that reads it: the fleet's clocks must agree to well within
a lease (NTP does; a lease is 30 s by default).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, Select, exists, func, or_, select, update

from bot.domain import FINISHED
from bot.storage.repositories import UNFINISHED, Repository, announce
from bot.storage.schema import posts, sessions, turns

_FINISHED = tuple(state.value for state in FINISHED)


def _unheld(now: str) -> ColumnElement[bool]:
    return or_(turns.c.lease_expires_at.is_(None), turns.c.lease_expires_at <= now)


class TurnQueue(Repository):
    def _takeable(self, now: str, platforms: Collection[str] | None,
                  session_id: int | None) -> Select[tuple[int, str]]:
        earlier = turns.alias("earlier")
        query = select(turns.c.id, sessions.c.platform).join(
            sessions, sessions.c.id == turns.c.session_id).where(
            turns.c.state.in_(UNFINISHED), _unheld(now),
            ~exists().where(earlier.c.session_id == turns.c.session_id,
                            earlier.c.state.in_(UNFINISHED), earlier.c.id < turns.c.id))
        if platforms is not None:
            query = query.where(sessions.c.platform.in_(sorted(platforms)))
        if session_id is not None:
            query = query.where(turns.c.session_id == session_id)
        return query

    async def takeable(self, now: str, platforms: Collection[str] | None, session_id: int | None,
                       limit: int) -> list[tuple[int, str]]:
        """(turn id, platform) of up to `limit` turns a worker may take now, oldest first. On
        PostgreSQL the rows are locked, skipping any another transaction has locked meanwhile."""
        query = self._takeable(now, platforms, session_id).order_by(turns.c.id).limit(limit)
        if self.conn.dialect.name == "postgresql":
            query = query.with_for_update(of=turns, skip_locked=True)
        return [(row.id, row.platform) for row in await self.conn.execute(query)]

    async def count_takeable(self, now: str, platforms: Collection[str] | None,
                             session_id: int | None) -> int:
        query = self._takeable(now, platforms, session_id).subquery()
        return int((await self.conn.execute(select(func.count()).select_from(query))).scalar_one())

    async def held(self, now: str) -> int:
        """How many turns live leases hold: the model calls under way across the fleet."""
        found = await self.conn.execute(select(func.count()).select_from(turns).where(
            turns.c.state.in_(UNFINISHED), turns.c.lease_expires_at > now))
        return int(found.scalar_one())

    async def next_expiry(self, now: str) -> str | None:
        """When the first live lease runs out (nobody announces that: a worker dead in its turn
        sends nothing, and where presence cannot be seen the lease is all there is), or None when
        no lease is live."""
        found = await self.conn.execute(select(func.min(turns.c.lease_expires_at)).where(
            turns.c.state.in_(UNFINISHED), turns.c.lease_expires_at > now))
        return found.scalar_one_or_none()

    async def live_owners(self, now: str) -> list[str]:
        """The workers named on live leases, to ask whether they still run (presence)."""
        found = await self.conn.execute(select(turns.c.lease_owner).distinct().where(
            turns.c.state.in_(UNFINISHED), turns.c.lease_expires_at > now,
            turns.c.lease_owner.is_not(None)))
        return sorted(row.lease_owner for row in found)

    async def end_leases_of(self, owners: Collection[str]) -> list[int]:
        """End the leases of workers that are gone: their turns may be taken at once. The owner's
        name stays, as after a release, so a turn that had been taken is known as interrupted."""
        if not owners:
            return []
        done = await self.conn.execute(update(turns).where(
            turns.c.lease_owner.in_(sorted(owners)), turns.c.state.in_(UNFINISHED),
            turns.c.lease_expires_at.is_not(None),
        ).values(lease_expires_at=None).returning(turns.c.id))
        return sorted(row.id for row in done)

    async def take(self, turn_ids: Sequence[int], owner: str, until: str) -> None:
        await self.conn.execute(update(turns).where(turns.c.id.in_(turn_ids)).values(
            lease_owner=owner, lease_expires_at=until))

    async def renew(self, turn_ids: Sequence[int], owner: str, until: str) -> list[int]:
        """Extend `owner`'s leases on these turns; the ids it still held (a turn finished, or
        taken by another worker after the lease ran out, is not among them)."""
        done = await self.conn.execute(update(turns).where(
            turns.c.id.in_(turn_ids), turns.c.lease_owner == owner, turns.c.state.in_(UNFINISHED),
        ).values(lease_expires_at=until).returning(turns.c.id))
        return sorted(row.id for row in done)

    async def release(self, turn_ids: Sequence[int], owner: str) -> int:
        """Give `owner`'s leases back: the turns may be taken at once. The owner's name stays, so
        a turn that had been taken before is known as interrupted."""
        done = await self.conn.execute(update(turns).where(
            turns.c.id.in_(turn_ids), turns.c.lease_owner == owner, turns.c.state.in_(UNFINISHED),
        ).values(lease_expires_at=None))
        for turn_id in turn_ids:
            await announce(self.conn, turn_id)
        return int(done.rowcount)

    async def unshown(self, platforms: Collection[str]) -> list[tuple[int, str, str | None]]:
        """Finished turns of these platforms whose outcome no thread has shown (those with a
        progress post: a thread waits for them): (turn id, platform, the worker that finished
        the turn or took it to show), oldest first."""
        has_progress = exists().where(posts.c.turn_id == turns.c.id, posts.c.kind == "progress")
        found = await self.conn.execute(
            select(turns.c.id, sessions.c.platform, turns.c.lease_owner)
            .join(sessions, sessions.c.id == turns.c.session_id)
            .where(turns.c.delivered_at.is_(None), turns.c.state.in_(_FINISHED),
                   sessions.c.platform.in_(sorted(platforms)), has_progress).order_by(turns.c.id))
        return [(row.id, row.platform, row.lease_owner) for row in found]

    async def take_unshown(self, turn_id: int, owner: str, previous: str | None) -> bool:
        """Take a finished turn's unshown outcome to show it, if `previous` still has it (two
        workers taking it at once: one wins)."""
        done = await self.conn.execute(update(turns).where(
            turns.c.id == turn_id, turns.c.delivered_at.is_(None), turns.c.state.in_(_FINISHED),
            turns.c.lease_owner.is_(None) if previous is None else turns.c.lease_owner == previous,
        ).values(lease_owner=owner, lease_expires_at=None))
        return done.rowcount == 1

    async def owner(self, turn_id: int) -> str | None:
        found = await self.conn.execute(select(turns.c.lease_owner).where(turns.c.id == turn_id))
        return found.scalar_one_or_none()

    async def finished_among(self, turn_ids: Sequence[int]) -> list[int]:
        found = await self.conn.execute(select(turns.c.id).where(
            turns.c.id.in_(turn_ids), turns.c.state.in_(_FINISHED)))
        return sorted(row.id for row in found)
