"""Storage: migrations, the blob store, and byte-identical replay of stored model content."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from pathlib import Path

from PIL import Image

from bot.storage.blobs import (
    BLOB_PREFIX,
    BlobStore,
    EncodedBody,
    blob_keys,
    encode_unpacked,
    pack_content,
    unpack_content,
)
from bot.storage.engine import sqlite_url
from bot.storage.migrate import HEAD, upgrade
from bot.storage.repository import SessionStore


def _jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buf, "JPEG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def realistic_content() -> dict:
    """Shaped like a Gemini 3 image response: thoughts, an interim image, signed parts."""
    return {
        "parts": [
            {"text": "Planning the composition", "thought": True},
            {"inlineData": {"mimeType": "image/png", "data": _b64(_jpeg((1, 2, 3)))}, "thought": True},
            {"text": "Here is the sage green room.", "thoughtSignature": "Cq+/a1b2=="},
            {"inlineData": {"mimeType": "image/jpeg", "data": _b64(_jpeg((143, 175, 138)))},
             "thoughtSignature": "EjQK/+x9Zm9v"},
        ],
        "role": "model",
    }


async def test_the_store_is_migrated_once_and_private(data_dir: Path) -> None:
    store = await SessionStore.open(data_dir / "db.sqlite3")
    try:
        version, journal, keys = await store.read(lambda uow: _facts(uow.conn))
    finally:
        await store.close()
    assert version == HEAD and journal == "wal" and keys == 1
    assert await upgrade(sqlite_url(data_dir / "db.sqlite3")) == []  # nothing left to do
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


async def _facts(conn) -> tuple[str, str, int]:
    version = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalar_one()
    journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
    keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
    return version, journal, keys


def test_blob_store_is_content_addressed(blobs: BlobStore) -> None:
    data = _jpeg((10, 20, 30))
    key = blobs.put(data, "image/jpeg")
    assert key.endswith(".jpg") and len(key.split(".")[0]) == 64
    assert blobs.put(data, "image/jpeg") == key
    assert blobs.get(key) == data
    assert not list(blobs.root.rglob(".tmp-*"))


def test_packed_content_replays_to_identical_json(blobs: BlobStore) -> None:
    original = realistic_content()
    before = json.dumps(original)
    packed = pack_content(original, blobs)
    stored = json.loads(json.dumps(packed))  # as it goes through SQLite
    assert all(BLOB_PREFIX not in json.dumps(p) for p in original["parts"])
    assert len(blob_keys(stored)) == 2
    assert len(json.dumps(stored)) < len(before) / 2
    assert json.dumps(unpack_content(stored, blobs)) == before
    assert json.dumps(original) == before  # packing did not touch the original


def test_non_canonical_base64_is_kept_verbatim(blobs: BlobStore) -> None:
    data = _b64(_jpeg((5, 5, 5)))
    odd = data[:40] + "\n" + data[40:]  # valid to a lenient decoder, but not what we would write
    content = {"role": "model", "parts": [{"inlineData": {"mimeType": "image/jpeg", "data": odd},
                                           "thoughtSignature": "x"}]}
    packed = pack_content(content, blobs)
    assert packed["parts"][0]["inlineData"]["data"] == odd
    assert unpack_content(packed, blobs) == content


def test_encoding_from_the_blob_store_gives_the_bytes_of_the_unpacked_json(blobs: BlobStore) -> None:
    user = pack_content({"role": "user", "parts": [
        {"text": 'blob:' + "a" * 64 + '.jpg "quoted" ünïcode'},  # looks like a reference, is text
        {"inline_data": {"mime_type": "image/jpeg", "data": _b64(_jpeg((9, 9, 9)))}},
        {"inlineData": {"mimeType": "image/jpeg", "data": _b64(_jpeg((9, 9, 9)))}},  # same blob
        # Read in several pieces, the last one short: base64 pieces must join seamlessly.
        {"inlineData": {"mimeType": "image/png", "data": _b64(os.urandom(3 * EncodedBody.CHUNK + 7))}},
    ]}, blobs)
    model = json.loads(json.dumps(pack_content(realistic_content(), blobs)))
    body = {"contents": [user, model, {"role": "user", "parts": [{"text": "make it blue"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}}
    unpacked = {**body, "contents": [unpack_content(c, blobs) for c in body["contents"]]}
    expected = json.dumps(unpacked, separators=(",", ":")).encode()
    encoded = encode_unpacked(body, blobs)
    assert len(encoded) == len(expected)  # the Content-Length, known before reading
    assert encoded.read() == expected and encoded.read() == expected  # readable again (retries)
    assert json.loads(encoded.read())["contents"][1] == realistic_content()
    nested = encoded.wrapped(b'{"generateContentRequest":{"model":"models/m",', b"}")
    assert json.loads(nested.read()) == {"generateContentRequest": {"model": "models/m", **unpacked}}
    assert len(nested) == len(nested.read())
