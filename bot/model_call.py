"""ModelCall: plan a turn's request within the context budget, send it, and recover once.

Two answers from the API are recovered from here rather than shown to the user:
- "too large" (413, or "The input token count (N) exceeds the maximum ..."): our estimate was
  short of the API's count, so the request is re-anchored and sent once more;
- a reference uploaded through the Files API that is gone (expired, deleted): the cached
  upload is forgotten and the request is sent once more with the image inline.

A request stays in stored form (image data as blob references) until the moment it is sent;
an engine that `accepts_encoded` gets an EncodedBody that reads the images from the blob store
as it is sent, so a 10 MB request waiting on the model holds kilobytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.context import ContextPlanner, PlannedRequest, RequestSize
from bot.domain import Turn
from bot.engine import Engine, EngineError
from bot.gemini.contents import generation_config
from bot.storage.blobs import BlobStore, EncodedBody, encode_unpacked, unpack_content

if TYPE_CHECKING:
    from bot.gemini.files import ReferenceFiles

log = logging.getLogger(__name__)

Content = dict[str, Any]


@dataclass(frozen=True)
class PreparedRequest:
    plan: PlannedRequest
    contents: list[Content]  # as sent, still packed: user images may be Files API URIs
    size: RequestSize  # of what is sent
    config: dict[str, Any]  # generationConfig


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
        config = generation_config(turn.model, turn.aspect_ratio, turn.image_size)
        # Off the event loop: measuring reads every image of the path, which on a machine new to
        # the session downloads them from the image store (S3) first.
        plan = await asyncio.to_thread(self.planner.plan, turn.model, path, turn.user_content,
                                       force_anchor=force_anchor)
        prepared = await self._prepared(turn, plan, config)
        if not plan.anchored and path and await self._counted_over(turn, prepared):
            plan = await asyncio.to_thread(self.planner.anchored, turn.model, path, turn.user_content)
            prepared = await self._prepared(turn, plan, config)
        problem = self.planner.hard_limit_sentence(turn.model, prepared.size)
        if problem:
            raise EngineError("context_too_large", problem)
        return prepared

    async def send(self, turn: Turn, path: Sequence[Turn],
                   prepared: PreparedRequest) -> tuple[dict[str, Any], PreparedRequest]:
        """The response body, and the request that produced it (which may be a second one)."""
        try:
            return await self._generate(turn, prepared), prepared
        except EngineError as exc:
            if exc.code == "context_too_large" and not prepared.plan.anchored and path:
                log.info("turn %s: the API found the request too large; re-anchoring once", turn.id)
                again = await self.prepare(turn, path, force_anchor=True)
                return await self._generate(turn, again), again
            if exc.code == "file_missing" and self.files is not None:
                from bot.gemini.files import file_uris

                log.info("turn %s: an uploaded reference is gone; sending it inline", turn.id)
                await self.files.forget(file_uris(prepared.contents))
                plan = prepared.plan
                again = PreparedRequest(plan, plan.contents, plan.size, prepared.config)
                return await self._generate(turn, again), again
            raise

    def body(self, prepared: PreparedRequest) -> dict[str, Any] | EncodedBody:
        """What the engine is given: an EncodedBody when it takes one, else the unpacked dict."""
        packed = {"contents": prepared.contents, "generationConfig": prepared.config}
        if self.engine.accepts_encoded:
            return encode_unpacked(packed, self.blobs)
        return {"contents": [unpack_content(c, self.blobs) for c in prepared.contents],
                "generationConfig": prepared.config}

    async def _generate(self, turn: Turn, prepared: PreparedRequest) -> dict[str, Any]:
        return await self.engine.generate(turn.model, self.body(prepared))  # type: ignore[arg-type]

    async def _prepared(self, turn: Turn, plan: PlannedRequest,
                        config: dict[str, Any]) -> PreparedRequest:
        if self.files is None:
            return PreparedRequest(plan, plan.contents, plan.size, config)
        # With the Files API, user-side images become URIs (uploaded once), and limits apply to
        # what is sent: a URI weighs its length.
        sent = await self.files.swap_user_images(plan.contents)
        return PreparedRequest(plan, sent, self.planner.measure(turn.model, sent), config)

    async def _counted_over(self, turn: Turn, prepared: PreparedRequest) -> bool:
        """With countTokens configured, ask the API once the estimate is past half the budget."""
        budget = self.planner.budget.tokens_for(turn.model)
        if not self.planner.budget.count_tokens or prepared.plan.size.tokens * 2 < budget:
            return False
        try:
            counted = await self.engine.count_tokens(turn.model, self.body(prepared))
            return counted is not None and counted > budget
        except EngineError as exc:
            log.warning("countTokens failed (%s); using the estimate", exc.code)
            return False
