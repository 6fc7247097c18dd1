"""The turn pipeline: order within a session, the global cap, resuming after a crash."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from sqlalchemy import update

from bot.chat.backend import IncomingMessage
from bot.chat.core import ChatCore
from bot.chat.text import Text
from bot.deliveries import Deliveries
from bot.domain import SessionKey, TurnState
from bot.pipeline import TurnPipeline
from bot.reads import SessionReads
from bot.service import EditService
from bot.storage.schema import turns
from tests.fakes.gemini_server import Behaviour
from tests.fakes.memory_chat import FakeBackend
from tests.slack_harness import eventually


def key(n: int) -> SessionKey:
    return SessionKey("discord", "G1", "C1", f"thread-{n}")


class CountingEngine:
    """The real engine, with a count of how many calls are in flight at once."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.offline, self.accepts_encoded = inner.offline, inner.accepts_encoded
        self.now = self.peak = 0

    async def generate(self, model, body):
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            return await self.inner.generate(model, body)
        finally:
            self.now -= 1

    async def count_tokens(self, model, body):
        return await self.inner.count_tokens(model, body)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_turns_of_one_session_run_in_arrival_order(service: EditService, gemini):
    gemini.script.append(Behaviour.slow(0.2))
    pipeline = TurnPipeline(service, max_concurrency=4)
    first = await service.submit_edit(key(1), "ana", "a harbour")
    second = await service.submit_edit(key(1), "bo", "add boats")  # asked while v1 is generating
    futs = [pipeline.submit(first), pipeline.submit(second)]
    r1, r2 = await asyncio.gather(*futs)
    await pipeline.aclose()
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
    await pipeline.aclose()
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

    pipeline = TurnPipeline(service, listener=Listener(), max_age_seconds=3600)
    pipeline.start()  # as at every start: the queue holds what a crash left
    await eventually(lambda: len(finished) == 2)
    await pipeline.aclose()
    by_turn = {r.turn_id: r for r in finished}
    assert by_turn[fresh.id].status == "ok" and by_turn[fresh.id].version == 1
    assert by_turn[stale.id].status == "failed" and by_turn[stale.id].reason == "interrupted"
    assert "restart" in by_turn[stale.id].message
    assert (await service.store.get_turn(stale.id)).state is TurnState.FAILED
    assert await service.store.unfinished_turns() == []


class HeldBackend(FakeBackend):
    """The in-memory chat backend, with posts into some threads waiting until the test lets them
    go, as a rate-limited platform would."""

    def __init__(self, held_threads: set[str]) -> None:
        super().__init__(platform="slack", reactions={})
        self.held_threads, self.release = held_threads, asyncio.Event()
        self.held: list[str] = []  # posts waiting for the platform

    async def post_text(self, key: SessionKey, text: Text) -> str:
        if key.thread in self.held_threads:
            self.held.append(text.plain())
            await self.release.wait()
        return await super().post_text(key, text)

    async def wait_version(self, thread: str) -> list[int]:
        await self.wait_for(lambda: self.versions(thread), within=10)
        return [p.version for p in self.versions(thread)]


async def test_a_held_progress_post_does_not_hold_the_model_slot(service: EditService, gemini):
    backend = HeldBackend({"thread-a"})
    core = ChatCore(service, backend, deliveries=Deliveries(service.store),
                    reads=SessionReads(service.store), max_concurrency=1, progress_interval=0.05)

    def message(n: str, text: str) -> IncomingMessage:
        return IncomingMessage(key=SessionKey("slack", "T1", "C1", f"thread-{n}"),
                               message_id=f"m-{n}", author="ana", text=text, mentioned=True)

    # A's progress post waits for the platform; A's turn was queued before it and has the slot.
    a = asyncio.create_task(core.on_message(message("a", "a harbour")))
    await eventually(lambda: backend.held)
    await core.on_message(message("b", "a windmill"))
    try:
        # With one slot, B can finish only if A's wait for Slack is not holding it.
        assert await backend.wait_version("thread-b") == [1]
        assert backend.versions("thread-a") == []
    finally:
        backend.release.set()
    await a
    assert await backend.wait_version("thread-a") == [1]
    await core.pipeline.join()
    first_post = next(p for p in backend.posts if p.thread == "thread-a")
    assert first_post.text.startswith("Working on v1")
    await core.aclose()


async def test_a_crash_nobody_awaits_is_not_reported_as_never_retrieved(service: EditService):
    class Failing:
        async def turn_started(self, turn) -> None:
            return None

        async def turn_finished(self, result) -> None:
            raise RuntimeError("the platform is gone")

    class Lines(logging.Handler):
        """Keeps the text only: a kept record would keep the failed future alive, uncollected."""

        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    loop, pipeline_log, lines = asyncio.get_running_loop(), logging.getLogger("bot.pipeline"), Lines()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    pipeline_log.addHandler(lines)
    pipeline_log.propagate = False
    try:
        pipeline = TurnPipeline(service, listener=Failing())
        pipeline.submit(await service.submit_edit(key(1), "ana", "a harbour"))  # not awaited
        await pipeline.join()
        # The failed future is unreachable now; collecting it is when asyncio reports (at once,
        # from the future's finalizer, to the loop's exception handler).
        gc.collect()
    finally:
        pipeline_log.propagate = True
        pipeline_log.removeHandler(lines)
        loop.set_exception_handler(previous)
    assert any("crashed in the pipeline" in line for line in lines.lines)  # logged once, as a crash
    assert [c["message"] for c in reported] == []


async def test_a_caller_that_awaits_a_crashed_turn_still_hears_why(service: EditService):
    class Failing:
        async def turn_started(self, turn) -> None:
            return None

        async def turn_finished(self, result) -> None:
            raise RuntimeError("the platform is gone")

    pipeline = TurnPipeline(service, listener=Failing())
    fut = pipeline.submit(await service.submit_edit(key(1), "ana", "a harbour"))
    with pytest.raises(RuntimeError, match="the platform is gone"):
        await fut
