"""ModelCall: plan a turn's request within the context budget, send it, and recover once.

Two answers from the API are recovered from here rather than shown to the user:
- "too large" (413, or "The input token count (N) exceeds the maximum ..."): our estimate was
  short of the API's count, so the request is re-anchored and sent once more;
- a reference uploaded through the Files API that is gone (expired, deleted): the cached
  upload is forgotten and the request is sent once more with the image inline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.context import ContextPlanner, PlannedRequest
from bot.domain import Turn
from bot.engine import Engine, EngineError
from bot.gemini.contents import generation_config
from bot.storage.blobs import BlobStore, unpack_content

if TYPE_CHECKING:
    from bot.gemini.files import ReferenceFiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRequest:
    plan: PlannedRequest
    body: dict[str, Any]  # the generateContent body as it will be sent


class ModelCall:
    def __init__(self, engine: Engine, blobs: BlobStore, planner: ContextPlanner,
                 files: ReferenceFiles | None = None) -> None:
        self.engine = engine
        self.blobs = blobs
        self.planner = planner
        self.files = files

    async def prepare(self, turn: Turn, path: Sequence[Turn], *,
                      force_anchor: bool = False) -> PreparedRequest:
        """The request for `turn` on `path`. Raises EngineError("context_too_large") when even a
        re-anchored request would be over the model's limits, before anything is sent."""
        plan = self.planner.plan(turn.model, path, turn.user_content, force_anchor=force_anchor)
        sent = await self._swapped(plan.contents)
        body = self._body(turn, sent)
        if not plan.anchored and path and await self._counted_over(turn, plan, body):
            plan = self.planner.anchored(turn.model, path, turn.user_content)
            sent = await self._swapped(plan.contents)
            body = self._body(turn, sent)
        # Limits apply to what is sent: references moved to the Files API weigh a URI.
        problem = self.planner.hard_limit_sentence(turn.model,
                                                   self.planner.measure(turn.model, sent))
        if problem:
            raise EngineError("context_too_large", problem)
        return PreparedRequest(plan, body)

    async def send(self, turn: Turn, path: Sequence[Turn],
                   prepared: PreparedRequest) -> tuple[dict[str, Any], PreparedRequest]:
        """The response body, and the request that produced it (which may be a second one)."""
        try:
            return await self.engine.generate(turn.model, prepared.body), prepared
        except EngineError as exc:
            if exc.code == "context_too_large" and not prepared.plan.anchored and path:
                log.info("turn %s: the API found the request too large; re-anchoring once", turn.id)
                again = await self.prepare(turn, path, force_anchor=True)
                return await self.engine.generate(turn.model, again.body), again
            if exc.code == "file_missing" and self.files is not None:
                from bot.gemini.files import file_uris

                log.info("turn %s: an uploaded reference is gone; sending it inline", turn.id)
                await self.files.forget(file_uris(prepared.body["contents"]))
                again = PreparedRequest(prepared.plan, self._body(turn, prepared.plan.contents))
                return await self.engine.generate(turn.model, again.body), again
            raise

    async def _swapped(self, packed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """With the Files API on, user-side images become file URIs (uploaded once)."""
        return await self.files.swap_user_images(packed) if self.files is not None else packed

    def _body(self, turn: Turn, packed: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "contents": [unpack_content(c, self.blobs) for c in packed],
            "generationConfig": generation_config(turn.model, turn.aspect_ratio, turn.image_size),
        }

    async def _counted_over(self, turn: Turn, plan: PlannedRequest, body: dict[str, Any]) -> bool:
        """With countTokens configured, ask the API once the estimate is past half the budget."""
        budget = self.planner.budget.tokens_for(turn.model)
        count = getattr(self.engine, "count_tokens", None)
        if not self.planner.budget.count_tokens or count is None or plan.size.tokens * 2 < budget:
            return False
        try:
            return int(await count(turn.model, body)) > budget
        except EngineError as exc:
            log.warning("countTokens failed (%s); using the estimate", exc.code)
            return False
