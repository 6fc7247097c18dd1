"""An ingress core (records turns, never runs them) and a worker (runs them, posts through a core of
its own) on one in-memory store, as `run --no-worker` and `threadedit worker` are in two processes."""

from __future__ import annotations

import asyncio

import pytest

from bot.chat import outcomes as outcomes_module
from bot.chat.backend import IncomingMessage
from bot.chat.core import ChatCore
from bot.chat.text import Text
from bot.deliveries import Deliveries
from bot.domain import SessionKey
from bot.pipeline import TurnPipeline
from bot.reads import SessionReads
from bot.service import EditService
from tests.fakes.memory_chat import FakeBackend
from tests.fakes.memory_store import MemoryStore

HERE = SessionKey("fake", "W1", "C1", "t1")


class SlowToPost(FakeBackend):
    """The ingress's platform: its first post waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def post_text(self, key: SessionKey, text: Text) -> str:
        self.waiting.set()
        await self.release.wait()
        return await super().post_text(key, text)


def cores(service: EditService, store: MemoryStore, ingress_backend: FakeBackend,
          worker_backend: FakeBackend) -> tuple[ChatCore, ChatCore, TurnPipeline]:
    made = {"deliveries": Deliveries(store), "reads": SessionReads(store), "progress_interval": 60}
    ingress = ChatCore(service, ingress_backend, work=False, **made)  # type: ignore[arg-type]
    posting = ChatCore(service, worker_backend, work=False, **made)  # type: ignore[arg-type]
    worker = TurnPipeline(service, listeners={"fake": posting})
    return ingress, posting, worker


async def test_the_ingress_answers_and_the_worker_runs_and_posts(service: EditService, store: MemoryStore):
    # Both "processes" post to the same thread; one fake platform stands for it.
    thread = FakeBackend()
    ingress, posting, worker = cores(service, store, thread, thread)
    ingress.pipeline.start()
    await ingress.on_message(IncomingMessage(HERE, "in-1", "ana", "a lighthouse", mentioned=True))
    assert thread.texts()[0].startswith("Working on v1")
    assert thread.versions() == []  # the ingress never runs a turn
    worker.start()
    await thread.wait_for(lambda: thread.versions() and thread.texts() == ["v1 is ready."])
    await worker.aclose()
    await ingress.aclose()


async def test_a_turn_finished_before_the_ingress_recorded_its_line_still_ends_ready(
        service: EditService, store: MemoryStore, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(outcomes_module, "PROGRESS_POST_WAITS", (0.01,))  # the worker looks briefly
    slow, fast = SlowToPost(), FakeBackend()
    ingress, posting, worker = cores(service, store, slow, fast)
    worker.start()
    said = asyncio.create_task(ingress.on_message(
        IncomingMessage(HERE, "in-1", "ana", "a lighthouse", mentioned=True)))
    await slow.waiting.wait()  # the turn is recorded; its line is still on its way to the platform
    await fast.wait_for(lambda: fast.versions())  # the worker ran it and posted v1 meanwhile
    slow.release.set()
    await said
    # The ingress found the turn finished when its line landed, and brought the line to the end.
    assert slow.texts() == ["v1 is ready."]
    assert len(fast.versions()) == 1
    await worker.aclose()
    await ingress.aclose()
