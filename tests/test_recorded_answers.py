"""Real Gemini answers, replayed through the service: what the user sees, what it costs, and
that the next request sends the model turn back byte for byte.

The fake Gemini answers with the recorded bodies verbatim (tests/fixtures/gemini/, sources in
tests/fixtures/SOURCES.md; multi-megabyte strings rebuilt at their recorded sizes by
tests/fakes/gemini_recorded.py) and still checks every request it receives as Google does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot import catalog
from bot.domain import SessionKey
from bot.service import EditService
from bot.spending import image_usd
from bot.storage.blobs import BlobStore, unpack_content
from bot.storage.repository import SessionStore
from bot.storage.usage import UsageLedger
from tests.conftest import make_engine
from tests.fakes.gemini_recorded import recorded_body
from tests.fakes.gemini_server import Behaviour, FakeGemini

KEY = SessionKey("slack", "T1", "C1", "1700000000.000100")
PRO_INPUT_USD = 2.00 / 1_000_000


def compact(value: Any) -> bytes:
    """JSON as the client sends it: the recorded key order, no spaces."""
    return json.dumps(value, separators=(",", ":")).encode()


def recorded_content(name: str) -> dict[str, Any]:
    return json.loads(recorded_body(name))["candidates"][0]["content"]


async def spend(store: SessionStore, turn_id: int) -> tuple[str, float]:
    """The turn's one entry in the spend ledger: (charged or refunded, USD)."""
    [row] = [r for r in await UsageLedger(store).rows() if r["turn_id"] == turn_id]
    return row["state"], row["cost_usd"]


async def edit(service: EditService, text: str, **kw: Any):
    turn = await service.submit_edit(KEY, "ana", text, **kw)
    return turn.id, await service.run_turn(turn.id)


async def assert_next_request_replays(service: EditService, gemini: FakeGemini,
                                      content: dict[str, Any]) -> None:
    """The next turn sends the recorded model turn back unchanged, and the fake, which holds
    replays to what it answered, accepts it."""
    _, result = await edit(service, "now make it night")
    assert result.status == "ok", result.message
    request = gemini.requests[-1]
    assert request.status == 200
    assert request.body["contents"][1] == content
    assert compact(content) in request.raw  # byte for byte, in the recorded key order
    signatures = [p["thoughtSignature"] for p in content["parts"] if "thoughtSignature" in p]
    assert signatures and all(sig.encode() in request.raw for sig in signatures)


async def test_text_and_image_both_signed(service: EditService, gemini: FakeGemini,
                                          store: SessionStore, blobs: BlobStore) -> None:
    content = recorded_content("g02")
    assert [len(p["thoughtSignature"]) for p in content["parts"]] == [1_100_216, 1_098_588]
    gemini.script.append(Behaviour.recorded(recorded_body("g02")))
    turn_id, result = await edit(service, "an illustrated story about an axolotl", model="pro")
    assert (result.status, result.version, result.model) == ("ok", 1, catalog.PRO)
    assert result.text is not None and result.text.startswith("A little axolotl named Archie")
    assert result.text.endswith("potted plants.")  # the recording's trailing blank line trimmed
    assert result.image_path is not None and result.image_path.read_bytes()[:2] == b"\xff\xd8"
    # Charged the image and the 14 prompt tokens the answer reports.
    assert await spend(store, turn_id) == ("charged", pytest.approx(
        image_usd(catalog.PRO, "1K") + 14 * PRO_INPUT_USD))
    # The 3.3 MB answer is a small row: image and signatures live in the blob store, so loading
    # a long session does not parse megabytes per turn; it rebuilds byte for byte.
    stored = await store.get_turn(turn_id)
    assert stored.model_content is not None and len(compact(stored.model_content)) < 1_000
    assert compact(unpack_content(stored.model_content, blobs)) == compact(content)
    await assert_next_request_replays(service, gemini, content)


async def test_image_only_with_a_2_9_mb_signature(service: EditService, gemini: FakeGemini,
                                                  store: SessionStore) -> None:
    content = recorded_content("g04")
    [part] = content["parts"]
    assert len(part["thoughtSignature"]) == 2_909_844
    gemini.script.append(Behaviour.recorded(recorded_body("g04")))
    turn_id, result = await edit(service, "a cute baby sea otter", model="pro")
    assert (result.status, result.version, result.text) == ("ok", 1, None)
    assert await spend(store, turn_id) == ("charged", pytest.approx(
        image_usd(catalog.PRO, "1K") + 22 * PRO_INPUT_USD))
    await assert_next_request_replays(service, gemini, content)


async def test_a_lone_backtick_beside_the_image_is_kept_but_not_shown(
    service: EditService, gemini: FakeGemini, store: SessionStore, blobs: BlobStore
) -> None:
    content = recorded_content("g08")
    assert content["parts"][0] == {"text": "`"}
    gemini.script.append(Behaviour.recorded(recorded_body("g08")))
    turn_id, result = await edit(service, "add a hat")
    assert (result.status, result.version) == ("ok", 1)
    assert result.text is None  # no "`" under the picture
    # Kept for the record and for replay exactly as it came (a 2.5 answer has no signatures, so
    # a Gemini 3 model would refuse it: the stored turn is compared instead of sent).
    stored = await store.get_turn(turn_id)
    assert stored.model_content is not None
    assert compact(unpack_content(stored.model_content, blobs)) == compact(content)


@pytest.mark.parametrize(("name", "reason", "message"), [
    ("g09", "NO_IMAGE",
     "Gemini answered without making an image. Try saying more concretely what to change."),
    ("g10", "PROHIBITED_CONTENT",
     "Gemini refused this instruction: it asks for content Gemini does not allow. Nothing was "
     "added to the history; try rewording it."),
    ("g22", "MODEL_ARMOR",
     "Gemini refused this instruction: it was stopped by the gateway's content filter. Nothing was "
     "added to the history; try rewording it. (Gemini said: The prompt violated Prompt Injection "
     "and Jailbreak filters.)"),
])
async def test_answers_without_an_image(service: EditService, gemini: FakeGemini,
                                        store: SessionStore, name: str, reason: str,
                                        message: str) -> None:
    gemini.script.append(Behaviour.recorded(recorded_body(name)))
    turn_id, result = await edit(service, "something")
    assert (result.status, result.reason, result.message) == ("blocked", reason, message)
    assert result.version is None and gemini.issued == []
    assert await spend(store, turn_id) == ("refunded", 0.0)
    # Nothing entered the history: the next turn starts from scratch.
    _, again = await edit(service, "something else")
    assert again.version == 1 and len(gemini.requests[-1].body["contents"]) == 1


async def test_a_real_503_is_retried_then_explained(service: EditService, gemini: FakeGemini,
                                                    store: SessionStore) -> None:
    overloaded = recorded_body("g14")
    gemini.script += [Behaviour.recorded(overloaded, 503)] * 6  # every try the engine makes
    turn_id, result = await edit(service, "a lighthouse")
    assert (result.status, result.reason, result.version) == ("failed", "unavailable", None)
    assert result.message == ("Gemini is unavailable right now (HTTP 503). Gave up after 6 tries; "
                              "the session is unchanged, so you can retry later.")
    assert await spend(store, turn_id) == ("refunded", 0.0)
    gemini.script.append(Behaviour.recorded(overloaded, 503))
    turn_id, result = await edit(service, "a lighthouse")
    assert (result.status, result.version) == ("ok", 1)
    assert [r.status for r in gemini.requests[-2:]] == [503, 200]
    assert (await spend(store, turn_id))[0] == "charged"


async def test_a_real_429_waits_as_long_as_it_asks(gemini: FakeGemini, store: SessionStore,
                                                   blobs: BlobStore) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    engine = make_engine(gemini, sleep=sleep)
    service = EditService(store, blobs, engine)
    try:
        gemini.script.append(Behaviour.recorded(recorded_body("g13"), 429))
        turn_id, result = await edit(service, "a lighthouse")
    finally:
        await engine.aclose()
    assert (result.status, result.version) == ("ok", 1)
    assert waits == [58.0]  # RetryInfo.retryDelay "58s", not the message's 58.217843437s
    assert [r.status for r in gemini.requests] == [429, 200]
    state, cost = await spend(store, turn_id)  # one entry: the wait cost nothing
    assert state == "charged" and image_usd(catalog.FLASH, "1K") < cost < 0.07
