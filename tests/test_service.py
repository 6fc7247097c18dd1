"""The service layer against the fake Gemini API: what each request carries, turn by turn."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bot.access import AccessPolicy
from bot.domain import OperationRefused, SessionKey
from bot.images import ImageRejected
from bot.results import Attachment
from bot.service import EditService, SessionDefaults
from bot.storage.blobs import BlobStore
from bot.storage.repository import SessionStore
from tests.conftest import make_engine
from tests.fakes.gemini_server import Behaviour, FakeGemini

KEY = SessionKey("slack", "T1", "C1", "1700000000.000100")

# The five turns of ../shared/seeds/04-five-turn-editing-test.txt.
FIVE_TURNS = [
    ("A contemporary living room interior. White walls, light oak herringbone floor.", "2K"),
    ("Change wall color to warm sage green (#8FAF8A). Keep all else exactly.", "2K"),
    ("Add tall walnut bookshelf right wall. Preserve all prior elements and colors.", "2K"),
    ("Change lighting to warm evening: floor lamp on, dusk outside the window.", "2K"),
    ("Generate same scene at 4K resolution, no further changes.", "4K"),
]


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def roles(req) -> list[str]:
    return [c["role"] for c in req.body["contents"]]


async def edit(service: EditService, text: str, refs=(), **kw):
    turn = await service.submit_edit(KEY, "ana", text, refs, **kw)
    return await service.run_turn(turn.id)


async def test_five_turn_session_replays_every_model_turn_verbatim(service, gemini: FakeGemini):
    results = []
    for i, (text, size) in enumerate(FIVE_TURNS):
        results.append(await edit(service, text, aspect="16:9", size=size))
        req = gemini.requests[i]
        assert req.status == 200
        contents = req.body["contents"]
        assert roles(req) == ["user", "model"] * i + ["user"]
        # Each earlier model turn is exactly what the API returned, signatures and bytes included.
        for j in range(i):
            assert json.dumps(contents[2 * j + 1]) == json.dumps(gemini.issued[j])
            assert contents[2 * j]["parts"][0]["text"] == FIVE_TURNS[j][0]
        assert contents[-1]["parts"] == [{"text": text}]
        assert req.body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9",
                                                               "imageSize": size}
    assert [r.version for r in results] == [1, 2, 3, 4, 5]
    assert [r.parent_version for r in results] == [None, 1, 2, 3, 4]
    # The file holds exactly the final (non-thought) image bytes the API returned.
    final = gemini.issued[4]["parts"][-1]["inlineData"]["data"]
    assert results[4].image_path.read_bytes() == base64.b64decode(final)
    assert results[4].mime == "image/jpeg"


async def test_undo_then_edit_sends_the_path_to_the_new_head(service, gemini):
    for text in ("a cat", "give it a hat", "make the hat red"):
        await edit(service, text)
    session = await service.find_session(KEY)
    view = await service.undo(session.id, "ana")
    assert view.head == 2 and view.notice == "Back to v2."
    r = await edit(service, "make the hat blue")
    req = gemini.requests[-1]
    texts = [c["parts"][0].get("text") for c in req.body["contents"] if c["role"] == "user"]
    assert texts == ["a cat", "give it a hat", "make the hat blue"]
    assert req.body["contents"][3] == gemini.issued[1]
    assert (r.version, r.parent_version) == (4, 2)
    view = await service.revert(session.id, "ana", 1)
    await edit(service, "a dog instead")
    texts = [c["parts"][0].get("text") for c in gemini.requests[-1].body["contents"]
             if c["role"] == "user"]
    assert texts == ["a cat", "a dog instead"]


async def test_reference_image_goes_in_the_user_turn_only(service, gemini):
    await edit(service, "a poster")
    ref = png_bytes((200, 10, 10))
    await edit(service, "put this logo top left", [Attachment(ref, "logo.png")])
    contents = gemini.requests[-1].body["contents"]
    last = contents[-1]
    assert last["role"] == "user" and last["parts"][0]["text"] == "put this logo top left"
    assert last["parts"][1]["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(last["parts"][1]["inlineData"]["data"]) == ref
    # No model turn carries an image we did not receive from the model.
    assert contents[1] == gemini.issued[0]
    # The reference stays in that user turn on the next request too.
    await edit(service, "make it bigger")
    assert gemini.requests[-1].body["contents"][2] == last


async def test_blocked_and_text_turns_are_never_replayed(service, gemini):
    await edit(service, "a castle")
    gemini.script.append(Behaviour.finish("IMAGE_SAFETY", "unsafe"))
    blocked = await edit(service, "something unsafe")
    assert blocked.status == "blocked" and blocked.version is None
    assert "safety" in blocked.message and "history" in blocked.message
    gemini.script.append(Behaviour.text_only("Which tower?"))
    words = await edit(service, "fix the tower")
    assert (words.status, words.text) == ("text", "Which tower?")
    ok = await edit(service, "add a flag on the left tower")
    assert (ok.version, ok.parent_version) == (2, 1)
    user_texts = [c["parts"][0]["text"] for c in gemini.requests[-1].body["contents"]
                  if c["role"] == "user"]
    assert user_texts == ["a castle", "add a flag on the left tower"]


async def test_failed_call_leaves_history_intact_and_retry_repeats_it(service, gemini):
    await edit(service, "a lighthouse")
    gemini.script += [Behaviour.raw(400, b'{"error": {"code": 400, "message": "bad", '
                                    b'"status": "INVALID_ARGUMENT"}}')]
    failed = await edit(service, "at night")
    assert failed.status == "failed" and failed.reason == "bad_request"
    session = await service.find_session(KEY)
    retry = await service.run_turn((await service.submit_retry(session.id, "ana")).id)
    assert (retry.status, retry.version, retry.parent_version) == ("ok", 2, 1)
    assert gemini.requests[-1].body["contents"][-1]["parts"][0]["text"] == "at night"


async def test_retry_makes_a_sibling_and_upscale_a_4k_child(service, gemini):
    await edit(service, "a lighthouse")
    await edit(service, "at night")
    session = await service.find_session(KEY)
    sib = await service.run_turn((await service.submit_retry(session.id, "bo")).id)
    assert (sib.version, sib.parent_version, sib.instruction) == (3, 1, "at night")
    assert len(gemini.requests[-1].body["contents"]) == 3
    big = await service.run_turn((await service.submit_upscale(session.id, "bo", 2)).id)
    assert (big.version, big.parent_version, big.image_size) == (4, 2, "4K")
    assert gemini.requests[-1].body["generationConfig"]["imageConfig"]["imageSize"] == "4K"
    assert big.instruction == "4K render of v2"  # what was asked, not the prompt written for the model
    # A 4K render of a 4K version would pay for the same picture again: refused, nothing recorded.
    sent = len(gemini.requests)
    with pytest.raises(OperationRefused, match="v4 is already 4K") as refused:
        await service.submit_upscale(session.id, "bo", 4)
    assert refused.value.code == "already_largest" and len(gemini.requests) == sent
    assert [v.version for v in (await service.history(session.id)).versions] == [1, 2, 3, 4]


async def test_approvals_are_permitted_recorded_and_withdrawn(store, blobs, gemini):
    engine = make_engine(gemini)
    service = EditService(store, blobs, engine, policy=AccessPolicy(approvers=frozenset({"dir"})))
    r = await edit(service, "a label")
    with pytest.raises(OperationRefused, match="approvers"):
        await service.approve(r.session_id, "intern")
    view = await service.approve(r.session_id, "dir")
    assert view.versions[0].approved_by == ["dir"]
    again = await service.approve(r.session_id, "dir", 1)
    assert "already approved" in again.notice
    view = await service.withdraw_approval(r.session_id, "dir")
    assert not view.versions[0].approved
    log = await store.audit_log(r.session_id)
    assert [(e["actor"], e["action"], e["outcome"]) for e in log] == [
        ("ana", "start", "ok"), ("ana", "edit", "ok"), ("intern", "approve", "refused"),
        ("dir", "approve", "ok"), ("dir", "withdraw", "ok"),
    ]
    await engine.aclose()


async def test_an_approver_role_lets_its_members_approve(store, blobs, gemini):
    engine = make_engine(gemini)
    policy = AccessPolicy(approver_roles=frozenset({"Art Director", "3000"}))
    service = EditService(store, blobs, engine, policy=policy)
    r = await edit(service, "a label")
    with pytest.raises(OperationRefused, match="approvers"):
        await service.approve(r.session_id, "502", roles=frozenset({"Moderator"}))
    with pytest.raises(OperationRefused, match="approvers"):
        await service.approve(r.session_id, "502")
    view = await service.approve(r.session_id, "501", roles=frozenset({"3000"}))
    assert view.versions[0].approved_by == ["501"]
    assert AccessPolicy().may_approve("anyone") and not policy.may_approve("anyone")
    await engine.aclose()


async def test_bad_input_is_refused_before_anything_is_sent(service, gemini, store):
    with pytest.raises(OperationRefused, match="does not take aspect ratio 7:3"):
        await service.submit_edit(KEY, "ana", "a tree", aspect="7:3")
    with pytest.raises(OperationRefused, match="does not take size 512"):
        await service.submit_edit(KEY, "ana", "a tree", model="pro", size="512")
    with pytest.raises(ImageRejected) as err:
        await service.submit_edit(KEY, "ana", "a tree", [Attachment(b"%PDF-1.4 ...", "x.png")])
    assert "PDF" in err.value.message
    with pytest.raises(OperationRefused, match="under 4000"):
        await service.submit_edit(KEY, "ana", "x" * 5000)
    assert gemini.requests == []
    assert await store.find_session(KEY) is None  # a refusal leaves no trace


async def test_replay_is_byte_identical_after_a_restart(data_dir: Path, gemini):
    async def open_service() -> tuple[SessionStore, EditService]:
        store = await SessionStore.open(data_dir / "threadedit.sqlite3")
        svc = EditService(store, BlobStore(data_dir / "blobs"), make_engine(gemini),
                          defaults=SessionDefaults(aspect_ratio="4:3"))
        return store, svc

    store, svc = await open_service()
    await edit(svc, "a red kite")
    await edit(svc, "add a long tail")
    await svc.engine.aclose()
    await store.close()

    store, svc = await open_service()  # a new process would see exactly this
    r = await edit(svc, "make the sky stormy")
    assert r.version == 3 and gemini.requests[-1].status == 200
    sent = gemini.requests[-1].body["contents"]
    for j in range(2):
        assert json.dumps(sent[2 * j + 1]) == json.dumps(gemini.issued[j])
    await svc.engine.aclose()
    await store.close()
