"""Instructions that arrive while the store does not answer (bot/chat/pending.py), on the in-memory
fakes: a store that raises StoreUnavailable (as the real one does once its retries ran out) and
then answers again. Nothing is lost, nothing runs twice, and the person is told in the thread."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TypeVar

import pytest

from bot.access import AccessPolicy
from bot.chat import presenter
from bot.chat.controls import Control, button_value
from bot.chat.core import ChatCore
from bot.errors import StoreUnavailable
from bot.service import EditService
from bot.storage.uow import Op
from tests.fakes.memory_chat import FakeBackend
from tests.fakes.memory_engine import ScriptedEngine
from tests.fakes.memory_store import MemoryStore
from tests.slack_harness import eventually
from tests.unit.test_chat_core_fast import HERE, ORIGIN, message, services, started

T = TypeVar("T")
KEPT = f"ana {presenter.KEPT.plain()}"


class FlakyStore(MemoryStore):
    """The in-memory store as a database that stops answering: while `down`, every operation
    raises StoreUnavailable; `down_when` takes it down at the first operation that finds the
    condition true (a stop between two steps of one instruction)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.down_when: Callable[[], bool] | None = None

    def _answer(self) -> None:
        if self.down_when is not None and self.down_when():
            self.down, self.down_when = True, None
        if self.down:
            raise StoreUnavailable("Cannot open the store: PostgreSQL at db:5432: nothing is listening "
                                   "there (connection refused).")

    async def transact(self, op: Op[T]) -> T:
        self._answer()
        return await super().transact(op)

    async def read(self, op: Op[T]) -> T:
        self._answer()
        return await super().read(op)


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def core(service: EditService, backend: FakeBackend, store: FlakyStore) -> AsyncIterator[ChatCore]:
    chat = ChatCore(service.with_policy(AccessPolicy(approvers=frozenset({"dana"}))), backend,
                    progress_interval=60, **services(store))
    chat.pending.look_again = 0.01
    yield chat
    await chat.aclose()


def instructions(store: MemoryStore) -> list[str]:
    return [t["instruction"] for t in store.rows("turns")]


def pending_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    found = [r for r in caplog.records if r.name == "bot.chat.pending"]
    assert all(r.exc_info is None for r in found)  # one line each, never a traceback
    return [r.getMessage() for r in found]


async def test_a_mention_while_the_store_is_down_is_kept_told_and_made_one_turn_when_it_answers(
        core: ChatCore, backend: FakeBackend, store: FlakyStore, engine: ScriptedEngine) -> None:
    store.down = True
    mention = message("a lighthouse", 0, mentioned=True)
    await core.on_message(mention)
    await core.on_message(mention)  # Slack's `message` twin of the mention, also while down
    assert backend.texts() == [KEPT]  # said once, at once
    assert store.rows("turns") == [] and len(core.pending) == 1
    store.down = False
    await backend.wait_for(lambda: backend.versions() and "v1 is ready." in backend.texts())
    await core.pipeline.join()
    await core.on_message(mention)  # a platform's retry once it answers again: no second turn
    await core.pipeline.join()
    assert backend.texts() == [KEPT, "v1 is ready."]
    assert [v.version for v in backend.versions()] == [1]
    assert instructions(store) == ["a lighthouse"] and len(engine.requests) == 1
    assert len(core.pending) == 0


async def test_kept_instructions_are_recorded_in_the_order_received_and_later_ones_wait_behind(
        core: ChatCore, backend: FakeBackend, store: FlakyStore, engine: ScriptedEngine) -> None:
    await started(core, backend)
    store.down = True
    await core.on_message(message("add a boat", 1))  # a reply in a session this process knows
    await core.on_message(message("at night", 2, author="bo"))
    assert backend.texts()[-2:] == [KEPT, f"bo {presenter.KEPT.plain()}"]
    store.down = False
    # Arrives once the store answers, before the kept ones were handled: it goes behind them.
    await core.on_message(message("with a moon", 3))
    await backend.wait_for(lambda: len(backend.versions()) == 4)
    await core.pipeline.join()
    assert instructions(store) == ["a lighthouse", "add a boat", "at night", "with a moon"]
    assert [v.version for v in backend.versions()] == [1, 2, 3, 4]
    assert engine.user_texts() == ["a lighthouse", "add a boat", "at night", "with a moon"]


async def test_a_reply_in_a_thread_not_known_to_hold_a_session_is_kept_without_a_word(
        core: ChatCore, backend: FakeBackend, store: FlakyStore) -> None:
    store.down = True
    await core.on_message(message("just chatting", 1))  # could be anyone's thread: say nothing
    assert backend.posts == [] and len(core.pending) == 1
    store.down = False
    await eventually(lambda: len(core.pending) == 0, within=5)  # handled: no session here, so nothing
    assert backend.posts == [] and store.rows("turns") == []


async def test_a_click_whose_claim_landed_before_the_store_stopped_goes_on_from_after_the_claim(
        core: ChatCore, backend: FakeBackend, store: FlakyStore, engine: ScriptedEngine) -> None:
    session_id = await started(core, backend)
    claims = len(store.rows("inbound_events"))
    store.down_when = lambda: len(store.rows("inbound_events")) > claims  # just after the claim
    await core.on_button(button_value(session_id, 1, Control.RETRY), "ana", ORIGIN, event_key="click-1")
    assert backend.texts()[-1] == KEPT and len(store.rows("turns")) == 1
    store.down = False
    await backend.wait_for(lambda: len(backend.versions()) == 2)
    await core.pipeline.join()
    assert [t["kind"] for t in store.rows("turns")] == ["edit", "retry"] and len(engine.requests) == 2


async def test_an_instruction_recorded_before_the_store_stopped_is_not_kept_and_runs_once(
        core: ChatCore, backend: FakeBackend, store: FlakyStore, engine: ScriptedEngine,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its progress line was never posted: the worker looks for it only briefly before posting.
    monkeypatch.setattr("bot.chat.outcomes.PROGRESS_POST_WAITS", (0.01,))
    session_id = await started(core, backend)
    store.down_when = lambda: len(store.rows("turns")) == 2  # the retry's turn is recorded, then down
    await core.on_button(button_value(session_id, 1, Control.RETRY), "ana", ORIGIN, event_key="click-2")
    assert len(core.pending) == 0 and KEPT not in backend.texts()
    assert any("was recorded, then the store stopped answering" in line for line in pending_lines(caplog))
    store.down = False
    await backend.wait_for(lambda: len(backend.versions()) == 2)  # the worker finds it in the queue
    await core.pipeline.join()
    assert [t["kind"] for t in store.rows("turns")] == ["edit", "retry"] and len(engine.requests) == 2


async def test_a_reaction_while_the_store_is_down_is_kept_untold_and_counts_once_it_answers(
        core: ChatCore, backend: FakeBackend, store: FlakyStore) -> None:
    await started(core, backend)
    v1 = next(p.message_id for p in backend.posts if p.version)
    store.down = True
    await core.on_reaction(HERE.channel, v1, "ok", "dana", added=True, event_key="r1")
    assert backend.texts() == ["v1 is ready."]  # its thread is in the store: nowhere to say it
    store.down = False
    await backend.wait_for(lambda: backend.texts()[-1] == "✅ v1 approved by dana.")
    assert len(store.rows("approvals")) == 1


async def test_past_its_bounds_an_instruction_is_given_up_with_a_line_and_a_sentence(
        core: ChatCore, backend: FakeBackend, store: FlakyStore, caplog: pytest.LogCaptureFixture) -> None:
    core.pending.max_kept = 1
    store.down = True
    await core.on_message(message("a lighthouse", 0, mentioned=True))
    await core.on_message(message("a castle", 1, mentioned=True, key=replace(HERE, thread="t2")))
    assert backend.texts("t2") == [f"ana {presenter.NOT_KEPT_FULL.plain()}"]
    core.pending.max_age = 0.0  # the oldest has waited too long: given up at its next try
    await backend.wait_for(lambda: len(backend.texts("t1")) == 2)
    assert backend.texts("t1") == [KEPT, f"ana {presenter.NOT_KEPT_TOO_LONG.plain()}"]
    lines = pending_lines(caplog)
    assert [line for line in lines if "could not be recorded" in line] == [
        "A message (msg:C1:in-1) could not be recorded: the store is not answering and 1 are kept already",
        "A message (msg:C1:in-0) could not be recorded: the store did not answer for 0 s"]
    store.down = False
    assert len(core.pending) == 0 and store.rows("turns") == []


async def test_a_stop_gives_up_what_is_kept_with_a_line_and_a_sentence(
        core: ChatCore, backend: FakeBackend, store: FlakyStore, caplog: pytest.LogCaptureFixture) -> None:
    store.down = True
    await core.on_message(message("a lighthouse", 0, mentioned=True))
    with caplog.at_level(logging.WARNING):
        await core.aclose()
    assert backend.texts() == [KEPT, f"ana {presenter.NOT_KEPT_STOPPED.plain()}"]
    assert "A message (msg:C1:in-0) from before the store stopped answering was not recorded: the " \
           "process is stopping" in pending_lines(caplog)
    store.down = False
    assert store.rows("turns") == []


async def test_a_reply_in_a_session_another_process_started_is_told_once_a_message_there_was_seen(
        core: ChatCore, service: EditService, store: FlakyStore) -> None:
    other = FakeBackend()
    replica = ChatCore(service, other, progress_interval=60, **services(store))
    try:
        await core.on_message(message("a lighthouse", 0, mentioned=True))  # the session, made elsewhere
        await replica.on_message(message("size 2K", 1))  # a command: this replica sees the session
        store.down = True
        await replica.on_message(message("add a boat", 2))
        settings, kept = other.texts()
        assert settings.startswith("Settings: ") and kept == KEPT
    finally:
        await replica.aclose()



async def test_a_mention_that_opens_its_own_thread_is_told_in_that_thread(
        core: ChatCore, backend: FakeBackend, store: FlakyStore) -> None:
    # Discord: a mention in a channel gets a thread on its message, which does not exist yet.
    store.down = True
    await core.on_message(replace(message("a lighthouse", 0, mentioned=True), needs_thread=True))
    assert backend.threads_opened == [HERE.thread] and backend.texts(HERE.thread) == [KEPT]
    store.down = False
    await backend.wait_for(lambda: backend.versions(HERE.thread))
    await core.pipeline.join()
    assert backend.texts(HERE.thread) == [KEPT, "v1 is ready."] and len(store.rows("turns")) == 1
