"""Reference images through the Files API (bot/gemini/files.py), against the fake Gemini server:
real HTTP to 127.0.0.1, real SQLite and a real blob store."""

from __future__ import annotations

import asyncio
import copy
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.engine import EngineError
from bot.gemini.client import GeminiEngine, classify
from bot.gemini.contents import build_request, user_content
from bot.gemini.files import (
    UPLOAD_PAUSE,
    FileUploadError,
    GeminiFiles,
    ReferenceFiles,
    UploadedFile,
    file_uris,
)
from bot.storage.blobs import BlobStore, pack_content, unpack_content
from bot.storage.repository import SessionStore
from bot.storage.uploads import UploadedFiles
from tests.conftest import API_KEY, make_engine
from tests.fakes import gemini_rules as rules
from tests.fakes.gemini_server import FakeGemini

MODEL = rules.FLASH31
Json = dict[str, Any]


async def _no_sleep(_: float) -> None:
    return None


def png(colour: str = "red", size: tuple[int, int] = (48, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def files(gemini: FakeGemini) -> AsyncIterator[GeminiFiles]:
    client = GeminiFiles(API_KEY, gemini.base_url, sleep=_no_sleep)
    yield client
    await client.aclose()


@pytest.fixture
async def engine(gemini: FakeGemini) -> AsyncIterator[GeminiEngine]:
    client = make_engine(gemini, timeout=10.0)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def refs(files: GeminiFiles, store: SessionStore, blobs: BlobStore, clock: Clock) -> ReferenceFiles:
    return ReferenceFiles(files, UploadedFiles(store), blobs, now=clock)


def packed_request(blobs: BlobStore, history: list[Json], text: str,
                   images: list[tuple[bytes, str]]) -> tuple[Json, list[Json]]:
    """(generateContent body with inline images, its contents packed as stored)."""
    contents = [*history, user_content(text, images)]
    body = build_request([], contents[-1], model=MODEL, aspect=None, size="1K")
    body["contents"] = contents
    return body, [pack_content(c, blobs) for c in contents]


def unpack(contents: list[Json], blobs: BlobStore) -> list[Json]:
    return [unpack_content(c, blobs) for c in contents]


def image_parts(content: Json) -> list[Json]:
    return [p for p in content["parts"] if "inlineData" in p or "fileData" in p]


# ---- upload once, reuse --------------------------------------------------------------------------
async def test_user_image_is_uploaded_once_and_sent_as_file_data(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore, engine: GeminiEngine
) -> None:
    image = png()
    body, packed = packed_request(blobs, [], "put a hat on it", [(image, "image/png")])
    before = copy.deepcopy(packed)
    first = await refs.swap_user_images(packed)
    second = await refs.swap_user_images(packed)
    assert packed == before  # the input is not changed
    assert gemini.uploads == 1 and first == second
    [stored] = gemini.files.values()
    assert (stored.data, stored.mime) == (image, "image/png")
    [part] = image_parts(first[0])
    assert part == {"fileData": {"mimeType": "image/png", "fileUri": gemini.base_url
                                 + f"/v1beta/files/{stored.id}"}}
    assert first[0]["parts"][0] == {"text": "put a hat on it"}  # order and neighbours kept
    assert file_uris(first) == [part["fileData"]["fileUri"]]

    result = await engine.generate(MODEL, {**body, "contents": unpack(first, blobs)})
    assert result["candidates"][0]["content"]["parts"]
    sent = gemini.requests[-1]
    assert sent.status == 200
    [user] = sent.body["contents"]
    assert [p for p in user["parts"] if "inlineData" in p] == []
    assert image_parts(user) == [part]
    assert image.hex()[:64] not in sent.raw.hex()  # the image bytes did not travel again


async def test_same_blob_twice_in_one_request_is_one_upload(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore
) -> None:
    image = png("green")
    _, packed = packed_request(blobs, [], "compare", [(image, "image/png"), (image, "image/png"),
                                                       (png("blue"), "image/png")])
    swapped = await refs.swap_user_images(packed)
    uris = [p["fileData"]["fileUri"] for p in image_parts(swapped[0])]
    assert gemini.uploads == 2 and uris[0] == uris[1] != uris[2]


async def test_requests_at_once_share_one_upload(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore
) -> None:
    _, packed = packed_request(blobs, [], "a hat", [(png("teal"), "image/png")])
    one, two = await asyncio.gather(refs.swap_user_images(packed), refs.swap_user_images(packed))
    assert gemini.uploads == 1 and one == two and file_uris(one)


# ---- model contents are replayed verbatim -------------------------------------------------------
async def test_model_images_stay_inline_and_verbatim(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore, engine: GeminiEngine
) -> None:
    image = png("purple")
    body1, _ = packed_request(blobs, [], "a cat", [(image, "image/png")])
    answer = await engine.generate(MODEL, body1)
    model = answer["candidates"][0]["content"]
    assert any("inlineData" in p for p in model["parts"])
    body2, packed = packed_request(blobs, [body1["contents"][0], model], "now blue",
                                   [(image, "image/png")])
    swapped = await refs.swap_user_images(packed)
    assert swapped[1] == packed[1]  # the model content: still inline (packed), signatures and all
    assert all(p["inlineData"]["data"].startswith("blob:") for p in image_parts(swapped[1]))
    assert gemini.uploads == 1  # only the user image; the same blob in both user turns
    assert image_parts(swapped[0]) == image_parts(swapped[2])
    assert "fileData" in image_parts(swapped[2])[0]

    result = await engine.generate(MODEL, {**body2, "contents": unpack(swapped, blobs)})
    assert result["candidates"]
    sent = gemini.requests[-1].body["contents"]
    assert sent[1] == model  # the fake accepted it as a verbatim replay of what it issued
    assert [list(p) for p in image_parts(sent[0])] == [["fileData"]]


async def test_snake_case_parts_are_swapped(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore
) -> None:
    key = blobs.put(png("orange"), "image/png")
    content = {"role": "user", "parts": [{"text": "x"},
                                         {"inline_data": {"mime_type": "image/png", "data": f"blob:{key}"}}]}
    [swapped] = await refs.swap_user_images([content])
    assert list(swapped["parts"][1]) == ["fileData"] and gemini.uploads == 1


# ---- expiry ------------------------------------------------------------------------------------
async def test_expired_cache_uploads_again_and_expired_uri_is_file_missing(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore, engine: GeminiEngine,
    store: SessionStore, clock: Clock,
) -> None:
    body, packed = packed_request(blobs, [], "a hat", [(png(), "image/png")])
    old = await refs.swap_user_images(packed)
    [old_uri] = file_uris(old)
    key = packed[0]["parts"][1]["inlineData"]["data"].removeprefix("blob:")
    cached = await UploadedFiles(store).get(key)
    assert cached is not None and cached.uri == old_uri

    clock.now = cached.expires_at - refs.margin - timedelta(seconds=1)  # still valid
    assert await refs.swap_user_images(packed) == old and gemini.uploads == 1
    clock.now = cached.expires_at - refs.margin  # inside the margin: upload again
    new = await refs.swap_user_images(packed)
    assert gemini.uploads == 2 and file_uris(new) != [old_uri]
    assert (await UploadedFiles(store).get(key)).uri == file_uris(new)[0]  # type: ignore[union-attr]

    gemini.expire_files(old_uri.rsplit("/", 1)[-1])
    with pytest.raises(EngineError) as err:
        await engine.generate(MODEL, {**body, "contents": unpack(old, blobs)})
    assert err.value.code == "file_missing" and err.value.status == 403
    assert "API key" not in err.value.message and "expired" in err.value.message
    assert [r.status for r in gemini.requests] == [403]  # not retried
    # The new file still works.
    assert (await engine.generate(MODEL, {**body, "contents": unpack(new, blobs)}))["candidates"]


async def test_forget_drops_the_cache_so_the_next_swap_uploads(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore
) -> None:
    _, packed = packed_request(blobs, [], "a hat", [(png(), "image/png"), (png("blue"), "image/png")])
    swapped = await refs.swap_user_images(packed)
    first, second = file_uris(swapped)
    await refs.forget([first])
    again = await refs.swap_user_images(packed)
    assert gemini.uploads == 3 and file_uris(again)[1] == second and file_uris(again)[0] != first


# ---- failures keep the image inline --------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 503])
async def test_failed_upload_keeps_the_image_inline(
    gemini: FakeGemini, refs: ReferenceFiles, blobs: BlobStore, engine: GeminiEngine,
    caplog: pytest.LogCaptureFixture, status: int, clock: Clock,
) -> None:
    gemini.files_api.fail_uploads = status
    body, packed = packed_request(blobs, [], "a hat", [(png(), "image/png"), (png(), "image/png")])
    with caplog.at_level(logging.WARNING, logger="bot.gemini.files"):
        swapped = await refs.swap_user_images(packed)
    assert swapped == packed and gemini.uploads == 0
    assert len(gemini.files_api.requests) == 1  # one attempt for the blob, not one per part
    assert f"HTTP {status}" in caplog.text and "stays inline" in caplog.text
    assert API_KEY not in caplog.text and "upload_id" not in caplog.text
    result = await engine.generate(MODEL, {**body, "contents": unpack(swapped, blobs)})
    assert result["candidates"] and "inlineData" in gemini.requests[-1].body["contents"][0]["parts"][1]

    gemini.files_api.fail_uploads = None
    # For a few minutes after a failure, turns do not wait on the Files API again.
    assert await refs.swap_user_images(packed) == packed and len(gemini.files_api.requests) == 1
    clock.now += UPLOAD_PAUSE + timedelta(seconds=1)  # nothing was cached: now it uploads
    assert file_uris(await refs.swap_user_images(packed)) and gemini.uploads == 1


async def test_unreachable_files_api_keeps_the_image_inline(
    store: SessionStore, blobs: BlobStore
) -> None:
    client = GeminiFiles(API_KEY, "http://127.0.0.1:9", sleep=_no_sleep)
    refs = ReferenceFiles(client, UploadedFiles(store), blobs)
    _, packed = packed_request(blobs, [], "a hat", [(png(), "image/png")])
    try:
        assert await refs.swap_user_images(packed) == packed
    finally:
        await client.aclose()


async def test_missing_blob_keeps_the_part(refs: ReferenceFiles, gemini: FakeGemini) -> None:
    content = {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png",
                                                        "data": "blob:" + "0" * 64 + ".png"}}]}
    assert await refs.swap_user_images([content]) == [content] and gemini.uploads == 0


# ---- GeminiFiles: the protocol, the key, processing ----------------------------------------------
async def test_key_only_in_the_header_of_every_files_request(
    gemini: FakeGemini, files: GeminiFiles, caplog: pytest.LogCaptureFixture
) -> None:
    gemini.files_api.processing_polls = 2
    with caplog.at_level(logging.DEBUG):
        uploaded = await files.upload(png(), "image/png", "ref-1")
    requests = gemini.files_api.requests
    assert [(r.method, r.path) for r in requests] == [
        ("POST", "/upload/v1beta/files"), ("POST", "/upload/v1beta/files"),
        *[("GET", f"/v1beta/{uploaded.name}")] * 3]  # PROCESSING, PROCESSING, ACTIVE
    for r in requests:
        assert r.headers["x-goog-api-key"] == API_KEY
        assert "key" not in r.query and API_KEY not in r.path + str(r.query)
    start, data = requests[0], requests[1]
    assert start.headers["x-goog-upload-protocol"] == "resumable"
    assert start.headers["x-goog-upload-command"] == "start"
    assert start.headers["x-goog-upload-header-content-length"] == str(len(png()))
    assert start.headers["x-goog-upload-header-content-type"] == "image/png"
    assert data.headers["x-goog-upload-command"] == "upload, finalize"
    assert data.headers["x-goog-upload-offset"] == "0" and data.size == len(png())
    assert "upload_id" in data.query
    assert API_KEY not in caplog.text
    stored = gemini.files[uploaded.name.removeprefix("files/")]
    assert stored.display_name == "ref-1" and stored.state == "ACTIVE"
    assert uploaded.expires_at == stored.expires  # from expirationTime
    assert uploaded.uri == f"{gemini.base_url}/v1beta/{uploaded.name}"
    assert uploaded.expires_at.tzinfo is not None and uploaded.mime == "image/png"


async def test_upload_errors_are_file_upload_errors(gemini: FakeGemini) -> None:
    wrong = GeminiFiles("wrong-key-77", gemini.base_url, sleep=_no_sleep)
    with pytest.raises(FileUploadError) as err:
        await wrong.upload(png(), "image/png", "x")
    await wrong.aclose()
    assert "HTTP 400" in str(err.value) and "wrong-key-77" not in str(err.value)

    slow = GeminiFiles(API_KEY, gemini.base_url, sleep=_no_sleep, max_polls=3)
    gemini.files_api.processing_polls = 10
    with pytest.raises(FileUploadError, match="PROCESSING after 3"):
        await slow.upload(png(), "image/png", "x")
    gemini.files_api.processing_polls, gemini.files_api.processing_result = 1, "FAILED"
    with pytest.raises(FileUploadError, match="is FAILED"):
        await slow.upload(png("blue"), "image/png", "x")
    gemini.files_api.processing_polls = 0
    with pytest.raises(FileUploadError, match="HTTP 400"):
        await slow.upload(png(), "image/gif", "x")  # the fake takes images it can use only
    await slow.aclose()


async def test_upload_url_on_another_host_gets_no_key(gemini: FakeGemini) -> None:
    async with FakeGemini(api_key=API_KEY) as other:
        gemini.files_api.base_url = other.base_url  # the start answer now points at `other`
        client = GeminiFiles(API_KEY, gemini.base_url, sleep=_no_sleep)
        with pytest.raises(FileUploadError, match="another host"):
            await client.upload(png(), "image/png", "x")
        await client.aclose()
        assert other.files_api.requests == [] and len(gemini.files_api.requests) == 1


# ---- the cache table ------------------------------------------------------------------------------
async def test_uploaded_files_table(store: SessionStore) -> None:
    table = UploadedFiles(store)
    expires = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    a = UploadedFile("files/a", "http://x/v1beta/files/a", "image/png", expires)
    assert await table.get("k1") is None
    await table.put("k1", a)
    await table.put("k2", UploadedFile("files/b", "http://x/v1beta/files/b", "image/jpeg", expires))
    assert await table.get("k1") == a
    b2 = UploadedFile("files/c", "http://x/v1beta/files/c", "image/png", expires + timedelta(days=1))
    await table.put("k1", b2)  # upsert
    assert await table.get("k1") == b2
    assert await table.forget_uris(["http://x/v1beta/files/c", "http://x/v1beta/files/zzz"]) == 1
    assert await table.get("k1") is None and await table.get("k2") is not None
    assert await table.forget_uris([]) == 0


# ---- countTokens and classify --------------------------------------------------------------------
async def test_count_tokens_sends_the_nested_form(
    gemini: FakeGemini, engine: GeminiEngine, refs: ReferenceFiles, blobs: BlobStore
) -> None:
    body1, _ = packed_request(blobs, [], "a cat on a sofa", [(png(), "image/png")])
    model = (await engine.generate(MODEL, body1))["candidates"][0]["content"]
    body, packed = packed_request(blobs, [body1["contents"][0], model], "now make it blue", [])
    expected = sum(rules.count_tokens(MODEL, body["contents"]))
    assert await engine.count_tokens(MODEL, body) == expected
    sent = gemini.count_requests[-1]
    assert sent.body == {"generateContentRequest": {"model": f"models/{MODEL}", **body}}
    assert sent.headers["x-goog-api-key"] == API_KEY and "key" not in sent.query
    assert len(gemini.requests) == 1  # counting is not generating

    swapped = {**body, "contents": unpack(await refs.swap_user_images(packed), blobs)}
    assert await engine.count_tokens(MODEL, swapped) == expected  # a file counts like inline
    gemini.expire_files()
    with pytest.raises(EngineError) as err:
        await engine.count_tokens(MODEL, swapped)
    assert err.value.code == "file_missing"


async def test_count_tokens_failures(gemini: FakeGemini) -> None:
    body = build_request([], user_content("x"), model=MODEL, aspect=None, size="1K")
    wrong = GeminiEngine("wrong-key", gemini.base_url, sleep=_no_sleep)
    with pytest.raises(EngineError) as err:
        await wrong.count_tokens(MODEL, body)
    await wrong.aclose()
    assert err.value.code == "auth" and "wrong-key" not in err.value.message
    retired = make_engine(gemini)
    with pytest.raises(EngineError) as err:
        await retired.count_tokens("gemini-3-pro-image-preview", body)
    assert err.value.code == "model_not_found" and len(gemini.count_requests) == 2
    await retired.aclose()
    down = GeminiEngine(API_KEY, "http://127.0.0.1:9", sleep=_no_sleep)
    with pytest.raises(EngineError) as err:
        await down.count_tokens(MODEL, body)
    await down.aclose()
    assert err.value.code == "network"


def _answer(status: int, message: str, state: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": status, "message": message, "status": state}})


@pytest.mark.parametrize(("response", "code"), [
    (_answer(403, rules.MSG_FILE_MISSING.format(id="abc123"), "PERMISSION_DENIED"), "file_missing"),
    (_answer(400, rules.MSG_FILE_NOT_ACTIVE.format(id="abc123"), "FAILED_PRECONDITION"), "file_missing"),
    (_answer(404, "File files/abc123 was not found.", "NOT_FOUND"), "file_missing"),
    (_answer(403, rules.MSG_NO_KEY, "PERMISSION_DENIED"), "auth"),
    (_answer(404, rules.MSG_NOT_FOUND.format(model=MODEL), "NOT_FOUND"), "model_not_found"),
])
def test_classify_missing_file_before_auth(response: httpx.Response, code: str) -> None:
    assert classify(MODEL, response).code == code

