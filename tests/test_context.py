"""Bounded context against the fake Gemini API: requests stay within budget however long the
thread, re-anchor on the head image, recover from a "too large" answer once, and undo, revert
and retry keep working across a segment boundary."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot import catalog
from bot.chat.presenter import caption
from bot.context import ContextBudget, ContextPlanner, decisions_text
from bot.domain import SessionKey, Turn, TurnKind, TurnState
from bot.export import build_manifest
from bot.service import EditService, SessionDefaults
from bot.storage.blobs import BlobStore, unpack_content
from bot.storage.repository import SessionStore
from tests.conftest import make_engine
from tests.fakes import gemini_rules as rules
from tests.fakes.gemini_server import Behaviour, FakeGemini, RecordedRequest

KEY = SessionKey("slack", "T1", "C1", "1700000000.000100")
# Each Flash turn adds a model turn of two images (a thought sketch and the result), 2,240
# tokens by the fake's count: a budget of 8,000 holds about three turns of history.
BUDGET = ContextBudget(max_tokens=8000)


@pytest.fixture
async def bounded(store: SessionStore, blobs: BlobStore,
                  gemini: FakeGemini) -> AsyncIterator[EditService]:
    engine = make_engine(gemini, timeout=5.0)
    yield EditService(store, blobs, engine, context=BUDGET,
                      defaults=SessionDefaults(model=catalog.FLASH, image_size="1K"))
    await engine.aclose()


async def edit(service: EditService, text: str) -> Any:
    turn = await service.submit_edit(KEY, "ana", text)
    return await service.run_turn(turn.id)


def tokens(req: RecordedRequest) -> int:
    text, image = rules.count_tokens(req.model, req.body["contents"])
    return text + image


def first_text(req: RecordedRequest) -> str:
    return req.body["contents"][0]["parts"][0]["text"]


def is_anchored(req: RecordedRequest) -> bool:
    return first_text(req).startswith("Earlier turns of this conversation were condensed")


async def test_a_long_thread_stays_within_budget_and_every_request_is_accepted(
        bounded: EditService, gemini: FakeGemini) -> None:
    for i in range(1, 16):
        result = await edit(bounded, f"edit number {i}: add a lamp" if i > 1 else "a red barn")
        assert result.status == "ok", result.message
    assert all(r.status == 200 for r in gemini.requests)  # signatures replayed as received
    sizes = [tokens(r) for r in gemini.requests]
    assert max(sizes) <= BUDGET.max_tokens
    # Full replay would have carried every earlier model turn: 14 of them by the last request.
    assert 14 * 2 * rules.IMAGE_INPUT_TOKENS[catalog.FLASH] > 3 * BUDGET.max_tokens
    anchored = [i for i, r in enumerate(gemini.requests) if is_anchored(r)]
    assert len(anchored) >= 3
    # Flat: the size after each re-anchor falls back to one image and the new instruction.
    assert max(sizes[-5:]) <= BUDGET.max_tokens and min(sizes[3:]) < 2 * 1120 + 400


async def test_the_anchor_carries_the_head_image_the_decisions_and_the_instruction(
        bounded: EditService, gemini: FakeGemini, blobs: BlobStore, store: SessionStore) -> None:
    for i in range(1, 7):
        await edit(bounded, "a red barn" if i == 1 else f"step {i}")
    anchored = next(r for r in gemini.requests if is_anchored(r))
    n = gemini.requests.index(anchored)
    contents = anchored.body["contents"]
    assert [c["role"] for c in contents] == ["user"]
    summary, image, instruction = contents[0]["parts"]
    assert "- a red barn" in summary["text"] and f"(v{n})" in summary["text"]
    assert instruction == {"text": f"step {n + 1}"}
    # The head image, byte for byte, as a reference in the user turn.
    state = await store.load_state((await store.find_session(KEY)).id)  # type: ignore[union-attr]
    head_before = state.version(n)
    assert image["inlineData"]["data"] == blobs.b64(head_before.image_blob or "")
    # The anchored turn keeps what it sent; the next request replays from it.
    anchored_turn = state.version(n + 1)
    assert anchored_turn.anchor_content is not None
    following = gemini.requests[n + 1]
    assert following.body["contents"][0] == unpack_content(anchored_turn.anchor_content, blobs)
    assert following.body["contents"][1] == gemini.issued[n]
    # The thread's caption and the export say which versions were made from a condensed history.
    result = await bounded.result_of(anchored_turn.id)
    assert caption(result).plain().endswith("asked by ana · earlier turns condensed")
    assert not (await bounded.result_of(head_before.id)).condensed
    manifest = build_manifest(state, [])
    assert [v["version"] for v in manifest["versions"] if v["condensed_history"]] == [n + 1]


async def test_a_too_large_answer_re_anchors_once_and_the_turn_succeeds(
        service: EditService, gemini: FakeGemini) -> None:
    for text in ("a red barn", "make it blue", "add snow"):
        await edit(service, text)
    gemini.script.append(Behaviour.too_large(count=70000, limit=65536))
    result = await edit(service, "add a fox")
    assert result.status == "ok" and result.version == 4
    too_big, retried = gemini.requests[-2:]
    assert too_big.status == 400 and len(too_big.body["contents"]) == 7
    assert retried.status == 200 and is_anchored(retried)
    assert retried.body["contents"][0]["parts"][-1] == {"text": "add a fox"}
    # The next turn builds on the anchor, not on the whole history.
    await edit(service, "add a moon")
    assert [c["role"] for c in gemini.requests[-1].body["contents"]] == ["user", "model", "user"]


async def test_too_large_after_re_anchoring_ends_in_a_sentence_and_history_is_intact(
        service: EditService, gemini: FakeGemini, store: SessionStore) -> None:
    for text in ("a red barn", "make it blue"):
        await edit(service, text)
    gemini.script += [Behaviour.too_large(), Behaviour.too_large()]
    result = await edit(service, "add a fox")
    assert result.status == "failed" and result.reason == "context_too_large"
    assert "too large" in (result.message or "")
    assert len(gemini.requests) == 4  # the first try and one re-anchored retry, no more
    state = await store.load_state(result.session_id)
    assert state.head is not None and state.head.version == 2
    after = await edit(service, "add a fox")
    assert after.status == "ok" and after.version == 3


async def test_undo_and_revert_across_a_segment_boundary(
        bounded: EditService, gemini: FakeGemini, store: SessionStore) -> None:
    for i in range(1, 6):
        await edit(bounded, "a red barn" if i == 1 else f"step {i}")
    session = await store.find_session(KEY)
    assert session is not None
    state = await store.load_state(session.id)
    anchored = [t.version for t in state.versions if t.anchor_content is not None]
    assert anchored, "the thread should have re-anchored by v5"
    boundary = anchored[0]
    # Revert to a version before the anchor: its own path is replayed, from the root.
    await bounded.revert(session.id, "ana", 2)
    result = await edit(bounded, "branch from before the anchor")
    assert result.status == "ok" and result.parent_version == 2
    req = gemini.requests[-1]
    assert first_text(req) == "a red barn" and not is_anchored(req)
    # Revert to the anchored version: the request starts at the anchor.
    await bounded.revert(session.id, "ana", boundary)
    await edit(bounded, "branch from the anchor")
    state = await store.load_state(session.id)
    req = gemini.requests[-1]
    assert req.status == 200
    assert req.body["contents"][0] == unpack_content(
        state.version(boundary).anchor_content or {}, bounded.blobs)
    # Undo from there steps back over the boundary.
    view = await bounded.undo(session.id, "ana")
    assert view.head == boundary


async def test_a_retry_of_an_anchored_turn_is_planned_again(
        bounded: EditService, gemini: FakeGemini, store: SessionStore) -> None:
    for i in range(1, 7):
        await edit(bounded, "a red barn" if i == 1 else f"step {i}")
    session = await store.find_session(KEY)
    assert session is not None
    state = await store.load_state(session.id)
    anchored = next(t for t in state.versions if t.anchor_content is not None)
    retry = await bounded.submit_retry(session.id, "ana", anchored.version)
    result = await bounded.run_turn(retry.id)
    assert result.status == "ok" and result.parent_version == anchored.version - 1
    req = gemini.requests[-1]
    assert is_anchored(req) and req.body["contents"][0]["parts"][-1] == {"text": anchored.instruction}


async def test_a_request_over_the_hard_limit_is_refused_before_sending(
        store: SessionStore, blobs: BlobStore, gemini: FakeGemini) -> None:
    engine = make_engine(gemini, timeout=5.0)
    service = EditService(store, blobs, engine, context=ContextBudget(hard_max_bytes=2_000))
    try:
        result = await edit(service, "a red barn " * 300)
    finally:
        await engine.aclose()
    assert result.status == "failed" and result.reason == "context_too_large"
    assert "MB a request to Gemini may carry" in (result.message or "")
    assert gemini.requests == []


async def test_measured_bytes_are_the_bytes_sent(
        service: EditService, gemini: FakeGemini, store: SessionStore, blobs: BlobStore) -> None:
    for text in ("a red barn", "make it blue", "add snow"):
        await edit(service, text)
    state = await store.load_state((await store.find_session(KEY)).id)  # type: ignore[union-attr]
    path = state.versions
    new_user = path[-1].user_content
    planner = ContextPlanner(blobs)
    plan = planner.plan(catalog.FLASH, path[:-1], new_user)
    contents = [unpack_content(c, blobs) for c in plan.contents]
    assert plan.size.bytes == len(json.dumps(contents, separators=(",", ":")).encode())
    text, image = rules.count_tokens(catalog.FLASH, contents)
    assert plan.size.tokens >= text + image  # never under the API's count (here: equal images)


def _turn(version: int, instruction: str, kind: TurnKind = TurnKind.EDIT) -> Turn:
    return Turn(id=version, session_id=1, parent_turn_id=version - 1 or None, kind=kind,
                instruction=instruction, author="ana", user_content={}, state=TurnState.DONE,
                model=catalog.FLASH, aspect_ratio=None, image_size="1K", created_at="",
                version=version, image_blob="x.jpg")


def test_the_decisions_text_keeps_the_first_and_latest_instructions_within_its_cap() -> None:
    path = [_turn(1, "a red barn at dusk")]
    path += [_turn(v, f"change number {v} " + "detail " * 20) for v in range(2, 60)]
    path.append(_turn(60, "Render this same image at 4K resolution.", TurnKind.UPSCALE))
    text = decisions_text(path)
    assert len(text) <= 1500
    lines = text.splitlines()
    assert "(v60)" in lines[0] and lines[1] == "- a red barn at dusk"
    assert "more …)" in lines[2]
    assert lines[-2].startswith("- change number 59 ")
    assert "4K" not in text  # upscales are not decisions about the picture


async def test_an_http_413_from_the_front_end_re_anchors_once_too(
        service: EditService, gemini: FakeGemini) -> None:
    # Google's front end refuses an oversized body before the API sees it, in HTML.
    for text in ("a red barn", "make it blue"):
        await edit(service, text)
    gemini.script.append(Behaviour.raw(
        413, b"<html><title>Error 413 (Request Entity Too Large)!!1</title></html>", "text/html"))
    result = await edit(service, "add a fox")
    assert result.status == "ok" and result.version == 3
    assert [r.status for r in gemini.requests[-2:]] == [413, 200]
    assert is_anchored(gemini.requests[-1])
