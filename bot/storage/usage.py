"""UsageLedger: the spend of every model call and the turns each user asked for, each question
or change one transaction on the store (bot/storage/records.py holds the statements)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain import Session, SessionKey, Turn
from bot.storage.repository import SessionStore
from bot.storage.uow import UnitOfWork

# Budget tolerance: a sum of floats may pass the budget by rounding alone.
_EPSILON_USD = 1e-9
_REPORT_GROUPS = {
    "workspaces": ("platform", "workspace"),
    "users": ("platform", "workspace", "user"),
    "sessions": ("platform", "workspace", "session_id"),
}


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


async def reserve_in(uow: UnitOfWork, session: Session, turn: Turn, usd: float,
                     budget: float | None) -> bool:
    """Reserve `usd` for the turn unless that would pass the workspace's budget for today, in
    the caller's transaction. A turn reserves once: a resumed turn keeps its first reservation."""
    if await uow.usage.has(turn.id):
        return True
    day = _today()
    key = session.key
    if budget is not None and await uow.usage.spent_on(key.platform, key.workspace, day) + usd \
            > budget + _EPSILON_USD:
        return False
    await uow.usage.reserve(turn_id=turn.id, session_id=session.id, platform=key.platform,
                            workspace=key.workspace, user=turn.author, model=turn.model,
                            image_size=turn.image_size, reserved_usd=usd, day=day)
    return True


async def turns_since(uow: UnitOfWork, key: SessionKey, author: str,
                      since: datetime) -> tuple[int, str | None]:
    """How many turns `author` asked for in this workspace since `since`, and the oldest's time."""
    return await uow.turns.count_by_author_since(key.platform, key.workspace, author,
                                                 since.isoformat(timespec="milliseconds"))


async def spent_today(uow: UnitOfWork, key: SessionKey) -> float:
    return await uow.usage.spent_on(key.platform, key.workspace, _today())


async def settle_in(uow: UnitOfWork, turn_id: int, cost_usd: float | None) -> None:
    """Charge the actual cost, or refund (None) when the call made no image; only a reservation
    still open changes."""
    state = "refunded" if cost_usd is None else "charged"
    await uow.usage.settle(turn_id, state, cost_usd or 0.0)


class UsageLedger:
    """The same questions, each its own transaction: for reports and tests."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def turns_since(self, key: SessionKey, author: str, since: datetime) -> tuple[int, str | None]:
        """How many turns `author` asked for in this workspace since `since`, and the oldest's time."""
        return await self.store.read(lambda uow: turns_since(uow, key, author, since))

    async def reserve(self, session: Session, turn: Turn, usd: float,
                      budget: float | None) -> bool:
        """Reserve `usd` for the turn unless that would pass the workspace's budget for today.
        A turn reserves once: a resumed turn keeps its first reservation."""
        return await self.store.transact(lambda uow: reserve_in(uow, session, turn, usd, budget))

    async def spent_today(self, key: SessionKey) -> float:
        return await self.store.read(lambda uow: spent_today(uow, key))

    async def settle(self, turn_id: int, cost_usd: float | None) -> None:
        """Charge the actual cost, or refund (None) when the call made no image."""
        await self.store.transact(lambda uow: settle_in(uow, turn_id, cost_usd))

    async def report(self, since_day: str) -> dict[str, list[dict[str, Any]]]:
        """Spend since a UTC date by workspace, by user and by session (charged and still reserved)."""
        async def report(uow: UnitOfWork) -> dict[str, list[dict[str, Any]]]:
            return {name: await uow.usage.totals(since_day, by) for name, by in _REPORT_GROUPS.items()}

        return await self.store.read(report)

    async def rows(self) -> list[dict[str, Any]]:
        """Every usage row, oldest first."""
        return await self.store.read(lambda uow: uow.usage.rows())


def hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)
