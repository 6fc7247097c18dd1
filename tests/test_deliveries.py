"""The service operations chat adapters and the playground use instead of the store: Deliveries
(events, posts, delivery, app state) and SessionReads (one consistent read each). Run on
PostgreSQL too with THREADEDIT_TEST_DATABASE=postgresql."""

from __future__ import annotations

import pytest

from bot.chat.core import ChatCore
from bot.chat.text import Text
from bot.deliveries import Deliveries
from bot.domain import SessionKey, Turn, TurnKind, TurnState, UnknownSession
from bot.leases import TurnLeases
from bot.reads import SessionReads
from bot.service import EditService
from bot.storage.repository import SessionStore

KEY = SessionKey("discord", "G1", "C1", "thread-1")


async def _turn(store: SessionStore, key: SessionKey = KEY, text: str = "a harbour") -> Turn:
    session = await store.create_session(key, "ana", "gemini-2.5-flash-image", None, "1K")
    return await store.add_turn(session, kind=TurnKind.EDIT, instruction=text, author="ana",
                                user_content={"role": "user", "parts": [{"text": text}]},
                                parent_turn_id=None, model=session.model, aspect=None, size="1K")


async def _version(store: SessionStore, key: SessionKey = KEY) -> Turn:
    turn = await _turn(store, key)
    return await store.finish_turn(turn, TurnState.DONE, image_blob="ab12.jpg", image_mime="image/jpeg")


async def test_an_event_is_claimed_once_until_released(store: SessionStore) -> None:
    d = Deliveries(store)
    assert await d.claim_event("slack", "msg:C1:1")
    assert not await d.claim_event("slack", "msg:C1:1")
    assert await d.claim_event("discord", "msg:C1:1")  # each platform's keys are its own
    await d.release_event("slack", "msg:C1:1")
    assert await d.session_and_event("slack", KEY, "msg:C1:1") == (None, False)
    assert await d.claim_event("slack", "msg:C1:1")
    turn = await _turn(store)  # the thread has a session now
    session, seen = await d.session_and_event("slack", KEY, "msg:C1:1")
    assert (session.id if session else None, seen) == (turn.session_id, True)


async def test_a_reaction_toggle_counts_each_real_change_once(store: SessionStore) -> None:
    d = Deliveries(store)
    assert await d.toggle_event("discord", "r:+", "r:-")  # added
    assert not await d.toggle_event("discord", "r:+", "r:-")  # the add replayed
    assert await d.toggle_event("discord", "r:-", "r:+")  # removed
    assert not await d.toggle_event("discord", "r:-", "r:+")  # the removal replayed
    assert await d.toggle_event("discord", "r:+", "r:-")  # added again: counts again


async def test_a_post_names_its_version_only_when_it_is_a_version_post(store: SessionStore) -> None:
    d = Deliveries(store)
    running = await _turn(store)
    await d.record_post("discord", "C1", "m-progress", running.session_id, running.id, "progress")
    version = await store.finish_turn(running, TurnState.DONE, image_blob="ab12.jpg",
                                      image_mime="image/jpeg")
    await d.record_post("discord", "C1", "m-version", version.session_id, version.id, "version")

    assert await d.version_post("discord", "C1", "m-other") is None  # someone else's message
    assert await d.version_post("discord", "C1", "m-progress") is None
    assert await d.version_post("slack", "C1", "m-version") is None  # another platform's id
    found = await d.version_post("discord", "C1", "m-version")
    assert found is not None and found.version == 1
    assert found.session.id == version.session_id and found.session.key == KEY


async def test_a_turns_posts_and_its_delivery(store: SessionStore) -> None:
    d = Deliveries(store)
    turn = await _turn(store)
    assert await d.progress_post(turn.id) is None
    await d.record_post("discord", "C1", "m-progress", turn.session_id, turn.id, "progress")
    # A turn whose outcome is not recorded yet is not waiting to be shown...
    assert await d.undelivered("discord") == []
    await store.finish_turn(turn, TurnState.DONE, image_blob="ab12.jpg", image_mime="image/jpeg")
    # ... a finished one with a progress line is, on its own platform only.
    assert await d.undelivered("discord") == [turn.id]
    assert await d.undelivered("slack") == []
    posts = await d.turn_posts(turn.id)
    assert (posts.key, posts.session_id, posts.progress, posts.version) == (
        KEY, turn.session_id, "m-progress", None)
    await d.record_post("discord", "C1", "m-version", turn.session_id, turn.id, "version")
    assert (await d.turn_posts(turn.id)).version == "m-version"
    assert await d.progress_post(turn.id) == "m-progress"
    await d.mark_delivered(turn.id)
    await d.mark_delivered(turn.id)  # twice is harmless
    assert await d.undelivered("discord") == []


async def test_remembered_values_and_refusals(store: SessionStore) -> None:
    d = Deliveries(store)
    assert await d.recall("discord.commands.digest") is None
    await d.remember("discord.commands.digest", "abc")
    await d.remember("discord.commands.digest", "def")
    assert await d.recall("discord.commands.digest") == "def"
    turn = await _turn(store)
    await d.refused(turn.session_id, "bob", "undo", channel="C9", why="channel not allowed")
    await d.refused(None, "bob", "message", channel="C9")  # no session: still recorded
    log = await store.audit_log(turn.session_id)
    assert [(e["actor"], e["action"], e["outcome"], e["detail"]) for e in log] == [
        ("bob", "undo", "refused", {"channel": "C9", "why": "channel not allowed"})]


async def test_a_queued_turns_spot_counts_the_unfinished_turns_before_it(store: SessionStore) -> None:
    reads = SessionReads(store)
    first = await _version(store)
    second = await _turn(store, text="make it night")
    third = await _turn(store, text="add a moon")
    spot = await reads.queue_spot(third)
    assert (spot.session.id, spot.waiting, spot.next_version) == (first.session_id, 1, 2)
    assert (await reads.queue_spot(second)).waiting == 0
    # A worker holding the session's next turn takes the fleet's one slot: a turn queued now waits.
    assert not (await reads.queue_spot(third, cap=1)).slots_busy
    claim = await TurnLeases(store).claim("worker-1", cap=1, limit=1, lease_seconds=30)
    assert [c.turn.id for c in claim.taken] == [second.id]
    assert (await reads.queue_spot(third, cap=1)).slots_busy
    assert not (await reads.queue_spot(third, cap=2)).slots_busy


async def test_session_reads(store: SessionStore) -> None:
    reads = SessionReads(store)
    older = await _version(store)
    newer = await _turn(store, SessionKey("playground", "local", "local", "x"))
    await store.audit(older.session_id, "ana", "edit", "ok", turn=older.id)

    state, audit = await reads.state_and_audit(older.session_id)
    assert state.head is not None and state.head.id == older.id
    assert [e["action"] for e in audit] == ["edit"]
    assert (await reads.state(newer.session_id)).turns == [newer]
    assert [s.session.id for s in await reads.recent(10)] == [newer.session_id, older.session_id]
    assert [s.session.id for s in await reads.recent(1)] == [newer.session_id]
    assert await reads.turn(newer.id) == newer
    assert await reads.turn(newer.id + 1000) is None
    assert (await reads.session(older.session_id)).key == KEY
    with pytest.raises(UnknownSession):
        await reads.session(older.session_id + 1000)


class Thread:
    """A chat backend in memory: what was posted, and what was edited."""

    platform = "discord"
    reactions: dict = {}

    def __init__(self) -> None:
        self.versions: list[tuple[int, int]] = []
        self.edits: list[tuple[str, str]] = []

    def post_channel(self, key: SessionKey) -> str:
        return key.channel

    async def post_version(self, key: SessionKey, post) -> str:
        self.versions.append((post.session_id, post.version))
        return f"m-v{post.session_id}-{post.version}"

    async def update_text(self, key: SessionKey, message_id: str, text: Text) -> None:
        self.edits.append((message_id, text.plain()))

    async def post_text(self, key: SessionKey, text: Text) -> str:
        raise AssertionError("nothing new to say")


async def test_a_restart_shows_an_unshown_version_once(service: EditService) -> None:
    store = service.store
    d = Deliveries(store)
    shown, unshown = await _version(store), await _version(store, SessionKey("discord", "G1", "C1", "t2"))
    for turn in (shown, unshown):
        await d.record_post("discord", "C1", f"m-progress-{turn.id}", turn.session_id, turn.id, "progress")
    # The process stopped after posting the first version but before marking it shown.
    await d.record_post("discord", "C1", "m-shown", shown.session_id, shown.id, "version")
    runs = []
    for _ in range(2):  # and then restarted twice
        thread = Thread()
        core = ChatCore(service, thread, deliveries=d, reads=SessionReads(store))  # type: ignore[arg-type]
        await core.start()
        await core.aclose()
        runs.append((thread.versions, [m for m, _ in thread.edits]))
    assert runs == [([(unshown.session_id, 1)], [f"m-progress-{unshown.id}"]), ([], [])]
    assert await d.undelivered("discord") == []
    posted = await d.version_post("discord", "C1", f"m-v{unshown.session_id}-1")
    assert posted is not None and posted.session.id == unshown.session_id
