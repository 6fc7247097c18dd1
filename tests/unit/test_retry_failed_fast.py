"""The Retry on a line that made no version (issue 14: a failed turn is retryable where the person
reads it): ChatCore on the in-memory backend, store and scripted engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.chat import outcomes as outcomes_module
from bot.chat import presenter
from bot.chat.backend import IncomingFile, IncomingMessage, Origin
from bot.chat.controls import Control, button_value, parse_button_value, retry_buttons
from bot.chat.core import ChatCore
from bot.engine import EngineError
from bot.service import EditService, SessionDefaults
from bot.spending import SpendLimits
from bot.storage.blobs import BlobStore
from tests.fakes.memory_chat import FakeBackend
from tests.fakes.memory_engine import Answer, ScriptedEngine, tiny_png
from tests.fakes.memory_store import MemoryStore
from tests.unit.test_chat_core_fast import HERE, ORIGIN, message, say, services
from tests.unit.test_fleet_roles_fast import SlowToPost, cores

BUSY = EngineError("rate_limited", "Gemini is busy; try again in a minute.")


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def core(service: EditService, backend: FakeBackend, store: MemoryStore) -> AsyncIterator[ChatCore]:
    chat = ChatCore(service, backend, progress_interval=60, **services(store))
    yield chat
    await chat.aclose()


def failure_line(backend: FakeBackend, words: str) -> tuple[str, str]:
    """The message id of the line that says `words`, and the value of its Retry button."""
    edited = dict(backend.edits)
    [line] = [p.message_id for p in backend.posts if words in edited.get(p.message_id, p.text)]
    [(label, value)] = backend.line_buttons(line)
    assert label == "Retry"
    return line, value


def turn_rows(store: MemoryStore) -> list[tuple[str, str, str]]:
    return [(t["kind"], t["instruction"], t["state"]) for t in store.rows("turns")]


async def test_a_first_turn_that_failed_has_retry_on_its_line_and_one_click_makes_v1(
        core: ChatCore, backend: FakeBackend, engine: ScriptedEngine, store: MemoryStore) -> None:
    engine.script.append(BUSY)
    await say(core, message("a lighthouse", 0, mentioned=True))
    line, value = failure_line(backend, "Gemini is busy")
    session = await core.service.find_session(HERE)
    assert session is not None
    failed = store.rows("turns")[0]["id"]
    assert value == button_value(session.id, failed, Control.RETRY_TURN)
    assert parse_button_value(value) == (Control.RETRY_TURN, session.id, failed)
    for _ in range(2):  # the platform delivers the click twice: one turn
        await core.on_button(value, "bo", ORIGIN, event_key="click-1")
    await core.pipeline.join()
    assert turn_rows(store) == [("edit", "a lighthouse", "failed"), ("retry", "a lighthouse", "done")]
    [v1] = backend.versions()
    assert v1.version == 1 and "asked by bo" in v1.caption.plain()
    assert engine.user_texts() == ["a lighthouse"]


async def test_retry_repeats_the_failed_instruction_with_its_reference_images(
        core: ChatCore, backend: FakeBackend, engine: ScriptedEngine) -> None:
    await say(core, message("a lighthouse", 0, mentioned=True))
    engine.script.append(Answer.blocked())

    async def fetch() -> bytes:
        return tiny_png(99)

    await say(core, IncomingMessage(HERE, "in-1", "ana", "put this boat in",
                                    files=[IncomingFile("boat.png", None, fetch)]))
    _, value = failure_line(backend, "ana ")
    await core.on_button(value, "ana", ORIGIN, event_key="click-1")
    await core.pipeline.join()
    assert [v.version for v in backend.versions()] == [1, 2]
    blocked, again = engine.requests[1][1]["contents"][-1], engine.requests[2][1]["contents"][-1]
    assert again == blocked  # the same words and the same image, sent again
    assert [p["text"] for p in again["parts"] if "text" in p] == ["put this boat in"]
    assert sum("inlineData" in p or "fileData" in p for p in again["parts"]) == 1


async def test_an_old_failures_retry_runs_on_the_version_it_was_meant_for(
        core: ChatCore, backend: FakeBackend, engine: ScriptedEngine, store: MemoryStore) -> None:
    await say(core, message("a lighthouse", 0, mentioned=True))
    engine.script.append(Answer.words("I would rather not."))
    await say(core, message("add a boat", 1))
    _, value = failure_line(backend, "answered in words")
    await say(core, message("at night", 2))  # v2: the head moved on
    await core.on_button(value, "ana", ORIGIN, event_key="click-1")
    await core.pipeline.join()
    v3 = backend.versions()[-1]
    assert v3.version == 3 and v3.caption.plain().startswith("v3 (from v1) · add a boat")
    assert engine.user_texts() == ["a lighthouse", "add a boat"]  # v1's path, then the words' instruction
    assert (await core.service.history((await core.service.find_session(HERE)).id)).head == 3


async def test_the_retry_reaction_on_a_failure_line_retries_it_once(
        core: ChatCore, backend: FakeBackend, engine: ScriptedEngine, store: MemoryStore) -> None:
    engine.script.append(BUSY)
    await say(core, message("a lighthouse", 0, mentioned=True))
    line, _ = failure_line(backend, "Gemini is busy")
    await core.on_reaction(HERE.channel, line, "back", "bo", added=True, event_key="r0")  # Undo: nothing
    await core.on_reaction(HERE.channel, line, "again", "bo", added=True, event_key="r1")
    await core.on_reaction(HERE.channel, line, "again", "bo", added=True, event_key="r1")  # redelivered
    await core.on_reaction(HERE.channel, line, "again", "cy", added=True)  # no event id (Discord)
    await core.on_reaction(HERE.channel, line, "again", "cy", added=True)  # ... replayed
    await core.pipeline.join()
    assert [k for k, _, _ in turn_rows(store)] == ["edit", "retry", "retry"]
    assert [v.version for v in backend.versions()] == [1, 2]


async def test_a_forged_or_stale_retry_is_refused_with_a_sentence(
        core: ChatCore, backend: FakeBackend, engine: ScriptedEngine, store: MemoryStore) -> None:
    await say(core, message("a lighthouse", 0, mentioned=True))
    session = await core.service.find_session(HERE)
    assert session is not None
    v1_turn = store.rows("turns")[0]["id"]
    for n, turn in enumerate((v1_turn + 50, v1_turn)):  # no such turn; a turn that made a version
        await core.on_button(button_value(session.id, turn, Control.RETRY_TURN), "bo", ORIGIN,
                             event_key=f"click-{n}")
    elsewhere = Origin(HERE.workspace, HERE.channel, "t-other")
    await core.on_button(retry_buttons(session.id, v1_turn)[0][1], "mallory", elsewhere, event_key="c9")
    await core.pipeline.join()
    assert backend.texts()[-2:] == [
        "bo That Retry names no instruction of this thread, so I did nothing.",
        "bo That instruction made v1; use the Retry on v1."]
    assert backend.ephemerals("mallory") == [presenter.NOT_THIS_THREAD.plain()]
    assert len(store.rows("turns")) == 1


async def test_retry_keeps_the_spend_limits_and_the_channel_allow_list(
        store: MemoryStore, blobs: BlobStore, engine: ScriptedEngine, backend: FakeBackend) -> None:
    limited = EditService(store, blobs, engine, defaults=SessionDefaults(image_size="1K"),
                          spend_limits=SpendLimits(user_turns_per_hour=1))
    chat = ChatCore(limited, backend, progress_interval=60, **services(store))
    engine.script.append(BUSY)
    await say(chat, message("a lighthouse", 0, mentioned=True))
    _, value = failure_line(backend, "Gemini is busy")
    await chat.on_button(value, "ana", ORIGIN, event_key="click-1")  # ana's hour is used up
    await chat.pipeline.join()
    assert backend.texts()[-1].startswith("ana You have asked for 1 turns in the last hour")
    await chat.aclose()
    closed = ChatCore(limited, backend, allowed_channels=frozenset({"C-other"}), **services(store))
    await closed.on_button(value, "bo", ORIGIN, event_key="click-2")
    await closed.pipeline.join()
    assert backend.ephemerals("bo") == [presenter.CHANNEL_NOT_ALLOWED.plain()]
    assert len(store.rows("turns")) == 1 and len(engine.requests) == 1
    await closed.aclose()


async def test_a_failure_line_posted_without_a_progress_line_is_recorded_for_its_reaction(
        core: ChatCore, backend: FakeBackend, engine: ScriptedEngine, store: MemoryStore) -> None:
    engine.script.append(BUSY)
    session = await core.service.session_for(HERE, "ana")
    turn = await core.service.submit_edit(session.id, "ana", "a lighthouse")  # e.g. the CLI's
    core.pipeline.start()
    core.pipeline.submit(turn)
    await core.pipeline.join()
    line, value = failure_line(backend, "Gemini is busy")
    assert value == button_value(session.id, turn.id, Control.RETRY_TURN)
    await core.on_reaction(HERE.channel, line, "again", "ana", added=True, event_key="r1")
    await core.pipeline.join()
    assert [v.version for v in backend.versions()] == [1]


async def test_a_failure_the_ingress_catches_up_on_gets_its_retry_too(
        service: EditService, store: MemoryStore, engine: ScriptedEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker (another process) finished the turn before the ingress recorded its line: the
    # ingress brings the line to the outcome, and the Retry comes with it.
    monkeypatch.setattr(outcomes_module, "PROGRESS_POST_WAITS", (0.01,))
    engine.script.append(BUSY)
    slow, fast = SlowToPost(), FakeBackend()
    ingress, _, worker = cores(service, store, slow, fast)
    worker.start()
    said = asyncio.create_task(ingress.on_message(message("a lighthouse", 0, mentioned=True)))
    await slow.waiting.wait()
    await fast.wait_for(lambda: fast.texts())  # the worker said it failed, on a line of its own
    slow.release.set()
    await said
    line, value = failure_line(slow, "Gemini is busy")
    assert parse_button_value(value) == (Control.RETRY_TURN, 1, store.rows("turns")[0]["id"])
    await worker.aclose()
    await ingress.aclose()
