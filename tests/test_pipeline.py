"""The turn pipeline: order within a session, the global cap, resuming after a crash."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from bot.domain import SessionKey, TurnState
from bot.pipeline import TurnPipeline
from bot.service import EditService
from bot.storage.schema import turns
from tests.fakes.gemini_server import Behaviour


def key(n: int) -> SessionKey:
    return SessionKey("discord", "G1", "C1", f"thread-{n}")


class CountingEngine:
    """The real engine, with a count of how many calls are in flight at once."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.now = self.peak = 0

    async def generate(self, model, body):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.inner.generate(model, body)
        finally:
            self.now -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_turns_of_one_session_run_in_arrival_order(service: EditService, gemini):
    gemini.script.append(Behaviour.slow(0.2))
    pipeline = TurnPipeline(service, max_concurrency=4)
    first = await service.submit_edit(key(1), "ana", "a harbour")
    second = await service.submit_edit(key(1), "bo", "add boats")  # asked while v1 is generating
    futs = [pipeline.submit(first), pipeline.submit(second)]
    assert (pipeline.position(first.id), pipeline.position(second.id)) == (1, 2)
    r1, r2 = await asyncio.gather(*futs)
    assert (r1.version, r2.version, r2.parent_version) == (1, 2, 1)
    texts = [c["parts"][0]["text"] for c in gemini.requests[-1].body["contents"]
             if c["role"] == "user"]
    assert texts == ["a harbour", "add boats"]


async def test_model_calls_are_capped_across_sessions(service: EditService, gemini):
    service.calls.engine = CountingEngine(service.engine)
    gemini.script += [Behaviour.slow(0.3)] * 6
    pipeline = TurnPipeline(service, max_concurrency=2)
    turns = [await service.submit_edit(key(n), "ana", f"scene {n}") for n in range(6)]
    results = await asyncio.gather(*(pipeline.submit(t) for t in turns))
    assert all(r.status == "ok" for r in results)
    assert service.engine.peak == 2


async def test_unfinished_turns_are_resumed_and_stale_ones_reported(service: EditService, gemini):
    fresh = await service.submit_edit(key(1), "ana", "a lighthouse")
    stale = await service.submit_edit(key(2), "ana", "a windmill")
    await service.store.mark_running(stale.id, None)  # as a crash mid-call would leave it
    await service.store.transact(lambda uow: uow.conn.execute(  # as an old crash would leave it
        update(turns).where(turns.c.id == stale.id).values(created_at="2020-01-01T00:00:00.000+00:00")))

    finished = []

    class Listener:
        async def turn_started(self, turn) -> None:
            return None

        async def turn_finished(self, result) -> None:
            finished.append(result)

    pipeline = TurnPipeline(service, listener=Listener())
    assert await pipeline.resume_unfinished(max_age_seconds=3600) == [fresh.id]
    await pipeline.join()
    by_turn = {r.turn_id: r for r in finished}
    assert by_turn[fresh.id].status == "ok" and by_turn[fresh.id].version == 1
    assert by_turn[stale.id].status == "failed" and by_turn[stale.id].reason == "interrupted"
    assert "restart" in by_turn[stale.id].message
    assert (await service.store.get_turn(stale.id)).state is TurnState.FAILED
    assert await service.store.unfinished_turns() == []
