"""Content-addressed image bytes beside the database, and the blob references in stored JSON.

A stored model response keeps its exact JSON shape; only each canonical base64 `data` string,
and each `thoughtSignature` of SIGNATURE_MIN_CHARS or more, is swapped for `blob:<key>`. ':' is
not in the base64 alphabet, so a reference can never be mistaken for data. A string that is not
canonical base64 is kept as it came, so the rebuilt JSON is always identical to what was
received. Signatures go to the store because Gemini 3 signs each part with 0.6 to 2.9 MB of
them: kept in the row, every load of a session parsed megabytes per turn it ever had.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from bot.domain import OperationRefused

BLOB_PREFIX = "blob:"
SIGNATURE_KEYS = ("thoughtSignature", "thought_signature")
SIGNATURE_MIN_CHARS = 1024  # smaller ones cost less in the row than a file would
_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
        "image/heic": "heic", "image/heif": "heif"}


class BlobStoreError(OperationRefused):
    """The image store failed: the message is one sentence for the user, naming the store's
    host (never a credential). An OperationRefused, so a chat adapter shows it as it shows any
    refusal, and a turn ends FAILED with it, its history intact and retryable."""

    def __init__(self, message: str, code: str = "blob_store_unavailable") -> None:
        super().__init__(message, code)


class BlobStoreUnavailable(BlobStoreError):
    """The shared image store cannot be reached, or refuses this process's credentials.
    `fault` is the sentence's first clause alone ("The image store at HOST is unreachable")."""

    def __init__(self, message: str, fault: str) -> None:
        super().__init__(message)
        self.fault = fault


class BlobCorrupt(BlobStoreError):
    """Bytes read back from the shared image store do not hash to their key: refused."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "blob_corrupt")


def blob_key(data: bytes, mime: str) -> str:
    """The content address: sha256 and an extension naming the type."""
    return f"{hashlib.sha256(data).hexdigest()}.{_EXT.get(mime, 'bin')}"


def write_file(path: Path, data: bytes, *, durable: bool) -> None:
    """Write `path` whole or not at all (a temporary file renamed over it); `durable` fsyncs the
    file and its folder, for a store that is the only copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class BlobStore:
    """Blobs in a local folder (`<root>/ab/<sha256>.<ext>`), the only copy: written durably.
    bot/storage/s3.py's S3BlobStore keeps this interface with the bytes in S3 and this folder
    as its cache."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, data: bytes, mime: str) -> str:
        """Store bytes once; return the key (sha256 and an extension naming the type)."""
        key = blob_key(data, mime)
        path = self.local_file(key)
        if not path.exists():
            write_file(path, data, durable=True)
        return key

    def local_file(self, key: str) -> Path:
        """Where the key's bytes are, or would be, in the local folder (no I/O)."""
        if "/" in key or key.startswith("."):
            raise ValueError(f"not a blob key: {key!r}")
        return self.root / key[:2] / key

    def path(self, key: str) -> Path:
        """A local file holding the key's bytes. (For S3 this may download them first: from async
        code on a cold cache, prefer `await local_path(key)`.)"""
        return self.local_file(key)

    async def local_path(self, key: str) -> Path:
        """`path(key)` off the event loop."""
        return await asyncio.to_thread(self.path, key)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def b64(self, key: str) -> str:
        return base64.b64encode(self.get(key)).decode("ascii")

    async def check(self) -> None:
        """Raise BlobStoreUnavailable when the store cannot be used; a local folder was made
        when this object was."""


def _canonical_bytes(data: str) -> bytes | None:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == data else None


def inline_data(part: dict[str, Any]) -> dict[str, Any] | None:
    """A part's inline image object, under either spelling the API accepts."""
    inline = part.get("inlineData", part.get("inline_data"))
    return inline if isinstance(inline, dict) else None


def _is_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(BLOB_PREFIX)


def pack_content(content: dict[str, Any], blobs: BlobStore) -> dict[str, Any]:
    """A copy of a Gemini content object with image data and large signatures moved into the
    blob store."""
    out = dict(content)
    parts = []
    for part in content.get("parts") or []:
        parts.append(_pack_part(part, blobs) if isinstance(part, dict) else part)
    if "parts" in content:
        out["parts"] = parts
    return out


def _pack_part(part: dict[str, Any], blobs: BlobStore) -> dict[str, Any]:
    out = {}
    for key, value in part.items():
        if key in ("inlineData", "inline_data") and isinstance(value, dict):
            data = value.get("data")
            raw = _canonical_bytes(data) if isinstance(data, str) else None
            if raw is not None:
                mime = str(value.get("mimeType", value.get("mime_type", "")))
                value = {k: (BLOB_PREFIX + blobs.put(raw, mime) if k == "data" else v)
                         for k, v in value.items()}
        elif key in SIGNATURE_KEYS and isinstance(value, str) and len(value) >= SIGNATURE_MIN_CHARS:
            raw = _canonical_bytes(value)
            if raw is not None:
                value = BLOB_PREFIX + blobs.put(raw, "application/octet-stream")
        out[key] = value
    return out


def unpack_content(content: dict[str, Any], blobs: BlobStore) -> dict[str, Any]:
    """The exact content object that was packed, image data and signatures read back."""
    out = dict(content)
    if "parts" not in content:
        return out
    parts = []
    for part in content["parts"]:
        if not isinstance(part, dict):
            parts.append(part)
            continue
        new = {}
        for key, value in part.items():
            if key in ("inlineData", "inline_data") and isinstance(value, dict) and _is_ref(
                    value.get("data")):
                value = {k: (blobs.b64(v[len(BLOB_PREFIX):]) if k == "data" else v)
                         for k, v in value.items()}
            elif key in SIGNATURE_KEYS and _is_ref(value):
                value = blobs.b64(value[len(BLOB_PREFIX):])
            new[key] = value
        parts.append(new)
    out["parts"] = parts
    return out


def blob_keys(content: dict[str, Any]) -> list[str]:
    keys = []
    for part in content.get("parts") or []:
        inline = inline_data(part) if isinstance(part, dict) else None
        data = inline.get("data") if inline else None
        if isinstance(data, str) and data.startswith(BLOB_PREFIX):
            keys.append(data[len(BLOB_PREFIX):])
    return keys


def encode_unpacked(value: Any, blobs: BlobStore) -> EncodedBody:
    """The compact JSON of `value` with every blob reference read back: the bytes of
    `json.dumps(unpacked, separators=(",", ":")).encode()`, without building the unpacked copy.

    Blob references become a placeholder carrying a random nonce (no text a model or a user
    wrote can contain it) and the small JSON skeleton is dumped; each placeholder is replaced
    by its blob's base64 only as the body is read.
    """
    nonce = secrets.token_hex(16)
    keys: list[str] = []

    def mark(ref: str) -> str:
        keys.append(ref[len(BLOB_PREFIX):])
        return f"{nonce}{len(keys) - 1}"

    def swap(node: Any) -> Any:
        # Items in their order, so the markers appear in the skeleton in the order of `keys`.
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k in ("inlineData", "inline_data") and isinstance(v, dict) and _is_ref(v.get("data")):
                    out[k] = {ik: (mark(iv) if ik == "data" else iv) for ik, iv in v.items()}
                elif k in SIGNATURE_KEYS and _is_ref(v):
                    out[k] = mark(v)
                else:
                    out[k] = swap(v)
            return out
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    skeleton = json.dumps(swap(value), separators=(",", ":")).encode()
    spans: list[tuple[int, int, str]] = []
    pos = 0
    for i, key in enumerate(keys):
        marker = f"{nonce}{i}".encode()  # between its quotes, which stay
        at = skeleton.index(b'"' + marker + b'"', pos) + 1
        spans.append((at, at + len(marker), key))
        pos = at + len(marker)
    return EncodedBody(skeleton, spans, blobs)


class EncodedBody:
    """A JSON request body whose images and signatures are read from the blob store as it is
    sent, a chunk at a time: a 10 MB request waiting 30 s on the model holds kilobytes, not its
    images. It can be read any number of times (a retried request sends it again) and knows its
    length up front (an HTTP Content-Length)."""

    CHUNK = 3 * 64 * 1024  # raw bytes per base64 piece; a multiple of 3, so pieces concatenate

    def __init__(self, skeleton: bytes, spans: list[tuple[int, int, str]], blobs: BlobStore) -> None:
        self.skeleton = skeleton
        self.spans = spans
        self.blobs = blobs
        self._length = len(skeleton) + sum(
            4 * -(-blobs.path(key).stat().st_size // 3) - (end - start) for start, end, key in spans)

    def __len__(self) -> int:
        return self._length

    def wrapped(self, prefix: bytes, suffix: bytes) -> EncodedBody:
        """This object's members inside another: `prefix` replaces the opening brace."""
        shift = len(prefix) - 1
        return EncodedBody(prefix + self.skeleton[1:] + suffix,
                           [(a + shift, b + shift, key) for a, b, key in self.spans], self.blobs)

    def chunks(self) -> Iterator[bytes]:
        pos = 0
        for start, end, key in self.spans:
            yield self.skeleton[pos:start]
            with self.blobs.path(key).open("rb") as f:
                while piece := f.read(self.CHUNK):
                    yield base64.b64encode(piece)
            pos = end
        yield self.skeleton[pos:]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks():
            yield chunk

    def read(self) -> bytes:
        return b"".join(self.chunks())
