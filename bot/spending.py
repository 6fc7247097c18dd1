"""Limits on turns and spend: per-user turns per hour and a per-workspace daily budget in USD.

Prices come from the table in catalog.py (../shared/research/gemini-api.md section 5). A call
reserves its estimated price before it is made; when an image comes back the actual price is
charged (the image's price plus the prompt tokens the API reports), and when none does the
reservation is refunded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot import catalog
from bot.domain import OperationRefused, Session, SessionKey, Turn
from bot.storage.uow import UnitOfWork
from bot.storage.usage import hour_ago, reserve_in, settle_in, spent_today, turns_since

# USD per million input tokens (research §5). The sources disagree on 3.1 Flash ($0.25 or
# $0.50): the higher is used, so the budget errs on the safe side. Lite's is from third parties
# (interactions-api.md 6.1); models without a price here are charged the highest.
INPUT_USD_PER_MILLION = {catalog.FLASH: 0.50, catalog.PRO: 2.00, catalog.FLASH_LITE: 0.25,
                         catalog.FLASH_25: 0.30}


@dataclass(frozen=True)
class SpendLimits:
    user_turns_per_hour: int | None = None  # None: no limit
    workspace_daily_usd: float | None = None  # None: no limit
    priced: bool = True  # False for the offline engine: it costs nothing


def image_usd(model: str, size: str | None) -> float:
    prices = catalog.spec_for(model).usd_per_output_image
    return prices.get(size or "1K", max(prices.values()))


def estimate_usd(model: str, size: str | None, input_tokens: int) -> float:
    """The image's price plus the request's input tokens (estimated by bot/context.py)."""
    return image_usd(model, size) + input_tokens * _input_price(model)


def actual_usd(model: str, size: str | None, usage: dict[str, Any] | None) -> float:
    prompt_tokens = int((usage or {}).get("promptTokenCount") or 0)
    return image_usd(model, size) + prompt_tokens * _input_price(model)


def _input_price(model: str) -> float:
    return INPUT_USD_PER_MILLION.get(model, max(INPUT_USD_PER_MILLION.values())) / 1_000_000


class SpendGuard:
    """The limits, checked and recorded inside the caller's transaction (a unit of work): a check
    that reads (turns this hour, spend today) and the write it allows (the turn, the
    reservation) commit together or not at all, and a named lock keeps two processes from both
    passing the same check on PostgreSQL."""

    def __init__(self, limits: SpendLimits) -> None:
        self.limits = limits

    async def check_submit(self, uow: UnitOfWork, key: SessionKey, author: str) -> None:
        """Refuse a new turn from a user over the hourly limit, or in a workspace whose budget
        for today is spent, before anything is queued (the caller then queues it in `uow`)."""
        if not self.limits.priced:
            return  # the offline engine costs nothing
        limit = self.limits.user_turns_per_hour
        if limit is not None:
            await uow.lock(f"turns:{key.platform}:{key.workspace}:{author}")
            count, oldest = await turns_since(uow, key, author, hour_ago())
            if count >= limit:
                wait = _minutes_until_free(oldest)
                raise OperationRefused(
                    f"You have asked for {count} turns in the last hour, the limit here; try again "
                    f"in {wait} minute{'s' if wait != 1 else ''}.", "rate_limited")
        budget = self.limits.workspace_daily_usd
        if budget is not None and await spent_today(uow, key) >= budget:
            raise OperationRefused(_budget_sentence(budget), "budget")

    async def reserve(self, uow: UnitOfWork, session: Session, turn: Turn, input_tokens: int) -> None:
        """Reserve the call's estimated price in `uow`, or refuse when that would pass today's
        budget."""
        if not self.limits.priced:
            return
        usd = estimate_usd(turn.model, turn.image_size, input_tokens)
        budget = self.limits.workspace_daily_usd
        if budget is not None:
            await uow.lock(f"budget:{session.key.platform}:{session.key.workspace}")
        if not await reserve_in(uow, session, turn, usd, budget):
            assert budget is not None
            raise OperationRefused(_budget_sentence(budget), "budget")

    @staticmethod
    async def settle(uow: UnitOfWork, turn: Turn, got_image: bool, usage: dict[str, Any] | None) -> None:
        """Charge what the call cost when it made an image, else refund its reservation (if it
        has one: the offline engine and a turn that never reached the call have none)."""
        cost = actual_usd(turn.model, turn.image_size, usage) if got_image else None
        await settle_in(uow, turn.id, cost)


def _budget_sentence(budget: float) -> str:
    return (f"This workspace's budget of ${budget:.2f} for today is used up; it resets at "
            "00:00 UTC. Ask an admin to raise THREADEDIT_DAILY_BUDGET_USD if needed.")


def _minutes_until_free(oldest: str | None) -> int:
    if oldest is None:
        return 60
    freed = datetime.fromisoformat(oldest).timestamp() + 3600 - datetime.now(UTC).timestamp()
    return max(1, math.ceil(freed / 60))
