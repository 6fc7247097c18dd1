"""What the thread and the gallery say about a turn, read from the HTML the server sends: a
words-only answer is a note named after the engine that gave it (not a red "Gemini said"), a 4K
render reads as what was asked rather than the prompt written for the model, and 4K is offered
only where it makes something new. (That success notes fade is the page's script: see
tests/browser/test_playground_phone.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.playground import views
from bot import catalog
from bot.domain import Session, SessionKey, SessionState, Turn, TurnKind, TurnState
from bot.local_engine import LocalEngine
from tests.playground_harness import JSON, Harness, running

INTERNAL_PROMPT = "Render this same image at 4K resolution"


@pytest.fixture
async def h(data_dir: Path) -> AsyncIterator[Harness]:
    async with running(data_dir) as harness:
        yield harness


def _card(html: str, version: int) -> str:
    found = re.search(rf'<figure class="version-card[^"]*" id="v{version}".*?</figure>', html, re.S)
    assert found, f"no card for v{version}"
    return found.group(0)


def _bot_reply(html: str, turn_id: int) -> str:
    found = re.search(rf'<li class="msg bot [^"]*" data-turn="{turn_id}">.*?</li>', html, re.S)
    assert found, f"no reply to turn {turn_id}"
    return found.group(0)


async def test_a_words_only_answer_is_a_neutral_note_from_the_offline_engine(h: Harness) -> None:
    sid = await h.start("a lighthouse at dusk in navy and orange")
    r = await h.message("what is this?", session=sid)
    turn = (await r.json())["turn"]
    await h.pg.pipeline.join()
    assert (await h.app.store.get_turn(turn)).state is TurnState.TEXT
    reply = _bot_reply(await h.text(f"/s/{sid}/fragment"), turn)
    assert 'class="msg bot outcome-words"' in reply and 'class="words-note"' in reply
    assert "The offline engine answered in words; no new version." in reply
    assert "The offline engine only understands" in reply  # the engine's own words follow
    assert "Gemini said" not in reply and "failure" not in reply
    assert 'data-control="rerun"' in reply  # asking again is still one tap away



async def test_the_retry_on_an_answer_in_words_asks_that_instruction_again_after_a_later_version(
        h: Harness) -> None:
    sid = await h.start("a lighthouse at dusk in navy and orange")
    words = (await (await h.message("what is this?", session=sid)).json())["turn"]
    await h.pg.pipeline.join()
    assert (await h.message("make it sepia", session=sid)).status == 200
    await h.pg.pipeline.join()
    reply = _bot_reply(await h.text(f"/s/{sid}/fragment"), words)
    assert f'<input type="hidden" name="turn" value="{words}">' in reply  # this turn's own Retry
    r = await h.client.post(f"/s/{sid}/control", headers=JSON,
                            data={"control": "rerun", "turn": str(words), "author": "ben"})
    assert r.status == 200, await r.text()
    await h.pg.pipeline.join()
    state = await h.app.store.load_state(sid)
    again = state.turns[-1]
    # That instruction, not the latest one nor v2's, on the version it was asked of (v1).
    assert (again.kind, again.instruction, again.author) == (TurnKind.RETRY, "what is this?", "ben")
    assert state.parent_version(again) == 1 and again.state is TurnState.TEXT
    r = await h.client.post(f"/s/{sid}/control", headers=JSON,
                            data={"control": "rerun", "turn": "99999999999999999999999", "author": "ben"})
    assert (r.status, (await r.json())["error"]) == (
        400, "That Retry names no instruction of this thread, so I did nothing.")


class WordsOnlyGemini(LocalEngine):
    """Stands in for Gemini answering in words: the page must not call it the offline engine."""

    name = "gemini"
    offline = False

    async def generate(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        part = {"text": "I can only describe this one; say what to change."}
        return {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP"}]}


async def test_a_words_only_answer_from_gemini_is_named_after_the_model(data_dir: Path) -> None:
    async with running(data_dir, engine=WordsOnlyGemini()) as h:
        r = await h.message("what is in this picture?")
        sid, turn = (await r.json())["session"], (await r.json())["turn"]
        await h.pg.pipeline.join()
        reply = _bot_reply(await h.text(f"/s/{sid}/fragment"), turn)
    assert "Nano Banana 2 answered in words; no new version." in reply
    assert "I can only describe this one; say what to change." in reply
    assert "offline" not in reply.lower() and "failure" not in reply


async def test_a_4k_render_reads_as_asked_and_offers_no_4k_again(h: Harness) -> None:
    sid = await h.start("a lighthouse at dusk in navy and orange")
    r = await h.control(sid, "4k", 1, author="ben")
    assert r.status == 200, await r.text()
    thread = await h.text(f"/s/{sid}/fragment")
    assert INTERNAL_PROMPT not in thread
    asked = re.findall(r'<p class="text request">([^<]*)</p>', thread)
    assert asked == ["4K render of v1"]
    assert "v2 (from v1)" in _card(thread, 2) and "4K render of v1 · asked by ben" in _card(thread, 2)
    assert 'data-control="4k"' in _card(thread, 1)
    assert 'data-control="4k"' not in _card(thread, 2)
    assert 'data-control="retry"' in _card(thread, 2)  # the other controls stay
    gallery = await h.text(f"/s/{sid}/gallery")
    assert INTERNAL_PROMPT not in gallery and "4K render of v1" in gallery


async def test_a_version_made_at_4k_offers_no_4k(h: Harness) -> None:
    sid = await h.start("a lighthouse at dusk in navy and orange")
    r = await h.client.post(f"/s/{sid}/settings", data={"size": "4K", "author": "ana"}, headers=JSON)
    assert r.status == 200, await r.text()
    await h.message("make it warmer", session=sid)
    await h.pg.pipeline.join()
    thread = await h.text(f"/s/{sid}/fragment")
    assert 'data-control="4k"' in _card(thread, 1)
    assert 'data-control="4k"' not in _card(thread, 2)


def test_4k_is_not_offered_by_a_model_that_cannot_render_it() -> None:
    fixed = next(m for m, spec in catalog.MODELS.items() if "4K" not in spec.image_sizes)
    at = "2026-01-01T00:00:00+00:00"

    def state(model: str, size: str | None) -> SessionState:
        session = Session(1, SessionKey("playground", "local", "local", "t"), model, None, size, 1, "ana",
                          at, at)
        turn = Turn(1, 1, None, TurnKind.EDIT, "x", "ana", {}, TurnState.DONE, model, None, size, at,
                    version=1)
        return SessionState(session, [turn])

    assert views.version_view(state(catalog.FLASH, None), state(catalog.FLASH, None).turns[0]).can_upscale
    assert not views.can_upscale(state(fixed, None), state(fixed, None).turns[0])
    assert not views.can_upscale(state(catalog.FLASH, "4K"), state(catalog.FLASH, "4K").turns[0])
