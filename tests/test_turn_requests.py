"""Turns through the service with the Files API and countTokens on, against the fake Gemini:
a reference image is uploaded once and reused, uploaded again when it expired, sent inline
when Gemini says the file is gone; countTokens decides re-anchoring where the estimate is short."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from bot import catalog
from bot.context import ContextBudget
from bot.domain import SessionKey
from bot.gemini.files import GeminiFiles, ReferenceFiles
from bot.results import Attachment
from bot.service import EditService, SessionDefaults
from bot.storage.blobs import BlobStore
from bot.storage.repository import SessionStore
from bot.storage.uploads import UploadedFiles
from tests.conftest import API_KEY, make_engine
from tests.fakes.gemini_server import FakeGemini, RecordedRequest

KEY = SessionKey("discord", "G1", "C1", "thread-1")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def photo() -> Attachment:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(out, "PNG")
    return Attachment(out.getvalue(), "hat.png")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def with_files(store: SessionStore, blobs: BlobStore, gemini: FakeGemini,
                     clock: Clock) -> AsyncIterator[EditService]:
    engine = make_engine(gemini, timeout=5.0)
    uploader = GeminiFiles(API_KEY, gemini.base_url)
    files = ReferenceFiles(uploader, UploadedFiles(store), blobs, now=clock)
    yield EditService(store, blobs, engine, files=files,
                      defaults=SessionDefaults(model=catalog.FLASH, image_size="1K"))
    await uploader.aclose()
    await engine.aclose()


async def edit(service: EditService, text: str, refs: tuple[Attachment, ...] = ()) -> Any:
    turn = await service.submit_edit(KEY, "ana", text, refs)
    return await service.run_turn(turn.id)


def first_user_images(req: RecordedRequest) -> list[dict[str, Any]]:
    return [p for p in req.body["contents"][0]["parts"] if "text" not in p]


async def test_a_reference_is_uploaded_once_and_its_uri_reused_on_later_turns(
        with_files: EditService, gemini: FakeGemini) -> None:
    await edit(with_files, "put this hat on a cat", (photo(),))
    for text in ("make the cat grey", "add a window"):
        assert (await edit(with_files, text)).status == "ok"
    assert gemini.uploads == 1
    uris = {first_user_images(r)[0]["fileData"]["fileUri"] for r in gemini.requests}
    assert len(uris) == 1 and all(r.status == 200 for r in gemini.requests)
    # The model's own images are replayed inline, as received.
    last = gemini.requests[-1].body["contents"]
    assert last[1] == gemini.issued[0] and last[3] == gemini.issued[1]


async def test_an_expired_upload_is_uploaded_again_before_the_turn(
        with_files: EditService, gemini: FakeGemini, clock: Clock) -> None:
    await edit(with_files, "put this hat on a cat", (photo(),))
    clock.now += timedelta(hours=47, minutes=30)  # within the hour before the 48 h are up
    gemini.files_api.advance(timedelta(hours=47, minutes=30))
    result = await edit(with_files, "make the cat grey")
    assert result.status == "ok" and gemini.uploads == 2
    assert [r.status for r in gemini.requests] == [200, 200]


async def test_a_file_gemini_lost_is_sent_inline_and_uploaded_afresh_next_time(
        with_files: EditService, gemini: FakeGemini) -> None:
    await edit(with_files, "put this hat on a cat", (photo(),))
    gemini.expire_files()  # gone at Gemini while our cache still believes in it
    result = await edit(with_files, "make the cat grey")
    assert result.status == "ok" and result.version == 2
    refused, inline = gemini.requests[-2:]
    assert refused.status == 403 and "fileData" in first_user_images(refused)[0]
    assert inline.status == 200 and "inlineData" in first_user_images(inline)[0]
    await edit(with_files, "add a window")
    assert gemini.uploads == 2 and "fileData" in first_user_images(gemini.requests[-1])[0]


async def test_count_tokens_re_anchors_where_the_estimate_is_short(
        store: SessionStore, blobs: BlobStore, gemini: FakeGemini) -> None:
    # The real tokenizer counts 1,500 more per image than the docs say: the estimate of the
    # third turn (about 4,500) fits a budget of 8,000, the API's count (about 10,500) does not.
    gemini.extra_tokens_per_image = 1500
    engine = make_engine(gemini, timeout=5.0)
    service = EditService(store, blobs, engine, context=ContextBudget(8000, count_tokens=True),
                          defaults=SessionDefaults(model=catalog.FLASH, image_size="1K"))
    try:
        for text in ("a red barn", "make it blue", "add snow"):
            assert (await edit(service, text)).status == "ok"
    finally:
        await engine.aclose()
    third = gemini.requests[-1]
    assert third.body["contents"][0]["parts"][0]["text"].startswith("Earlier turns")
    # Counted only once the estimate passed half the budget: not for the first two turns.
    assert len(gemini.count_requests) == 1
    counted = gemini.count_requests[0].body["generateContentRequest"]
    assert counted["model"] == f"models/{catalog.FLASH}" and len(counted["contents"]) == 5


async def test_without_count_tokens_a_too_large_answer_still_recovers(
        store: SessionStore, blobs: BlobStore, gemini: FakeGemini) -> None:
    # The same short estimate, caught by the API's own limit instead: one re-anchor and retry.
    gemini.extra_tokens_per_image = 16_000  # 4 images: about 66,000, over the 65,536 of Pro
    engine = make_engine(gemini, timeout=5.0)
    service = EditService(store, blobs, engine,
                          defaults=SessionDefaults(model=catalog.PRO, image_size="1K"))
    try:
        for text in ("a red barn", "make it blue", "add snow"):
            assert (await edit(service, text)).status == "ok"
    finally:
        await engine.aclose()
    assert [r.status for r in gemini.requests] == [200, 200, 400, 200]
    assert gemini.requests[3].body["contents"][0]["parts"][0]["text"].startswith("Earlier turns")
