"""ChatCore on the in-memory backend, store and scripted engine: what happens in a thread."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.access import AccessPolicy
from bot.chat import presenter
from bot.chat.backend import IncomingMessage, Origin
from bot.chat.controls import Control, button_value
from bot.chat.core import ChatCore
from bot.deliveries import Deliveries
from bot.domain import SessionKey
from bot.engine import EngineError
from bot.reads import SessionReads
from bot.service import EditService
from tests.fakes.memory_chat import FakeBackend
from tests.fakes.memory_engine import ScriptedEngine
from tests.fakes.memory_store import MemoryStore

HERE = SessionKey("fake", "W1", "C1", "t1")
ORIGIN = Origin(HERE.workspace, HERE.channel, HERE.thread)


def message(text: str, n: int, author: str = "ana", mentioned: bool = False,
            key: SessionKey = HERE) -> IncomingMessage:
    return IncomingMessage(key=key, message_id=f"in-{n}", author=author, text=text, mentioned=mentioned)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def core(service: EditService, backend: FakeBackend, store: MemoryStore) -> AsyncIterator[ChatCore]:
    guarded = service.with_policy(AccessPolicy(approvers=frozenset({"dana"})))
    chat = ChatCore(guarded, backend, progress_interval=60, **services(store))
    yield chat
    await chat.aclose()


def services(store: MemoryStore) -> dict[str, object]:
    """The service operations ChatCore uses besides the edit service's, on the in-memory store."""
    return {"deliveries": Deliveries(store), "reads": SessionReads(store)}


async def say(core: ChatCore, msg: IncomingMessage) -> None:
    """Deliver a message and wait until every turn it started has been shown."""
    await core.on_message(msg)
    await core.pipeline.join()


async def started(core: ChatCore, backend: FakeBackend) -> int:
    """A session with v1, made by a mention; its id."""
    await say(core, message("a lighthouse", 0, mentioned=True))
    session = await core.service.find_session(HERE)
    assert session is not None and len(backend.versions()) == 1
    return session.id


def version_post_id(backend: FakeBackend, version: int) -> str:
    return next(p.message_id for p in backend.posts if p.version and p.version.version == version)


async def test_a_mention_starts_a_session_with_progress_then_the_version_and_its_buttons(
        core: ChatCore, backend: FakeBackend) -> None:
    session_id = await started(core, backend)
    progress, version = backend.posts
    assert progress.kind == "text" and progress.text.startswith("Working on v1")
    assert version.version is not None and version.version.version == 1
    assert [label for label, _ in version.version.buttons] == ["Undo", "Retry", "4K", "Approve"]
    assert version.version.buttons[1][1] == button_value(session_id, 1, Control.RETRY)
    assert backend.texts() == ["v1 is ready."]  # the progress post, edited once the version is up


async def test_a_message_in_a_thread_without_a_session_writes_nothing(core: ChatCore, backend: FakeBackend,
                                                                      store: MemoryStore) -> None:
    await say(core, message("just chatting", 1))
    assert backend.posts == [] and store.commits == 0


async def test_a_reply_in_the_thread_is_an_edit_of_the_head(core: ChatCore, backend: FakeBackend,
                                                            engine: ScriptedEngine) -> None:
    await started(core, backend)
    await say(core, message("add a boat", 1, author="bo"))
    v2 = backend.versions()[-1]
    assert (v2.version, "add a boat" in v2.caption.plain()) == (2, True)
    assert engine.user_texts() == ["a lighthouse", "add a boat"]


async def test_thread_commands_change_settings_and_show_history(core: ChatCore, backend: FakeBackend,
                                                                engine: ScriptedEngine) -> None:
    await started(core, backend)
    await say(core, message("size 2K", 1))
    await say(core, message("aspect 7:3", 2))
    await say(core, message("history", 3))
    settings, refused, history = backend.texts()[-3:]
    assert settings.startswith("Settings: ") and "2K" in settings
    assert refused.startswith("ana ") and "7:3" in refused
    assert "v1" in history and "a lighthouse" in history
    assert len(engine.requests) == 1  # commands are not instructions


async def test_a_duplicate_message_is_handled_once(core: ChatCore, backend: FakeBackend,
                                                   engine: ScriptedEngine) -> None:
    mention = message("a lighthouse", 0, mentioned=True)
    await say(core, mention)
    await say(core, mention)  # a platform's retry, or Slack's second event for one mention
    assert len(backend.versions()) == 1 and len(engine.requests) == 1


async def test_reactions_are_read_in_the_backends_own_vocabulary(core: ChatCore, backend: FakeBackend,
                                                                 store: MemoryStore) -> None:
    await started(core, backend)
    v1 = version_post_id(backend, 1)
    await core.on_reaction(HERE.channel, v1, "repeat", "bo", added=True, event_key="r0")  # Slack's name
    await core.on_reaction(HERE.channel, backend.posts[0].message_id, "again", "bo", added=True,
                           event_key="r1")  # on the progress post: not a version
    await core.pipeline.join()
    assert len(backend.versions()) == 1
    await core.on_reaction(HERE.channel, v1, "again", "bo", added=True, event_key="r2")
    await core.on_reaction(HERE.channel, v1, "again", "bo", added=True, event_key="r2")  # redelivered
    await core.pipeline.join()
    assert [p.version for p in backend.versions()] == [1, 2]
    assert [t["kind"] for t in store.rows("turns")] == ["edit", "retry"]


async def test_an_approval_reaction_approves_and_its_removal_withdraws(core: ChatCore,
                                                                       backend: FakeBackend) -> None:
    session_id = await started(core, backend)
    v1 = version_post_id(backend, 1)
    await core.on_reaction(HERE.channel, v1, "ok", "dana", added=True)  # no event id (Discord)
    assert backend.texts()[-1] == "✅ v1 approved by dana."
    await core.on_reaction(HERE.channel, v1, "ok", "dana", added=False)
    assert backend.texts()[-1] == "dana withdrew the approval of v1."
    await core.on_reaction(HERE.channel, v1, "ok", "bo", added=True)  # not an approver: told privately
    assert backend.ephemerals("bo") == ["Only the configured approvers can approve versions."]
    assert (await core.service.history(session_id)).versions[0].approved is False


async def test_undo_on_the_head_steps_back_and_on_an_older_version_reverts(core: ChatCore,
                                                                          backend: FakeBackend) -> None:
    session_id = await started(core, backend)
    await say(core, message("add a boat", 1))
    await say(core, message("at night", 2))
    await core.on_button(button_value(session_id, 3, Control.UNDO), "ana", ORIGIN)
    assert backend.texts()[-1] == "Back to v2. (ana)"
    await core.on_button(button_value(session_id, 1, Control.UNDO), "ana", ORIGIN)
    assert backend.texts()[-1].startswith("Back to v1; the next instruction edits it.")
    assert (await core.service.history(session_id)).head == 1


async def test_a_click_from_another_thread_is_refused_and_changes_nothing(
        core: ChatCore, backend: FakeBackend, store: MemoryStore) -> None:
    session_id = await started(core, backend)
    elsewhere = Origin(HERE.workspace, HERE.channel, "t-other")
    turns = len(store.rows("turns"))
    await core.on_button(button_value(session_id, 1, Control.RETRY), "mallory", elsewhere,
                         event_key="click-1")
    await core.pipeline.join()
    assert backend.ephemerals("mallory") == [presenter.NOT_THIS_THREAD.plain()]
    assert len(store.rows("turns")) == turns and len(backend.versions()) == 1
    refusal = store.rows("audit_log")[-1]
    assert (refusal["actor"], refusal["outcome"], refusal["session_id"]) == ("mallory", "refused", None)


async def test_a_repeated_click_acts_once(core: ChatCore, backend: FakeBackend) -> None:
    session_id = await started(core, backend)
    for _ in range(2):
        await core.on_button(button_value(session_id, 1, Control.UPSCALE),
                             "ana", ORIGIN, event_key="click-7")
    await core.pipeline.join()
    assert [(p.version, "4K" in p.caption.plain()) for p in backend.versions()] == [(1, False), (2, True)]


async def test_a_failed_turn_is_told_on_its_progress_post(core: ChatCore, backend: FakeBackend,
                                                          engine: ScriptedEngine) -> None:
    engine.script.append(EngineError("rate_limited", "Gemini is busy; try again in a minute."))
    await say(core, message("a lighthouse", 0, mentioned=True))
    assert backend.versions() == []
    assert backend.texts() == ["ana Gemini is busy; try again in a minute."]


async def test_a_mention_outside_the_allowed_channels_is_refused_privately(service: EditService,
                                                                           backend: FakeBackend,
                                                                           store: MemoryStore) -> None:
    chat = ChatCore(service, backend, allowed_channels=frozenset({"C-other"}), **services(store))
    await say(chat, message("a lighthouse", 0, mentioned=True))
    assert backend.ephemerals("ana") == [presenter.CHANNEL_NOT_ALLOWED.plain()]
    assert store.rows("sessions") == [] and store.rows("turns") == []
    await chat.aclose()
